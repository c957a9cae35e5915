"""The ``model.scan_blocks`` layout of the joint U-Net: the identical residual blocks of a level run
as one ``nn.scan`` (``ScanStep``), their parameters stacked on a leading axis; ``stack_blocks`` and
``unstack_blocks`` convert parameter trees between that layout and the per-block one."""

import re

import flax.linen as nn
import jax
import jax.numpy as jnp

from gcd_jax.models.resnet import ResnetBlock


def rematerialised(module_class, remat: str):
    """``module_class``, wrapped in ``nn.remat`` with the policy ``remat`` names ('none': as is)."""
    if remat == "none":
        return module_class
    policy = None if remat == "blocks" else getattr(jax.checkpoint_policies, remat)
    return nn.remat(module_class, policy=policy)


class ScanStep(nn.Module):
    """One residual block of a scanned level: ``(x, [skip,] t) -> (x', ys)``; down blocks return
    their output as ``ys`` (a skip), up blocks first concatenate their skip, scaled by
    ``skip_scale``. ``block``: the ``ResnetBlock`` fields."""

    block: dict
    remat: str
    up: bool
    skip_scale: float

    @nn.compact
    def __call__(self, x: jax.Array, *args: jax.Array):
        block = rematerialised(ResnetBlock, self.remat)
        if self.up:
            skip, t = args
            x = jnp.concatenate([x, skip * self.skip_scale], -1)
        else:
            (t,) = args
        x = block(**self.block, name="block")(x, t)
        return x, (None if self.up else x)


_PER_BLOCK = re.compile(r"^(down|up)(\d+)_block(\d+)$")
_STACKED = re.compile(r"^(down|up)(\d+)_blocks$")


def stack_blocks(params: dict) -> dict:
    """A ``JointUNet`` parameter tree in the per-block layout (``down1_block0``, ...) → the
    ``scan_blocks`` layout: the blocks of each level with at least two stacked on a leading axis
    under ``down1_blocks/block``. Levels with one block keep ``down0_block0``."""
    out, groups = {}, {}
    for key, value in params.items():
        match = _PER_BLOCK.match(key)
        if match:
            groups.setdefault(f"{match[1]}{match[2]}", {})[int(match[3])] = value
        else:
            out[key] = value
    for prefix, blocks in groups.items():
        if sorted(blocks) != list(range(len(blocks))):
            raise ValueError(f"{prefix}: blocks {sorted(blocks)} are not 0..{len(blocks) - 1}")
        if len(blocks) == 1:
            out[f"{prefix}_block0"] = blocks[0]
        else:
            stacked = jax.tree.map(_stack, *(blocks[j] for j in sorted(blocks)))
            out[f"{prefix}_blocks"] = {"block": stacked}
    return out


def _stack(*leaves):
    if isinstance(leaves[0], jax.ShapeDtypeStruct):
        return jax.ShapeDtypeStruct((len(leaves), *leaves[0].shape), leaves[0].dtype)
    return jnp.stack(leaves)


def _take(leaf, j: int):
    if isinstance(leaf, jax.ShapeDtypeStruct):
        return jax.ShapeDtypeStruct(leaf.shape[1:], leaf.dtype)
    return leaf[j]


def unstack_blocks(params: dict) -> dict:
    """The inverse of ``stack_blocks`` (a tree already per-block is returned as is). Both take
    arrays or ``jax.ShapeDtypeStruct`` leaves."""
    out = {}
    for key, value in params.items():
        match = _STACKED.match(key)
        if not match:
            out[key] = value
            continue
        stacked = value["block"]
        n = jax.tree.leaves(stacked)[0].shape[0]
        for j in range(n):
            out[f"{match[1]}{match[2]}_block{j}"] = jax.tree.map(
                lambda a, j=j: _take(a, j), stacked
            )
    return out
