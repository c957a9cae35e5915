"""The embedded super-resolution cascade: demo scenes, a 16×16 base model and a 16×16 → 32×32 SR
model, both tiny, offline on a CPU.

    python run.py --config experiments/demo_sr.py:base --workdir /tmp/demo16     # base, 16×16
    python run.py --config experiments/demo_sr.py --workdir /tmp/demo_sr         # SR, 32×32
    python run.py --mode sample --config experiments/demo_sr.py --workdir /tmp/demo_sr \
        --base_workdir /tmp/demo16 --prompts "A large red square on the left."

The base stage is ``experiments/demo.py`` at 16×16 (the scenes resized down as the SR condition
is); the SR stage has the reference SR U-Net's shape (no self-attention, text cross-attention at the
last level only) at demo width.

The config argument names the stage, ``base`` or ``sr`` (the default), and may add demo.py's
``tiny`` smoke-run variant: ``experiments/demo_sr.py:base,tiny``, ``experiments/demo_sr.py:tiny``.
"""

import ml_collections

from experiments import base, demo


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    variant = base.variants("experiments/demo_sr.py", arg, ("base", "sr", "tiny"))
    if {"base", "sr"} <= variant:
        raise ValueError(f"experiments/demo_sr.py:{arg}: one stage, 'base' or 'sr', not both.")
    c = demo.get_config("tiny" if "tiny" in variant else None)
    if "base" in variant:
        c.data.image_size = (16, 16)
        return c
    c.data.image_size = (32, 32)
    c.model.sr = True
    c.model.lowres_size = (16, 16)
    c.model.attn_levels = (False, False, False)
    c.model.cross_attn_levels = (False, False, True)
    c.sample.guidance_scale = 1.0  # *ref* SR sampling without guidance
    return c
