"""MM CelebA-HQ super-resolution model *ref*: 128×128 → 256×256, K = 19, frozen T5-large text.

The SR U-Net has no self-attention and cross-attends to the text at the last level only.

    python run.py --config experiments/celeba_sr.py --workdir /path/to/workdir
"""

import ml_collections

from experiments import celeba


def get_config() -> ml_collections.ConfigDict:
    c = celeba.get_config()
    c.data.image_size = (256, 256)
    c.model.sr = True
    c.model.lowres_size = (128, 128)
    c.model.attn_levels = (False, False, False, False)
    c.model.cross_attn_levels = (False, False, False, True)
    return c
