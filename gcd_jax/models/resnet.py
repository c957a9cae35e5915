"""The residual block of the efficient U-Net (time-conditioned, optionally with text
cross-attention and a global-context gate)."""

import flax.linen as nn
import jax
import jax.numpy as jnp

from gcd_jax.models.attention import CrossAttention
from gcd_jax.models.layers import Dtype, GlobalContext, GroupNorm, conv, dense


class Block(nn.Module):
    """GroupNorm → (optional FiLM scale/shift) → SiLU → 3×3 conv: ``[B, H, W, C]`` →
    ``[B, H, W, dim_out]``."""

    dim_out: int
    groups: int
    dtype: Dtype

    @nn.compact
    def __call__(
        self, x: jax.Array, scale_shift: tuple[jax.Array, jax.Array] | None = None
    ) -> jax.Array:
        x = GroupNorm(self.groups, self.dtype, name="groupnorm")(x)
        if scale_shift is not None:
            scale, shift = scale_shift
            x = x * (scale + 1) + shift
        return conv(self.dim_out, 3, self.dtype, "project")(nn.silu(x))


class ResnetBlock(nn.Module):
    """Residual block: ``x`` ``[B, H, W, C]``, time hidden ``t`` ``[B, T]``, conditioning tokens
    ``context`` ``[B, M, D]`` (used only when ``cross_attn``) → ``[B, H, W, dim_out]``.

    The time hidden modulates the second convolution (scale and shift); text cross-attention sits
    between the two convolutions; a 1×1 convolution matches the residual's width when C differs.
    """

    dim_out: int
    groups: int
    cross_attn: bool
    use_gca: bool
    heads: int
    dim_head: int
    dtype: Dtype

    @nn.compact
    def __call__(self, x: jax.Array, t: jax.Array, context: jax.Array | None = None) -> jax.Array:
        time_emb = dense(2 * self.dim_out, self.dtype, "time_mlp")(nn.silu(t))
        scale, shift = jnp.split(time_emb[:, None, None, :], 2, axis=-1)

        h = Block(self.dim_out, self.groups, self.dtype, name="block1")(x)
        if self.cross_attn:
            b, hh, ww, c = h.shape
            attn = CrossAttention(self.heads, self.dim_head, self.dtype, name="cross_attn")
            h = attn(h.reshape(b, hh * ww, c), context).reshape(h.shape) + h
        h = Block(self.dim_out, self.groups, self.dtype, name="block2")(h, (scale, shift))
        if self.use_gca:
            h = h * GlobalContext(self.dim_out, self.dtype, name="gca")(h)
        if x.shape[-1] != self.dim_out:
            x = dense(self.dim_out, self.dtype, "res_conv")(x)
        return h + x
