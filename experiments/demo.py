"""The embedded demo: procedurally generated 32x32 scenes, a learned word-level text encoder and a
tiny joint U-Net. Offline, trains on a 2-core CPU in minutes.

    python run.py --config experiments/demo.py --workdir /tmp/demo

Variants (the config argument, ``experiments/demo.py:VARIANT``):

* ``shapes``: the 'demo_shapes' scenes, where the class is the shape and colours are drawn
  independently of it, so a region's class cannot be read off its colour (docs/claim.md).
"""

import ml_collections

from experiments import base

VARIANTS = ("", "shapes")  # Config arguments get_config accepts.


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    variant = arg or ""
    if variant not in VARIANTS:
        raise ValueError(f"experiments/demo.py:{variant}: expected one of {VARIANTS[1:]} or none.")
    c = base.get_config()
    c.data.name = "demo"
    c.data.image_size = (32, 32)
    c.data.num_classes = 8

    c.text.encoder = "words"
    c.text.max_length = 40  # the longest demo caption has 36 words
    c.text.embed_dim = 64

    c.model.dim = 32
    c.model.dim_mults = (1, 2, 4)
    c.model.num_res_blocks = (1, 1, 1)
    c.model.attn_levels = (False, False, True)
    c.model.cross_attn_levels = (False, False, True)
    c.model.attn_heads = 2
    c.model.attn_dim_head = 32
    c.model.mid_cross_attn_heads = 2
    c.model.mid_cross_attn_dim_head = 32
    c.model.num_latents = 8
    c.model.resampler_max_len = 40

    c.optim.learning_rate = 1e-3
    c.optim.warmup_steps = 100
    c.optim.grad_clip = 1.0
    c.optim.ema_schedule = "warmup"
    c.optim.ema_decay = 0.999

    c.train.global_batch_size = 16
    c.train.num_steps = 3200  # ~19 min on 2 CPU cores (2.9 steps/s); see the README demo table
    c.train.log_every = 50
    c.train.ckpt_every = 800
    c.train.sample_every = 800
    c.sample.num_steps = 50
    # Recall/precision of the samples rise with guidance up to ~8 on this model (README table).
    c.sample.guidance_scale = 8.0

    if variant == "shapes":
        c.data.name = "demo_shapes"
        c.text.vocabulary = "demo_shapes"
    return c
