"""Building blocks of the efficient U-Net: norms, feed-forwards, resampling and embedding layers.

All feature maps are channels-last, ``[B, H, W, C]``. Modules take a compute ``dtype``; their
parameters are always float32 and normalisation statistics are computed in float32.
"""

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

Dtype = Any

# PyTorch's default Linear/Conv initialisation, U(±1/sqrt(fan_in)), so training starts from the same
# weight scale as the reference implementation.
torch_kernel_init = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


def gelu(x: jax.Array) -> jax.Array:
    """Exact (erf) GELU, as ``torch.nn.GELU()``."""
    return nn.gelu(x, approximate=False)


def dense(features: int, dtype: Dtype, name: str, use_bias: bool = True) -> nn.Dense:
    """A Dense layer (also used for 1×1 convolutions) with the reference initialisation."""
    return nn.Dense(
        features, use_bias=use_bias, dtype=dtype, kernel_init=torch_kernel_init, name=name
    )


def conv(features: int, kernel: int, dtype: Dtype, name: str, **kwargs: Any) -> nn.Conv:
    """A 'SAME'-padded square convolution with the reference initialisation."""
    return nn.Conv(
        features, (kernel, kernel), dtype=dtype, kernel_init=torch_kernel_init, name=name, **kwargs
    )


def gain_norm(dtype: Dtype, name: str) -> nn.LayerNorm:
    """Bias-free LayerNorm over the last axis (imagen's ``LayerNorm``: gain only).

    The reference uses eps 1e-5 in float32 and 1e-3 in half precision.
    """
    eps = 1e-5 if jnp.dtype(dtype) == jnp.float32 else 1e-3
    return nn.LayerNorm(epsilon=eps, use_bias=False, dtype=dtype, name=name)


def layer_norm(dtype: Dtype, name: str) -> nn.LayerNorm:
    """LayerNorm with gain and bias (``torch.nn.LayerNorm``)."""
    return nn.LayerNorm(epsilon=1e-5, dtype=dtype, name=name)


class GroupNorm(nn.Module):
    """GroupNorm over ``[B, H, W, C]``: float32 statistics, applied in the compute dtype."""

    num_groups: int
    dtype: Dtype
    epsilon: float = 1e-5

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        c = x.shape[-1]
        grouped = x.reshape(*x.shape[:-1], self.num_groups, c // self.num_groups)
        axes = (1, 2, 4)
        xf = grouped.astype(jnp.float32)
        # One pass over the map for both moments; the clamp guards the cancellation.
        mean = jnp.mean(xf, axes, keepdims=True)
        var = jnp.maximum(jnp.mean(jnp.square(xf), axes, keepdims=True) - jnp.square(mean), 0.0)
        inv = jax.lax.rsqrt(var + self.epsilon)
        y = ((grouped - mean.astype(self.dtype)) * inv.astype(self.dtype)).reshape(x.shape)
        scale = self.param("scale", nn.initializers.ones, (c,))
        bias = self.param("bias", nn.initializers.zeros, (c,))
        return y * scale.astype(self.dtype) + bias.astype(self.dtype)


class FeedForward(nn.Module):
    """Norm → Linear → GELU → Norm → Linear, bias-free (imagen's ``(Chan)FeedForward``).

    Acts on the last axis, so it serves both token sequences ``[B, N, C]`` and channels-last maps.
    """

    mult: float
    dtype: Dtype

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        dim = x.shape[-1]
        hidden = int(dim * self.mult)
        x = gain_norm(self.dtype, "norm_in")(x)
        x = gelu(dense(hidden, self.dtype, "proj_in", use_bias=False)(x))
        x = gain_norm(self.dtype, "norm_hidden")(x)
        return dense(dim, self.dtype, "proj_out", use_bias=False)(x)


class LearnedSinusoidalEmbedding(nn.Module):
    """``[B]`` scalar (log-SNR) → ``[B, 1 + dim]``: the scalar and sin/cos of learned frequencies."""

    dim: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        weights = self.param("weights", nn.initializers.normal(1.0), (self.dim // 2,))
        x = x.astype(jnp.float32)[:, None]
        freqs = x * weights[None, :] * (2.0 * math.pi)
        return jnp.concatenate([x, jnp.sin(freqs), jnp.cos(freqs)], axis=-1)


class CrossEmbed(nn.Module):
    """Stride-1 convolutions with several kernel sizes, concatenated along channels.

    Output widths halve with each larger kernel (dim/2, dim/4, ..., the rest to the largest).
    """

    dim_out: int
    kernel_sizes: tuple[int, ...]
    dtype: Dtype

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kernels = sorted(self.kernel_sizes)
        widths = [int(self.dim_out / 2**i) for i in range(1, len(kernels))]
        widths.append(self.dim_out - sum(widths))
        outs = [
            conv(w, k, self.dtype, f"conv_{k}")(x) for k, w in zip(kernels, widths, strict=True)
        ]
        return jnp.concatenate(outs, axis=-1)


class Downsample(nn.Module):
    """Pixel-unshuffle (space-to-depth by 2) followed by a 1×1 convolution: ``[B, H, W, C]`` →
    ``[B, H/2, W/2, dim_out]``.

    Both steps together are exactly one 2×2 convolution with stride 2, which runs without any
    transpose of the feature map.
    """

    dim_out: int
    dtype: Dtype

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        return conv(self.dim_out, 2, self.dtype, "conv", strides=2, padding="VALID")(x)


def _icnr_init(base_init: nn.initializers.Initializer) -> nn.initializers.Initializer:
    """Initialise the 4 sub-pixel outputs of each channel identically (ICNR), so that pixel-shuffle
    upsampling starts as a nearest-neighbour upsampling (no checkerboard)."""

    def init(key: jax.Array, shape: tuple[int, ...], dtype: Dtype = jnp.float32) -> jax.Array:
        fan_in, features = shape
        kernel = base_init(key, (fan_in, features // 4), dtype)
        return jnp.tile(kernel, (1, 4))

    return init


class PixelShuffleUpsample(nn.Module):
    """1×1 convolution to ``4 · dim_out`` channels, SiLU, depth-to-space by 2:
    ``[B, H, W, C]`` → ``[B, 2H, 2W, dim_out]``.

    The convolution's output channels are ordered (row offset, column offset, channel).
    """

    dim_out: int
    dtype: Dtype

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        b, h, w, _ = x.shape
        y = nn.Dense(
            4 * self.dim_out,
            dtype=self.dtype,
            kernel_init=_icnr_init(nn.initializers.he_uniform()),
            name="conv",
        )(x)
        y = nn.silu(y).reshape(b, h, w, 2, 2, self.dim_out)
        return y.transpose(0, 1, 3, 2, 4, 5).reshape(b, 2 * h, 2 * w, self.dim_out)


class GlobalContext(nn.Module):
    """Global-context gate (attention-pooled squeeze-excitation): ``[B, H, W, C]`` →
    ``[B, 1, 1, dim_out]`` in (0, 1)."""

    dim_out: int
    dtype: Dtype

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        b, h, w, c = x.shape
        tokens = x.reshape(b, h * w, c)
        logits = dense(1, self.dtype, "to_k")(tokens)[..., 0]  # [B, HW]
        weights = jax.nn.softmax(logits.astype(jnp.float32), axis=-1).astype(self.dtype)
        pooled = jnp.einsum("bn,bnc->bc", weights, tokens)
        hidden = max(3, self.dim_out // 2)
        gate = nn.silu(dense(hidden, self.dtype, "net_in")(pooled))
        gate = jax.nn.sigmoid(dense(self.dim_out, self.dtype, "net_out")(gate))
        return gate[:, None, None, :]
