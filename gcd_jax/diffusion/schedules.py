"""Log-SNR noise schedules.

Time is continuous, ``t`` in ``[0, 1]``: ``t = 0`` is the data and ``t = 1`` is (almost) pure noise. A
schedule maps ``t`` to the log signal-to-noise ratio ``logsnr = λ(t) = log(α_t² / σ_t²)``, which is
strictly decreasing in ``t``. Everything downstream (Gaussian and categorical kernels) takes log-SNR
values, never step indices, so any schedule and any time grid can be used.
"""

import functools
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp

from gcd_jax.errors import ConfigError

Schedule = Callable[[jax.Array], jax.Array]


def linear_logsnr(t: jax.Array) -> jax.Array:
    """Imagen's 'linear' schedule (the reference setting): ``λ(t) = −log(expm1(1e-4 + 10 t²))``.

    Args:
      t: times in [0, 1], any shape.
    Returns:
      log-SNR, same shape: about 9.21 at t = 0 and −10.0 at t = 1.
    """
    t = jnp.asarray(t, jnp.float32)
    return -jnp.log(jnp.expm1(1e-4 + 10.0 * t**2))


def cosine_p_logsnr(t: jax.Array, p: float = 1.0, s: float = 0.008) -> jax.Array:
    """Cosine schedule with exponent ``p``: ``λ(t) = −log(cos((t+s)/(1+s)·π/2)^(−2p) − 1)``.

    The argument of the log is clamped at 1e-5, as in the reference, so ``λ(0)`` is finite.
    ``p = 1`` is the cosine schedule of Nichol & Dhariwal.
    """
    t = jnp.asarray(t, jnp.float32)
    # |cos|: in float32 cos(π/2) is −4e-8, and a negative base has no real fractional power.
    cos = jnp.abs(jnp.cos((t + s) / (1.0 + s) * (math.pi / 2)))
    return -jnp.log(jnp.maximum(cos ** (-2.0 * p) - 1.0, 1e-5))


def cosine_logsnr(t: jax.Array, s: float = 0.008) -> jax.Array:
    """Cosine schedule, ``cosine_p`` with ``p = 1``."""
    return cosine_p_logsnr(t, p=1.0, s=s)


SCHEDULES: dict[str, Callable[..., jax.Array]] = {
    "linear": linear_logsnr,
    "cosine": cosine_logsnr,
    "cosine_p": cosine_p_logsnr,
}


def get_schedule(name: str, **kwargs: float) -> Schedule:
    """Returns the schedule ``t -> logsnr`` called ``name`` with its keyword arguments bound.

    Args:
      name: one of ``SCHEDULES`` ('linear', 'cosine', 'cosine_p').
      **kwargs: schedule parameters, e.g. ``p`` for 'cosine_p'.
    Raises:
      ValueError: for an unknown name.
    """
    if name not in SCHEDULES:
        raise ConfigError(f"Unknown noise schedule {name!r}; expected one of {sorted(SCHEDULES)}.")
    return functools.partial(SCHEDULES[name], **kwargs)


def alpha_sigma(logsnr: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``(α, σ)`` with ``α² = sigmoid(λ)`` and ``σ² = sigmoid(−λ)``, so ``α² + σ² = 1``."""
    return jnp.sqrt(jax.nn.sigmoid(logsnr)), jnp.sqrt(jax.nn.sigmoid(-logsnr))


def right_broadcast(a: jax.Array, ndim: int) -> jax.Array:
    """Appends singleton axes to ``a`` so that it broadcasts against a rank-``ndim`` array.

    Per-example values ``[B]`` thereby broadcast against ``[B, H, W, C]``; a scalar stays a scalar.
    """
    a = jnp.asarray(a)
    return a.reshape(a.shape + (1,) * (ndim - a.ndim))
