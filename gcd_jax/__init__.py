"""gcd_jax: the Gaussian-categorical diffusion process (GCDP) in JAX/Flax.

Importing the package loads only the pure-functional diffusion kernels (no TensorFlow, no model
weights): ``gcd_jax.schedules``, ``gcd_jax.gaussian`` and ``gcd_jax.categorical``.
"""

from gcd_jax import categorical, gaussian, schedules

__all__ = ["categorical", "gaussian", "schedules"]
