"""Cityscapes super-resolution model *ref*: 128×256 → 256×512, K = 20, frozen T5-large text.

The SR U-Net has no self-attention and cross-attends to the text at the last level only.

    python run.py --config experiments/cityscapes_sr.py --workdir /path/to/workdir
"""

import ml_collections

from experiments import cityscapes


def get_config() -> ml_collections.ConfigDict:
    c = cityscapes.get_config()
    c.data.image_size = (256, 512)
    c.model.sr = True
    c.model.lowres_size = (128, 256)
    c.model.attn_levels = (False, False, False, False)
    c.model.cross_attn_levels = (False, False, False, True)
    return c
