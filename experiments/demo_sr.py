"""The embedded super-resolution cascade: demo scenes, a 16×16 base model and a 16×16 → 32×32 SR
model, both tiny, offline on a CPU.

    python run.py --config experiments/demo_sr.py:base --workdir /tmp/demo16     # base, 16×16
    python run.py --config experiments/demo_sr.py --workdir /tmp/demo_sr         # SR, 32×32
    python run.py --mode sample --config experiments/demo_sr.py --workdir /tmp/demo_sr \
        --base_workdir /tmp/demo16 --prompts "A large red square on the left."

The base stage is ``experiments/demo.py`` at 16×16 (the scenes resized down as the SR condition
is); the SR stage has the reference SR U-Net's shape (no self-attention, text cross-attention at the
last level only) at demo width.
"""

import ml_collections

from experiments import demo


def get_config(stage: str = "sr") -> ml_collections.ConfigDict:
    if stage not in ("base", "sr"):
        raise ValueError(f"experiments/demo_sr.py:{stage}: expected ':base' or ':sr'.")
    c = demo.get_config()
    if stage == "base":
        c.data.image_size = (16, 16)
        return c
    c.data.image_size = (32, 32)
    c.model.sr = True
    c.model.lowres_size = (16, 16)
    c.model.attn_levels = (False, False, False)
    c.model.cross_attn_levels = (False, False, True)
    c.sample.guidance_scale = 1.0  # *ref* SR sampling without guidance
    return c
