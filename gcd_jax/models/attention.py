"""Attention layers of the efficient U-Net: self-attention, text cross-attention, the Perceiver
resampler and the transformer block.

Token sequences are ``[B, N, C]``; softmax runs in float32 whatever the compute dtype.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

from gcd_jax.models.layers import Dtype, FeedForward, dense, gain_norm, layer_norm


def _softmax(sim: jax.Array, dtype: Dtype) -> jax.Array:
    return jax.nn.softmax(sim.astype(jnp.float32), axis=-1).astype(dtype)


def _multi_head(q: jax.Array, k: jax.Array, v: jax.Array, dtype: Dtype) -> jax.Array:
    """Scaled-query multi-head attention: ``q`` ``[B, N, h, d]``, ``k``/``v`` ``[B, M, h, d]`` →
    ``[B, N, h·d]``."""
    b, n, h, d = q.shape
    attn = _softmax(jnp.einsum("bnhd,bmhd->bhnm", q, k), dtype)
    return jnp.einsum("bhnm,bmhd->bnhd", attn, v).reshape(b, n, h * d)


class Attention(nn.Module):
    """Multi-query self-attention (``heads`` query heads share one key/value head) with a learned
    null key/value, optionally also attending to conditioning tokens.

    ``x`` ``[B, N, C]``, ``context`` ``[B, M, context_dim]`` or None → ``[B, N, C]``.
    ``has_context`` fixes whether the context projection exists.
    """

    heads: int
    dim_head: int
    has_context: bool
    dtype: Dtype

    @nn.compact
    def __call__(self, x: jax.Array, context: jax.Array | None = None) -> jax.Array:
        b, n, dim = x.shape
        d = self.dim_head
        x = gain_norm(self.dtype, "norm")(x)
        # With a single key/value head the heads fold into the query axis: one plain batched
        # matmul [B, N·h, d] × [B, M, d], no head transposes.
        q = dense(self.heads * d, self.dtype, "to_q", use_bias=False)(x)
        q = q.reshape(b, n * self.heads, d) * (d**-0.5)
        k, v = jnp.split(dense(2 * d, self.dtype, "to_kv", use_bias=False)(x), 2, axis=-1)
        null_kv = self.param("null_kv", nn.initializers.normal(1.0), (2, d)).astype(self.dtype)
        ks = [jnp.broadcast_to(null_kv[0], (b, 1, d)), k]
        vs = [jnp.broadcast_to(null_kv[1], (b, 1, d)), v]
        if self.has_context:
            ctx = layer_norm(self.dtype, "context_norm")(context)
            ck, cv = jnp.split(dense(2 * d, self.dtype, "to_context")(ctx), 2, axis=-1)
            ks.insert(0, ck)
            vs.insert(0, cv)
        k = jnp.concatenate(ks, axis=1)
        v = jnp.concatenate(vs, axis=1)
        attn = _softmax(jnp.einsum("bqd,bkd->bqk", q, k), self.dtype)
        out = jnp.einsum("bqk,bkd->bqd", attn, v).reshape(b, n, self.heads * d)
        out = dense(dim, self.dtype, "to_out", use_bias=False)(out)
        return gain_norm(self.dtype, "out_norm")(out)


class CrossAttention(nn.Module):
    """Multi-head cross-attention from image tokens to conditioning tokens, with a learned null
    key/value shared by the heads.

    ``x`` ``[B, N, C]``, ``context`` ``[B, M, context_dim]`` → ``[B, N, C]``.
    """

    heads: int
    dim_head: int
    dtype: Dtype

    @nn.compact
    def __call__(self, x: jax.Array, context: jax.Array) -> jax.Array:
        b, n, dim = x.shape
        h, d = self.heads, self.dim_head
        x = gain_norm(self.dtype, "norm")(x)
        q = dense(h * d, self.dtype, "to_q", use_bias=False)(x).reshape(b, n, h, d) * (d**-0.5)
        kv = dense(2 * h * d, self.dtype, "to_kv", use_bias=False)(context)
        k, v = jnp.split(kv.reshape(b, -1, 2, h, d), 2, axis=2)
        null_kv = self.param("null_kv", nn.initializers.normal(1.0), (2, d)).astype(self.dtype)
        k = jnp.concatenate([jnp.broadcast_to(null_kv[0], (b, 1, h, d)), k[:, :, 0]], axis=1)
        v = jnp.concatenate([jnp.broadcast_to(null_kv[1], (b, 1, h, d)), v[:, :, 0]], axis=1)
        out = dense(dim, self.dtype, "to_out", use_bias=False)(_multi_head(q, k, v, self.dtype))
        return gain_norm(self.dtype, "out_norm")(out)


class TransformerBlock(nn.Module):
    """Self-attention (also attending to the conditioning tokens) and a feed-forward, both
    residual, on a channels-last map: ``[B, H, W, C]`` → ``[B, H, W, C]``."""

    heads: int
    dim_head: int
    ff_mult: float
    dtype: Dtype

    @nn.compact
    def __call__(self, x: jax.Array, context: jax.Array) -> jax.Array:
        b, h, w, c = x.shape
        tokens = x.reshape(b, h * w, c)
        attn = Attention(self.heads, self.dim_head, True, self.dtype, name="attn")
        tokens = attn(tokens, context) + tokens
        tokens = FeedForward(self.ff_mult, self.dtype, name="ff")(tokens) + tokens
        return tokens.reshape(b, h, w, c)


class PerceiverAttention(nn.Module):
    """Latents attend to the sequence and to themselves: ``x`` ``[B, N, C]``, ``latents``
    ``[B, M, C]`` → ``[B, M, C]``."""

    heads: int
    dim_head: int
    dtype: Dtype

    @nn.compact
    def __call__(self, x: jax.Array, latents: jax.Array) -> jax.Array:
        b, m, dim = latents.shape
        h, d = self.heads, self.dim_head
        x = layer_norm(self.dtype, "norm")(x)
        latents = layer_norm(self.dtype, "norm_latents")(latents)
        q = dense(h * d, self.dtype, "to_q", use_bias=False)(latents)
        q = q.reshape(b, m, h, d) * (d**-0.5)
        kv_input = jnp.concatenate([x, latents], axis=1)
        kv = dense(2 * h * d, self.dtype, "to_kv", use_bias=False)(kv_input)
        k, v = jnp.split(kv.reshape(b, -1, 2, h, d), 2, axis=2)
        out = _multi_head(q, k[:, :, 0], v[:, :, 0], self.dtype)
        out = dense(dim, self.dtype, "to_out", use_bias=False)(out)
        return layer_norm(self.dtype, "out_norm")(out)


class PerceiverResampler(nn.Module):
    """Resamples a token sequence ``[B, N, C]`` (N ≤ ``max_len``) to ``[B, P + num_latents, C]``
    tokens: P latents derived from the mean-pooled sequence, then the learned latents, refined by
    ``depth`` Perceiver attention + feed-forward layers."""

    depth: int
    heads: int
    dim_head: int
    num_latents: int
    num_mean_pooled: int
    max_len: int
    ff_mult: float
    dtype: Dtype

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        b, n, dim = x.shape
        pos_emb = self.param("pos_emb", nn.initializers.normal(1.0), (self.max_len, dim))
        x_with_pos = x + pos_emb[:n].astype(self.dtype)
        latents = self.param("latents", nn.initializers.normal(1.0), (self.num_latents, dim))
        latents = jnp.broadcast_to(latents.astype(self.dtype), (b, self.num_latents, dim))
        pooled = gain_norm(self.dtype, "mean_pooled_norm")(jnp.mean(x, axis=1))
        pooled = dense(dim * self.num_mean_pooled, self.dtype, "to_mean_pooled_latents")(pooled)
        latents = jnp.concatenate([pooled.reshape(b, self.num_mean_pooled, dim), latents], axis=1)
        for i in range(self.depth):
            attn = PerceiverAttention(self.heads, self.dim_head, self.dtype, name=f"attn_{i}")
            latents = attn(x_with_pos, latents) + latents
            latents = FeedForward(self.ff_mult, self.dtype, name=f"ff_{i}")(latents) + latents
        return latents
