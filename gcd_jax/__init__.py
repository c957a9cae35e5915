"""gcd_jax: the Gaussian-categorical diffusion process (GCDP) in JAX/Flax.

Importing the package loads only the pure-functional diffusion kernels (no TensorFlow, no model
weights): ``gcd_jax.diffusion.schedules``, ``gcd_jax.diffusion.gaussian`` and ``gcd_jax.diffusion.categorical``.
"""

from gcd_jax.diffusion import categorical, gaussian, schedules

__all__ = ["categorical", "gaussian", "schedules"]
