"""Cityscapes base model *ref*: 128×256, K = 20 (19 train ids + unlabeled), frozen T5-large text.

python run.py --config experiments/cityscapes.py --workdir /path/to/workdir
"""

import ml_collections

from experiments import base


def get_config() -> ml_collections.ConfigDict:
    c = base.get_config()
    c.data.name = "cityscapes"
    c.data.image_size = (128, 256)
    c.data.num_classes = 20
    c.text.encoder = "t5"
    c.text.t5_name = "t5-large"
    return c
