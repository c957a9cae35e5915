"""Categorical (multinomial) diffusion kernels for the layout, in log space.

A layout is an integer map ``y ∈ {0..K−1}^{H×W}``, handled as log-probabilities with the class axis
last, ``[..., K]``. With keep-probability ``ᾱ_t = sigmoid(λ_t)`` (the Gaussian ``α_t²``):

    q(y_t | y_0) = Cat(ᾱ_t y_0 + (1 − ᾱ_t) / K)
    q(y_t | y_s) = Cat(ᾱ_{t|s} y_s + (1 − ᾱ_{t|s}) / K),   ᾱ_{t|s} = ᾱ_t / ᾱ_s,   s < t
    q(y_s | y_t, y_0) ∝ (ᾱ_{t|s} y_t + (1 − ᾱ_{t|s}) / K) ⊙ (ᾱ_s y_0 + (1 − ᾱ_s) / K)

Everything is computed in log space (``log ᾱ = log_sigmoid(λ)``, ``logaddexp``, ``log1mexp``), since
probabilities of 1e-30 are normal here. Log-SNR arguments are scalars or per-example ``[B]`` and are
right-broadcast against ``[B, H, W, K]``.
"""

import math

import jax
import jax.numpy as jnp

from gcd_jax.diffusion.schedules import right_broadcast

# log(1e-30): the log-probability a one-hot vector gives to the other classes. Finite, so that
# gradients through ``logaddexp`` stay finite, and negligible next to any probability that matters.
LOG_EPS = math.log(1e-30)


def log1mexp(x: jax.Array) -> jax.Array:
    """``log(1 − exp(x))`` for ``x ≤ 0``, accurate near 0 and for very negative ``x``."""
    return jnp.where(x > -math.log(2.0), jnp.log(-jnp.expm1(x)), jnp.log1p(-jnp.exp(x)))


def index_to_log_onehot(labels: jax.Array, num_classes: int) -> jax.Array:
    """Integer labels ``[...]`` -> log one-hot ``[..., K]`` (0 for the class, ``LOG_EPS`` elsewhere)."""
    onehot = jax.nn.one_hot(labels, num_classes, dtype=jnp.float32)
    return jnp.where(onehot > 0, 0.0, LOG_EPS)


def _log_mix(log_p: jax.Array, log_keep: jax.Array, log_1m_keep: jax.Array) -> jax.Array:
    """``log(keep · p + (1 − keep) / K)`` for log-probabilities ``log_p`` ``[..., K]``."""
    num_classes = log_p.shape[-1]
    return jnp.logaddexp(log_keep + log_p, log_1m_keep - math.log(num_classes))


def q_probs(log_y0: jax.Array, logsnr_t: jax.Array) -> jax.Array:
    """``log q(y_t | y_0)`` ``[..., K]``; ``log_y0`` may be one-hot or any log-distribution."""
    logsnr_t = right_broadcast(logsnr_t, log_y0.ndim)
    return _log_mix(log_y0, jax.nn.log_sigmoid(logsnr_t), jax.nn.log_sigmoid(-logsnr_t))


def q_posterior(
    log_y0: jax.Array, log_yt: jax.Array, logsnr_t: jax.Array, logsnr_s: jax.Array
) -> jax.Array:
    """``log q(y_s | y_t, y_0)`` ``[..., K]``, normalised over the K classes, for ``s < t``.

    Args:
      log_y0: log-probabilities of ``y_0`` ``[..., K]``: a log one-hot (training target) or a
        predicted log-distribution (x_0-parameterisation: ``log_softmax(logits)``), in which case the
        result is ``Σ_{y_0} p(y_0) q(y_s | y_0)`` composed with the transition, normalised.
      log_yt: log one-hot of the observed ``y_t`` ``[..., K]``.
      logsnr_t, logsnr_s: log-SNR at ``t`` and ``s`` (``λ_s > λ_t``), scalars or ``[B]``.
    """
    return posterior_given_marginal(q_probs(log_y0, logsnr_s), log_yt, logsnr_t, logsnr_s)


def posterior_given_marginal(
    log_ys: jax.Array, log_yt: jax.Array, logsnr_t: jax.Array, logsnr_s: jax.Array
) -> jax.Array:
    """``q_posterior`` given the marginal ``log q(y_s | y_0)`` ``[..., K]`` itself: normalised
    ``q(y_t | y_s) · q(y_s | y_0)``. The sampler's last step (``sample.final_step='reference'``)
    passes ``ŷ_0`` as the marginal at ``s = 0``, as the reference's tables hold it there."""
    logsnr_t = right_broadcast(logsnr_t, log_yt.ndim)
    logsnr_s = right_broadcast(logsnr_s, log_yt.ndim)
    log_keep_ts = jax.nn.log_sigmoid(logsnr_t) - jax.nn.log_sigmoid(logsnr_s)
    log_keep_ts = jnp.minimum(log_keep_ts, 0.0)  # ᾱ_{t|s} ≤ 1 up to rounding
    log_transition = _log_mix(log_yt, log_keep_ts, log1mexp(log_keep_ts))
    log_unnorm = log_transition + log_ys
    return log_unnorm - jax.nn.logsumexp(log_unnorm, axis=-1, keepdims=True)


def sample(key: jax.Array, log_probs: jax.Array) -> jax.Array:
    """Gumbel-max draw from ``Cat(exp(log_probs))``: ``[..., K]`` -> int32 labels ``[...]``.

    The noise is drawn for the flattened ``[N, K]`` array (so a draw equals that of its flattened
    input): XLA:CPU compiles high-rank random draws many times slower than low-rank ones.
    """
    flat = log_probs.reshape(-1, log_probs.shape[-1])
    gumbel = jax.random.gumbel(key, flat.shape, flat.dtype)
    labels = jnp.argmax(flat + gumbel, axis=-1).astype(jnp.int32)
    return labels.reshape(log_probs.shape[:-1])


def kl(log_p: jax.Array, log_q: jax.Array) -> jax.Array:
    """``KL(p ‖ q) = Σ_k p_k (log p_k − log q_k)`` over the last axis: ``[..., K]`` -> ``[...]``."""
    return jnp.sum(jnp.exp(log_p) * (log_p - log_q), axis=-1)


def _sum_except_batch(x: jax.Array) -> jax.Array:
    return jnp.sum(x.reshape(x.shape[0], -1), axis=-1)


def vb_loss(
    log_y0: jax.Array,
    log_yt: jax.Array,
    log_y0_pred: jax.Array,
    logsnr_t: jax.Array,
    logsnr_s: jax.Array,
    logsnr_1: jax.Array,
    is_first: jax.Array,
    num_timesteps: int,
) -> jax.Array:
    """Per-example variational-bound term of the layout on a grid of ``T`` steps (docs/design.md §3).

    For grid step ``i`` (``t = i/T``, ``s = (i−1)/T``), summed over pixels:
    ``T · KL(q(y_s|y_t, y_0) ‖ p(y_s|y_t))`` for ``i > 0``, the decoder NLL ``T · (−log p(y_0|y_t))``
    for ``i = 0`` (``is_first``), plus the prior ``KL(q(y_1|y_0) ‖ uniform)``; the total is divided by
    ``log(2)·K·H·W`` (the reference normalisation, in bits per one-hot entry). The model's reverse step
    is ``p(y_s|y_t) = q(y_s|y_t, ŷ_0)`` with ``ŷ_0 = exp(log_y0_pred)``.

    Args:
      log_y0: log one-hot of the data ``[B, H, W, K]``.
      log_yt: log one-hot of ``y_t ~ q(y_t|y_0)`` ``[B, H, W, K]``.
      log_y0_pred: predicted log-distribution of ``y_0`` ``[B, H, W, K]`` (``log_softmax(logits)``).
      logsnr_t, logsnr_s: ``[B]`` log-SNR at ``t`` and ``s``; ``logsnr_s`` must be finite even where
        ``is_first`` (that branch is discarded, but gradients flow through both).
      logsnr_1: log-SNR at ``t = 1`` (scalar), for the prior term.
      is_first: bool ``[B]``, ``i = 0``.
      num_timesteps: ``T``.
    Returns:
      ``[B]`` loss, ≥ 0.
    """
    _, height, width, num_classes = log_y0.shape
    log_true = q_posterior(log_y0, log_yt, logsnr_t, logsnr_s)
    log_model = q_posterior(log_y0_pred, log_yt, logsnr_t, logsnr_s)
    kl_t = _sum_except_batch(kl(log_true, log_model))  # [B]
    decoder_nll = -_sum_except_batch(jnp.sum(jnp.exp(log_y0) * log_y0_pred, axis=-1))  # [B]
    term = jnp.where(is_first, decoder_nll, kl_t) * num_timesteps
    log_uniform = jnp.full_like(log_y0, -math.log(num_classes))
    prior = _sum_except_batch(kl(q_probs(log_y0, logsnr_1), log_uniform))  # [B]
    return (term + prior) / (math.log(2.0) * num_classes * height * width)
