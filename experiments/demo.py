"""The embedded demo: procedurally generated 32x32 scenes, a learned word-level text encoder and a
tiny joint U-Net. Offline, trains on a 2-core CPU in minutes.

    python run.py --config experiments/demo.py --workdir /tmp/demo

The U-Net is base.py's ``tiny`` one (docs/design.md §4) with a small resampler.

Variants (the config argument, ``experiments/demo.py:VARIANT``; several comma-separated, e.g.
``experiments/demo.py:shapes,tiny``):

* ``shapes``: the 'demo_shapes' scenes, where the class is the shape and colours are drawn
  independently of it, so a region's class cannot be read off its colour (docs/claim.md).
* ``tiny``: a smoke run (big_vision's ``runlocal``) in seconds, the tests' demo config: 64
  scenes, a dim-16 U-Net, batch 8, 4 steps with a checkpoint every 2, 4 sampling steps.

    python run.py --config experiments/demo.py:tiny --workdir /tmp/demo_tiny
"""

import ml_collections

from experiments import base

VARIANTS = ("shapes", "tiny")  # Config arguments get_config accepts.


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    variant = base.variants("experiments/demo.py", arg, VARIANTS)
    c = base.get_config("tiny")
    c.data.name = "demo"
    c.data.image_size = (32, 32)
    c.data.num_classes = 8

    c.text.encoder = "words"
    c.text.max_length = 40  # the longest demo caption has 36 words
    c.text.embed_dim = 64
    # No transformer layers: each word's embedding (plus its position) is its token. With two
    # layers the trained encoder gave nearly the same output for "cyan bar" and "orange ring", and
    # the model drew a random class for a one-object prompt (docs/claim.md).
    c.text.depth = 0

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

    if "shapes" in variant:
        c.data.name = "demo_shapes"
        c.text.vocabulary = "demo_shapes"
        # Its claim table (docs/claim.md) was trained with the two-layer encoder; depth 0 did not
        # raise the image-only model's recall there (0.384 against 0.392 at 2 400 steps).
        c.text.depth = 2
    if "tiny" in variant:
        c.data.num_demo_examples = 64
        c.data.num_workers = 2
        c.model.dim = 16
        c.train.global_batch_size = 8  # one example per device on the tests' 8 fake CPU devices
        c.train.num_steps = 4
        c.train.log_every = 1
        c.train.ckpt_every = 2
        c.train.sample_every = 0
        c.sample.num_steps = 4
        c.sample.resample_steps = 2
        c.sample.batch_size = 8
    return c
