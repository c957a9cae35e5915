"""MM CelebA-HQ super-resolution model *ref*: 128×128 → 256×256, K = 19, frozen T5-large text.

Reproduces the reference's ``scripts/celeba/train_sr_128x128_256x256.sh``; the SR U-Net has no
self-attention and cross-attends to the text at the last level only. Sampling as ``test_sr.sh``:
from a base workdir (the cascade) or from a given image and layout.

    python run.py --config experiments/celeba_sr.py --workdir /path/to/sr_workdir \
        --config.data.manual_dir=/path/to/CelebAMask-HQ
"""

import ml_collections

from experiments import celeba


def get_config() -> ml_collections.ConfigDict:
    c = celeba.get_config()
    c.data.image_size = (256, 256)  # *ref* --model_type sr_128x128_256x256
    c.model.sr = True
    c.model.lowres_size = (128, 128)
    c.model.attn_levels = (False, False, False, False)
    c.model.cross_attn_levels = (False, False, False, True)
    # *ref* no --noise_schedules: cosine / cosine_p (inherited from celeba.py, train.py defaults).
    c.diffusion.lowres_noise_schedule = "linear"  # *ref* JointImagen lowres_noise_schedule
    c.diffusion.lowres_resize = "nearest"  # *ref* resize_image_to: F.interpolate nearest
    # *ref* per_sample_random_aug_noise_level=False: one draw per GPU's forward;
    # train_sr_128x128_256x256.yaml num_processes: 4, --batch_size 4: one per image.
    c.diffusion.lowres_aug_groups = 4
    c.diffusion.lowres_aug_t_max = 0.999  # *ref* --lowres_max_thres 0.999
    c.train.global_batch_size = 4  # *ref* --batch_size 4 (split over 4 GPUs: 1 each)
    # *ref* test_sr.sh --cond_scale 1.0; test.py --lowres_sample_noise_level 0.2.
    c.sample.guidance_scale = 1.0
    c.sample.lowres_aug_t = 0.2
    # test_sr.sh samples with --noise_schedules linear linear although the model trained with
    # cosine / cosine_p; gcd_jax samples with the training schedules (sample.noise_schedule='').
    return c
