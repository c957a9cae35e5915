"""The two configurations every side-by-side benchmark measures, for gcd_jax and the authors' code.

  tiny  experiments/base.py:tiny, docs/design.md §4's side-by-side config: dim 32, mults (1, 2, 4),
        one res block per level, self- and cross-attention at level 3 only, 2 heads of 32, K = 8,
        32×32, batch 8;
  base  the reference Cityscapes base U-Net (experiments/cityscapes.py), 128×256, batch 1.

Both take text as 256 tokens of width 1024 (frozen T5-large's shape). ``reference_case`` describes a
config in the terms of the fixture scripts (tests/fixtures/make_unet_fixture.py), which build the
authors' ``JointUnet`` from it.
"""

import importlib.util
import pathlib
import sys

import ml_collections

ROOT = pathlib.Path(__file__).resolve().parents[1]
TEXT_LEN, TEXT_DIM = 256, 1024


def tiny() -> ml_collections.ConfigDict:
    from experiments import base

    c = base.get_config("tiny")
    c.train.global_batch_size = 8
    return c


def base() -> ml_collections.ConfigDict:
    from experiments import cityscapes

    c = cityscapes.get_config()
    c.train.global_batch_size = 1
    return c


CONFIGS = {"tiny": tiny, "base": base}


def get(name: str) -> ml_collections.ConfigDict:
    """The named config (``cityscapes`` is accepted for ``base``), float32, batch set."""
    config = CONFIGS["base" if name == "cityscapes" else name]()
    config.model.dtype = "float32"
    return config


def precomputed_text(nets, key, batch_size: int):
    """``(nets, frozen)``: ``nets`` with a frozen text "encoder" whose output is one fixed array,
    text embeddings ``[batch_size, L, D]`` drawn from ``key`` once (its only parameter, returned
    as the train step's ``frozen`` argument): the step reads embeddings computed beforehand and
    runs no encoder, as the authors' step timed beside it is given ``text_embeds``."""
    import dataclasses

    import flax.linen as nn
    import jax

    text = nets.text
    shape = (batch_size, text.max_length, text.width)

    class Precomputed(nn.Module):
        @nn.compact
        def __call__(self, tokens, mask):
            return self.param("embeds", nn.initializers.zeros_init(), shape)

    params = {"embeds": jax.random.normal(key, shape)}
    text = dataclasses.replace(text, module=Precomputed(), frozen=True, load_params=lambda: params)
    nets = dataclasses.replace(nets, text=text)
    return nets, nets.load_frozen()


def reference_case(config: ml_collections.ConfigDict) -> dict:
    """The fixture scripts' case dict (model fields, K, text shape, image size) of ``config``."""
    m = config.model
    return dict(
        model=dict(
            dim=m.dim,
            dim_mults=tuple(m.dim_mults),
            num_res_blocks=tuple(m.num_res_blocks),
            attn_levels=tuple(m.attn_levels),
            cross_attn_levels=tuple(m.cross_attn_levels),
            attn_heads=m.attn_heads,
            attn_dim_head=m.attn_dim_head,
            num_groups=m.num_groups,
            num_latents=m.num_latents,
            ff_mult=m.ff_mult,
            cross_embed_kernels=tuple(m.cross_embed_kernels),
        ),
        num_classes=config.data.num_classes,
        max_text_len=TEXT_LEN,
        text_len=TEXT_LEN,
        text_dim=TEXT_DIM,
        image_size=tuple(config.data.image_size),
    )


def fixture_module(name: str):
    """A script of tests/fixtures (they import each other by name) as a module."""
    path = ROOT / "tests" / "fixtures" / f"{name}.py"
    sys.path.insert(0, str(path.parent))
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
