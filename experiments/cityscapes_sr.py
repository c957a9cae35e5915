"""Cityscapes super-resolution model *ref*: 128×256 → 256×512, K = 20, frozen T5-large text.

Reproduces the reference's ``scripts/cityscapes/train_sr_128x256_256x512.sh``; the SR U-Net has no
self-attention and cross-attends to the text at the last level only. Sampling as ``test_sr.sh``:
from a base workdir (the cascade) or from a given image and layout.

    python run.py --config experiments/cityscapes_sr.py --workdir /path/to/sr_workdir \
        --config.data.manual_dir=/path/to/cityscapes
"""

import ml_collections

from experiments import base, cityscapes


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """Variant ``tiny``: as ``experiments/cityscapes.py:tiny``, 16x32 -> 32x64."""
    variant = base.variants("experiments/cityscapes_sr.py", arg, ("tiny",))
    c = cityscapes.get_config()
    c.data.image_size = (256, 512)  # *ref* --model_type sr_128x256_256x512
    c.model.sr = True
    c.model.lowres_size = (128, 256)
    c.model.attn_levels = (False, False, False, False)
    c.model.cross_attn_levels = (False, False, False, True)
    # *ref* the script passes no --noise_schedules: train.py's defaults, cosine / cosine_p (p = 1).
    c.diffusion.noise_schedule = "cosine"
    c.diffusion.noise_schedule_lbl = "cosine_p"
    c.diffusion.cosine_p = 1.0
    c.diffusion.lowres_noise_schedule = "linear"  # *ref* JointImagen lowres_noise_schedule
    c.diffusion.lowres_resize = "nearest"  # *ref* resize_image_to: F.interpolate nearest
    # *ref* per_sample_random_aug_noise_level=False: one draw per GPU's forward;
    # train_sr_128x256_256x512.yaml num_processes: 2, --batch_size 8: 2 draws of 4 images each.
    c.diffusion.lowres_aug_groups = 2
    c.diffusion.lowres_aug_t_max = 0.999  # *ref* --lowres_max_thres 0.999
    # *ref* --augmentation_type=resizedCrop_1.0_1.2 (inherited); --batch_size 8 with accelerate
    # split_batches=True over train_sr_128x256_256x512.yaml's num_processes: 2 (4 images per GPU).
    c.train.global_batch_size = 8
    # *ref* test_sr.sh --cond_scale 1.0; test.py --lowres_sample_noise_level 0.2.
    c.sample.guidance_scale = 1.0
    c.sample.lowres_aug_t = 0.2
    # test_sr.sh samples with --noise_schedules linear linear although the model trained with
    # cosine / cosine_p; gcd_jax samples with the training schedules (sample.noise_schedule='',
    # reset from cityscapes.py's test_base.sh pair). Set sample.noise_schedule=linear and
    # sample.noise_schedule_lbl=linear to sample as it does.
    c.sample.noise_schedule = ""
    c.sample.noise_schedule_lbl = ""
    if "tiny" in variant:
        base.shrink(c, byte_text=True)
    return c
