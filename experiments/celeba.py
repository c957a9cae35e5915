"""MM CelebA-HQ base model *ref*: 128×128, K = 19 (incl. background), frozen T5-large text.

python run.py --config experiments/celeba.py --workdir /path/to/workdir
"""

import ml_collections

from experiments import base


def get_config() -> ml_collections.ConfigDict:
    c = base.get_config()
    c.data.name = "celeba"
    c.data.image_size = (128, 128)
    c.data.num_classes = 19
    c.text.encoder = "t5"
    c.text.t5_name = "t5-large"
    return c
