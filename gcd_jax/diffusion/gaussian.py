"""Gaussian diffusion kernels for the image, as pure functions of arrays and log-SNR values.

Forward process ``q(x_t | x_0) = N(α_t x_0, σ_t² I)`` with ``α_t² = sigmoid(λ_t)``, ``σ_t² =
sigmoid(−λ_t)``. Log-SNR arguments are scalars or per-example arrays ``[B]`` (they are right-broadcast
against ``[B, H, W, C]``). Times satisfy ``s < t``, i.e. ``λ_s > λ_t``.
"""

import jax
import jax.numpy as jnp

from gcd_jax.diffusion.schedules import alpha_sigma, right_broadcast


def q_sample(x0: jax.Array, logsnr_t: jax.Array, noise: jax.Array) -> jax.Array:
    """Draws ``x_t = α_t x_0 + σ_t ε``.

    Args:
      x0: clean images ``[B, H, W, C]`` in [−1, 1].
      logsnr_t: ``[B]`` or scalar.
      noise: standard normal ``[B, H, W, C]``.
    Returns:
      ``x_t`` ``[B, H, W, C]``.
    """
    alpha, sigma = alpha_sigma(right_broadcast(logsnr_t, x0.ndim))
    return alpha * x0 + sigma * noise


def q_posterior(
    x0: jax.Array, x_t: jax.Array, logsnr_t: jax.Array, logsnr_s: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """Mean and variance of ``q(x_s | x_t, x_0)`` for ``s < t``.

    With ``c = −expm1(λ_t − λ_s)`` (in (0, 1)): mean ``α_s (x_t (1 − c) / α_t + c x_0)``,
    variance ``σ_s² c``.

    Returns:
      ``(mean [B, H, W, C], variance)`` with the variance broadcastable to the mean (``[B, 1, 1, 1]``).
    """
    logsnr_t = right_broadcast(logsnr_t, x_t.ndim)
    logsnr_s = right_broadcast(logsnr_s, x_t.ndim)
    alpha_t, _ = alpha_sigma(logsnr_t)
    alpha_s, _ = alpha_sigma(logsnr_s)
    c = -jnp.expm1(logsnr_t - logsnr_s)
    mean = alpha_s * (x_t * (1.0 - c) / alpha_t + c * x0)
    variance = jax.nn.sigmoid(-logsnr_s) * c
    return mean, variance


def predict_x0(x_t: jax.Array, eps: jax.Array, logsnr_t: jax.Array) -> jax.Array:
    """``x̂_0 = (x_t − σ_t ε̂) / α_t`` from a predicted noise ``eps`` ``[B, H, W, C]``."""
    alpha, sigma = alpha_sigma(right_broadcast(logsnr_t, x_t.ndim))
    return (x_t - sigma * eps) / alpha


def dynamic_threshold(x0: jax.Array, p: float) -> jax.Array:
    """Imagen's dynamic thresholding of a predicted ``x̂_0`` ``[B, ...]``.

    Per example ``s = max(1, quantile(|x̂_0|, p))`` over all non-batch entries, then
    ``clip(x̂_0, −s, s) / s``: the output lies in [−1, 1] and is unchanged where ``|x̂_0| ≤ 1``
    everywhere.
    """
    flat = jnp.abs(x0).reshape(x0.shape[0], -1)
    s = jnp.maximum(jnp.quantile(flat, p, axis=-1), 1.0)
    s = right_broadcast(s, x0.ndim)
    return jnp.clip(x0, -s, s) / s
