"""Conditioning of the U-Net: log-SNR → time hidden and time tokens; text embeddings → resampled
text tokens and a pooled text hidden, with learned null text for classifier-free guidance."""

import flax.linen as nn
import jax
import jax.numpy as jnp

from gcd_jax.models.attention import PerceiverResampler
from gcd_jax.models.layers import Dtype, LearnedSinusoidalEmbedding, dense, layer_norm


class TimeConditioning(nn.Module):
    """Log-SNR ``[B]`` (float32) → time hidden ``[B, time_cond_dim]`` and ``num_tokens`` time
    tokens ``[B, num_tokens, cond_dim]`` (learned sinusoidal embedding → Linear → SiLU → heads)."""

    time_cond_dim: int
    cond_dim: int
    num_tokens: int
    sinu_dim: int
    dtype: Dtype

    @nn.compact
    def __call__(self, logsnr: jax.Array) -> tuple[jax.Array, jax.Array]:
        emb = LearnedSinusoidalEmbedding(self.sinu_dim, name="sinu_emb")(logsnr)
        hiddens = nn.silu(dense(self.time_cond_dim, self.dtype, "to_hiddens")(emb))
        tokens = dense(self.cond_dim * self.num_tokens, self.dtype, "to_tokens")(hiddens)
        tokens = tokens.reshape(-1, self.num_tokens, self.cond_dim)
        return dense(self.time_cond_dim, self.dtype, "to_cond")(hiddens), tokens


class TextConditioning(nn.Module):
    """Text ``[B, L, D]`` with mask ``[B, L]`` and per-example drop flags ``[B]`` → text tokens
    ``[B, num_mean_pooled + num_latents, cond_dim]`` and text hidden ``[B, time_cond_dim]``.

    The projected text is truncated or padded to ``max_len`` tokens. Padding, masked positions and
    every position of a dropped example take the learned null tokens; a dropped example's hidden is
    the learned null hidden. The resampler attends to all ``max_len`` positions, as in the
    reference.
    """

    cond_dim: int
    time_cond_dim: int
    max_len: int
    resampler_depth: int
    heads: int
    dim_head: int
    num_latents: int
    num_mean_pooled: int
    resampler_max_len: int
    resampler_ff_mult: float
    dtype: Dtype

    @nn.compact
    def __call__(
        self, text: jax.Array, text_mask: jax.Array, drop_text: jax.Array
    ) -> tuple[jax.Array, jax.Array]:
        tokens = dense(self.cond_dim, self.dtype, "text_to_cond")(text[:, : self.max_len])
        keep = text_mask[:, : self.max_len] & ~drop_text[:, None]
        pad = self.max_len - tokens.shape[1]
        tokens = jnp.pad(tokens, ((0, 0), (0, pad), (0, 0)))
        keep = jnp.pad(keep, ((0, 0), (0, pad)))
        null_tokens = self.param(
            "null_text_embed", nn.initializers.normal(1.0), (self.max_len, self.cond_dim)
        )
        tokens = jnp.where(keep[..., None], tokens, null_tokens.astype(self.dtype))
        tokens = PerceiverResampler(
            depth=self.resampler_depth,
            heads=self.heads,
            dim_head=self.dim_head,
            num_latents=self.num_latents,
            num_mean_pooled=self.num_mean_pooled,
            max_len=self.resampler_max_len,
            ff_mult=self.resampler_ff_mult,
            dtype=self.dtype,
            name="resampler",
        )(tokens)

        hidden = layer_norm(self.dtype, "hidden_norm")(jnp.mean(tokens, axis=1))
        hidden = nn.silu(dense(self.time_cond_dim, self.dtype, "hidden_in")(hidden))
        hidden = dense(self.time_cond_dim, self.dtype, "hidden_out")(hidden)
        null_hidden = self.param(
            "null_text_hidden", nn.initializers.normal(1.0), (self.time_cond_dim,)
        )
        hidden = jnp.where(drop_text[:, None], null_hidden.astype(self.dtype), hidden)
        return tokens, hidden
