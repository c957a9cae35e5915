"""Cityscapes base model *ref*: 128×256, K = 20 (19 train ids + unlabeled), frozen T5-large text.

Reproduces the reference's ``scripts/cityscapes/train_base_128x256.sh`` (github:pmh9960/GCDP @
f5f8049); sample as its ``test_base.sh`` does with ``--mode sample``.

    python run.py --config experiments/cityscapes.py --workdir /path/to/workdir \
        --config.data.manual_dir=/path/to/cityscapes

Variant ``tiny`` (``experiments/cityscapes.py:tiny``): the same recipe with a U-Net and text
encoder that compile in seconds on a CPU, at 16x32 (``base.shrink``): a smoke run, and the
device check's tiny size.
"""

import ml_collections

from experiments import base


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    variant = base.variants("experiments/cityscapes.py", arg, ("tiny",))
    c = base.get_config()
    c.data.name = "cityscapes"
    c.data.image_size = (128, 256)  # *ref* train_base_128x256.sh --model_type base_128x256
    c.data.num_classes = 20  # *ref* --num_classes 20 (train.py default)
    # *ref* datasets/cityscapes.py: images and labels resized nearest from the full-size files.
    # ('256x512' with data.resize='lanczos' reads 16x fewer pixels: faster, not the reference.)
    c.data.builder_config = "full"
    c.data.resize = "nearest"
    c.data.augment = "resized_crop"  # *ref* --augmentation_type=resizedCrop_1.0_1.2
    c.data.crop_scale = (1.0, 1.2)
    c.text.encoder = "t5"
    c.text.t5_name = "t5-large"  # *ref* train.py: t5-large, 256 tokens
    # *ref* train_base_128x256.sh: --noise_schedules linear linear --noise_schedules_lbl linear linear
    c.diffusion.noise_schedule = "linear"
    c.diffusion.noise_schedule_lbl = "linear"
    # *ref* --batch_size 8 with accelerate split_batches=True over 4 GPUs (trainer.py).
    c.train.global_batch_size = 8
    c.train.num_steps = 300_000  # *ref* --num_iters 300000
    c.optim.ema_schedule = "ema_pytorch"  # *ref* trainer.py: ema_pytorch.EMA with its defaults
    c.sample.guidance_scale = 3.0  # *ref* train.py sample grids cond_scale=3.; test.py default
    c.sample.num_steps = 100  # *ref* test.py --sample_timesteps 100
    # *ref* test_base.sh passes no --noise_schedules: test.py's defaults cosine / cosine_p
    # (--cosine_p_lbl 1.0), although the model trained linear / linear. '' samples with those.
    c.sample.noise_schedule = "cosine"
    c.sample.noise_schedule_lbl = "cosine_p"
    # bfloat16 compute on GPU/TPU, float32 on CPU; *ref* --fp16 (fp16 autocast, fp32 weights).
    c.model.dtype = "auto"
    if "tiny" in variant:
        base.shrink(c, byte_text=True)
    return c
