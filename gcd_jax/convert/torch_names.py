"""The correspondence between ``JointUNet`` parameters and the authors' PyTorch ``JointUnet``
state dict (github.com/pmh9960/GCDP, built on lucidrains' imagen-pytorch).

One table serves both directions: ``unet_table`` lists, for every leaf of a Flax parameter tree,
the PyTorch state-dict key (relative to the U-Net), the layout that relates the two arrays and
both shapes. ``from_torch`` turns a PyTorch array into the Flax one (checkpoint conversion,
``gcd_jax.convert.authors``); ``to_torch`` goes the other way (the test fixtures load Flax weights into the
reference model).

Layouts (Flax → PyTorch):

- ``same``: identical arrays (biases, embeddings, null keys/values, latents, gains of
  ``LayerNorm``/``GroupNorm``);
- ``lead1``: PyTorch adds a leading axis of 1 (the null text parameters);
- ``chan``: a gain ``[C]`` stored as ``[C, 1, 1]`` (channel LayerNorm of the transformer blocks'
  feed-forwards, which are 1×1 convolutions there);
- ``linear``: Dense ``[in, out]`` ↔ Linear ``[out, in]``;
- ``conv1x1``: Dense ``[in, out]`` ↔ 1×1 Conv2d ``[out, in, 1, 1]``;
- ``conv``: Conv ``[kh, kw, in, out]`` ↔ Conv2d ``[out, in, kh, kw]``;
- ``unshuffle``: our stride-2 2×2 Conv ``[2, 2, C, out]`` ↔ pixel-unshuffle (channels ordered
  ``(C, row, col)``) then a 1×1 Conv2d ``[out, 4C, 1, 1]``;
- ``shuffle`` / ``shuffle_bias``: the 1×1 convolution before pixel-shuffle, whose output channels
  are ordered ``(row, col, C)`` here and ``(C, row, col)`` in PyTorch: Dense ``[in, 4C]`` ↔
  ``[4C, in, 1, 1]``, bias ``[4C]`` ↔ ``[4C]``.
"""

import dataclasses
import math
import re
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np

PyTree = Any
Shape = tuple[int, ...]


@dataclasses.dataclass(frozen=True)
class Layout:
    """How one kind of parameter is stored on each side: ``torch_shape(flax_shape)`` and the two
    array maps (numpy in, numpy out)."""

    torch_shape: Callable[[Shape], Shape]
    to_torch: Callable[[np.ndarray], np.ndarray]
    from_torch: Callable[[np.ndarray, Shape], np.ndarray]


def _unshuffle_to_torch(k: np.ndarray) -> np.ndarray:
    _, _, c, out = k.shape  # [row, col, C, out] → [out, (C, row, col), 1, 1]
    return k.transpose(3, 2, 0, 1).reshape(out, 4 * c, 1, 1)


def _unshuffle_from_torch(w: np.ndarray, shape: Shape) -> np.ndarray:
    _, _, c, out = shape
    return w.reshape(out, c, 2, 2).transpose(2, 3, 1, 0)


def _shuffle_to_torch(k: np.ndarray) -> np.ndarray:
    fan_in, four_c = k.shape  # out channels (row, col, C) → (C, row, col)
    w = k.T.reshape(2, 2, four_c // 4, fan_in).transpose(2, 0, 1, 3)
    return w.reshape(four_c, fan_in, 1, 1)


def _shuffle_from_torch(w: np.ndarray, shape: Shape) -> np.ndarray:
    fan_in, four_c = shape
    k = w.reshape(four_c // 4, 2, 2, fan_in).transpose(1, 2, 0, 3)
    return k.reshape(four_c, fan_in).T


LAYOUTS: dict[str, Layout] = {
    "same": Layout(lambda s: s, lambda a: a, lambda a, s: a),
    "lead1": Layout(lambda s: (1, *s), lambda a: a[None], lambda a, s: a.reshape(s)),
    "chan": Layout(lambda s: (*s, 1, 1), lambda a: a[:, None, None], lambda a, s: a.reshape(s)),
    "linear": Layout(lambda s: s[::-1], lambda a: a.T, lambda a, s: a.T),
    "conv1x1": Layout(
        lambda s: (s[1], s[0], 1, 1), lambda a: a.T[:, :, None, None], lambda a, s: a[:, :, 0, 0].T
    ),
    "conv": Layout(
        lambda s: (s[3], s[2], s[0], s[1]),
        lambda a: a.transpose(3, 2, 0, 1),
        lambda a, s: a.transpose(2, 3, 1, 0),
    ),
    "unshuffle": Layout(
        lambda s: (s[3], 4 * s[2], 1, 1), _unshuffle_to_torch, _unshuffle_from_torch
    ),
    "shuffle": Layout(lambda s: (s[1], s[0], 1, 1), _shuffle_to_torch, _shuffle_from_torch),
    "shuffle_bias": Layout(
        lambda s: s,
        lambda b: b.reshape(2, 2, -1).transpose(2, 0, 1).reshape(-1),
        lambda b, s: b.reshape(-1, 2, 2).transpose(1, 2, 0).reshape(-1),
    ),
}


@dataclasses.dataclass(frozen=True)
class Entry:
    """One parameter: Flax ``path`` in the U-Net tree ↔ PyTorch ``name`` in the U-Net state dict."""

    path: tuple[str, ...]
    name: str
    layout: str
    flax_shape: Shape
    torch_shape: Shape


# ----------------------------------------------------------------------------- names

# Module names inside blocks: ours → PyTorch's (``Sequential`` indices where PyTorch has them).
_SUB = {
    "time_mlp": "time_mlp.1",
    "cross_attn": "cross_attn.fn",
    "net_in": "net.0",
    "net_out": "net.2",
    "to_out": "to_out.0",
    "out_norm": "to_out.1",
    "context_norm": "to_context.0",
    "to_context": "to_context.1",
    "norm_in": "0",
    "proj_in": "1",
    "norm_hidden": "3",
    "proj_out": "4",
}
_TOP = {
    "label_embed": "init_emb_seg.emb_layer",
    "lowres_label_embed": "init_emb_seg_lowres.emb_layer",
    "norm_cond": "norm_cond",
    "eps_head": "final_conv",
    "label_head": "final_conv_seg",
    "mid_attn": "mid_attn.fn.fn",
    "init_resnet_block": "init_resnet_block",
    "final_res_block": "final_res_block",
    "mid_block1": "mid_block1",
    "mid_block2": "mid_block2",
}
_TIME = {
    "sinu_emb": "time_hiddens.0",
    "to_hiddens": "time_hiddens.1",
    "to_cond": "time_cond.0",
    "to_tokens": "time_tokens.0",
}
_TEXT = {
    "text_to_cond": "text_to_cond",
    "hidden_norm": "to_text_non_attn_cond.0",
    "hidden_in": "to_text_non_attn_cond.1",
    "hidden_out": "to_text_non_attn_cond.3",
    "resampler": "attn_pool",
}
_RESAMPLER = {
    "mean_pooled_norm": "to_latents_from_mean_pooled_seq.0",
    "to_mean_pooled_latents": "to_latents_from_mean_pooled_seq.1",
}
# Slots of one level in PyTorch's ``downs``/``ups`` lists: (init block, res blocks, transformer,
# resampling); the transformer's attention and feed-forward sit at ``layers.0.{0.fn, 1}``.
_LEVEL_SLOTS = {"down": ("1", "2", "3.layers.0", "0.1"), "up": ("0", "1", "2.layers.0", "3.net.0")}
_LEVEL = re.compile(r"(down|up)(\d+)_(init_block|block\d+|attn|downsample|upsample)")


def _level_module(match: re.Match, rest: list[str], num_levels: int) -> list[str]:
    kind, level, part = match.group(1), int(match.group(2)), match.group(3)
    index = level if kind == "down" else num_levels - 1 - level  # PyTorch lists ups top-down
    init, blocks, attn, resample = _LEVEL_SLOTS[kind]
    if part == "init_block":
        return [f"{kind}s.{index}.{init}", *rest]
    if part.startswith("block"):
        return [f"{kind}s.{index}.{blocks}.{part[5:]}", *rest]
    if part == "attn":
        return [f"{kind}s.{index}.{attn}", {"attn": "0.fn", "ff": "1"}[rest[0]], *rest[1:]]
    return [f"{kind}s.{index}.{resample}"]  # down/up sampling: the module is the convolution


def _module_name(mods: list[str], num_levels: int, kernels: Sequence[int]) -> str:
    """Flax module path (without the leaf) → PyTorch module name ('' for the U-Net itself)."""
    top, rest = mods[0], mods[1:]
    if top in _TOP:
        parts = [_TOP[top], *rest]
    elif top == "init_conv":
        parts = [f"init_conv.convs.{sorted(kernels).index(int(rest[0].split('_')[1]))}"]
    elif top in ("time", "lowres_time"):
        parts = [("to_" if top == "time" else "to_lowres_") + _TIME[rest[0]]]
    elif top == "text":
        parts = _text_module(rest)
    elif match := _LEVEL.fullmatch(top):
        parts = _level_module(match, rest, num_levels)
    else:
        raise ValueError(f"No PyTorch name for Flax module {'/'.join(mods)}.")
    return ".".join(_SUB.get(p, p) for p in parts if p)


def _text_module(rest: list[str]) -> list[str]:
    if not rest:  # the null text parameters sit directly on the PyTorch U-Net
        return [""]
    if rest[0] != "resampler" or len(rest) == 1:
        return [_TEXT[rest[0]], *rest[1:]]
    inner = rest[1]
    if inner in _RESAMPLER:
        return ["attn_pool", _RESAMPLER[inner], *rest[2:]]
    layer, i = inner.split("_")  # attn_{i} / ff_{i}
    return [f"attn_pool.layers.{i}.{ {'attn': '0', 'ff': '1'}[layer] }", *rest[2:]]


def _leaf_name(leaf: str, siblings: set[str]) -> str:
    if leaf in ("kernel", "embedding"):
        return "weight"
    if leaf == "scale":  # imagen's gain-only LayerNorm names its gain 'g'
        return "weight" if "bias" in siblings else "g"
    if leaf == "pos_emb":  # an nn.Embedding in PyTorch
        return "pos_emb.weight"
    return leaf


def _layout(mods: list[str], leaf: str, ndim: int) -> str:
    module = mods[-1] if mods else ""
    top = mods[0] if mods else ""
    resample = top.endswith(("_downsample", "_upsample"))
    # The transformer blocks' feed-forward is a channels-first conv net in PyTorch.
    chan_ff = bool(_LEVEL.fullmatch(top)) and top.endswith("_attn") and mods[1] == "ff"
    if leaf == "kernel" and ndim == 4:
        return "unshuffle" if resample else "conv"
    if leaf == "kernel":
        if top.endswith("_upsample"):
            return "shuffle"
        conv1x1 = chan_ff or module in ("to_k", "net_in", "net_out", "res_conv") or resample
        return "conv1x1" if conv1x1 else "linear"
    if leaf == "bias" and top.endswith("_upsample"):
        return "shuffle_bias"
    if leaf == "scale" and chan_ff:
        return "chan"
    if leaf in ("null_text_embed", "null_text_hidden"):
        return "lead1"
    return "same"


def unet_table(shapes: PyTree, num_levels: int, cross_embed_kernels: Sequence[int]) -> list[Entry]:
    """Every leaf of the U-Net parameter tree ``shapes`` (arrays or ``ShapeDtypeStruct``s) with its
    PyTorch key, layout and shapes, in the tree's flattening order.

    ``num_levels`` is ``len(config.model.dim_mults)``; ``cross_embed_kernels`` is
    ``config.model.cross_embed_kernels``.
    """
    flat = [
        (tuple(k.key for k in path), leaf)
        for path, leaf in jax.tree_util.tree_flatten_with_path(shapes)[0]
    ]
    leaves_of: dict[tuple[str, ...], set[str]] = {}
    for path, _ in flat:
        leaves_of.setdefault(path[:-1], set()).add(path[-1])
    entries = []
    for path, leaf in flat:
        mods, name = list(path[:-1]), path[-1]
        module = _module_name(mods, num_levels, cross_embed_kernels) if mods else ""
        layout = _layout(mods, name, len(leaf.shape))
        torch_key = ".".join(p for p in (module, _leaf_name(name, leaves_of[path[:-1]])) if p)
        shape = tuple(leaf.shape)
        entries.append(Entry(path, torch_key, layout, shape, LAYOUTS[layout].torch_shape(shape)))
    names = [e.name for e in entries]
    if len(set(names)) != len(names):
        raise AssertionError("two Flax parameters map to one PyTorch key")
    return entries


def to_torch(entry: Entry, value: np.ndarray) -> np.ndarray:
    """The Flax array of ``entry`` (shape ``entry.flax_shape``) in PyTorch's layout."""
    return np.ascontiguousarray(LAYOUTS[entry.layout].to_torch(np.asarray(value)))


def from_torch(entry: Entry, value: np.ndarray) -> np.ndarray:
    """The PyTorch array of ``entry`` (shape ``entry.torch_shape``) in Flax's layout."""
    out = LAYOUTS[entry.layout].from_torch(np.asarray(value), entry.flax_shape)
    assert out.shape == entry.flax_shape, (entry.name, out.shape, entry.flax_shape)
    return np.ascontiguousarray(out)


def num_params(entries: Sequence[Entry]) -> int:
    return sum(math.prod(e.flax_shape) for e in entries)
