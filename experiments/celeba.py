"""MM CelebA-HQ base model *ref*: 128×128, K = 19 (incl. background), frozen T5-large text.

Reproduces the reference's ``scripts/celeba/train_base_128x128.sh`` (github:pmh9960/GCDP @
f5f8049); sample as its ``test_base.sh`` does with ``--mode sample``.

    python run.py --config experiments/celeba.py --workdir /path/to/workdir \
        --config.data.manual_dir=/path/to/CelebAMask-HQ
"""

import ml_collections

from experiments import base


def get_config() -> ml_collections.ConfigDict:
    c = base.get_config()
    c.data.name = "celeba"
    c.data.image_size = (128, 128)  # *ref* --model_type base_128x128
    c.data.num_classes = 19  # *ref* --num_classes 19
    # *ref* datasets/celeba.py: the 1024² image and its label resized nearest.
    c.data.builder_config = "full"
    c.data.resize = "nearest"
    c.data.augment = "flip"  # *ref* --augmentation_type flip
    c.text.encoder = "t5"
    c.text.t5_name = "t5-large"  # *ref* train.py: t5-large, 256 tokens
    # *ref* the script passes no --noise_schedules: train.py's defaults, cosine / cosine_p (p = 1).
    c.diffusion.noise_schedule = "cosine"
    c.diffusion.noise_schedule_lbl = "cosine_p"
    c.diffusion.cosine_p = 1.0
    # *ref* --batch_size 8 with accelerate split_batches=True over 4 GPUs (trainer.py).
    c.train.global_batch_size = 8
    c.train.num_steps = 300_000  # *ref* --num_iters 300000
    c.optim.ema_schedule = "ema_pytorch"  # *ref* trainer.py: ema_pytorch.EMA with its defaults
    c.sample.guidance_scale = 3.0  # *ref* test.py --cond_scale default 3.0
    c.sample.num_steps = 100  # *ref* test.py --sample_timesteps 100
    # bfloat16 compute on GPU/TPU, float32 on CPU; *ref* --fp16 (fp16 autocast, fp32 weights).
    c.model.dtype = "auto"
    return c
