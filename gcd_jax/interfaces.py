"""The types every layer shares, and the one way to call a trained network.

One calling convention for the trained network, everywhere (training loss, sampler, outpainting,
the SR cascade, evaluation, analysis): ``apply(params, x_t, y_t, logsnr, cond) -> (eps_hat,
logits)``. ``apply`` is hashable (``gcd_jax.models.networks.Apply``, compared by the module's
settings), so it is a static argument of compiled loops and equal models share compiled programs;
``params`` is passed explicitly, an argument of the compiled program and never a constant baked
into it (google-research/vdm's convention).

- ``x_t``: float ``[B, H, W, 3]``; ``y_t``: int32 ``[B, H, W]`` or None (image-only model);
  ``logsnr``: float32 ``[B]``, the image log-SNR ``λ_img(t)`` (the network's time input).
- ``cond``: dict of batch-leading arrays, keys from ``COND_KEYS``: ``text`` ``[B, L, D]``,
  ``text_mask`` bool ``[B, L]``, optionally ``drop_text`` bool ``[B]`` (True: the learned null
  text; absent: all False) and, for an SR U-Net, ``lowres_image`` ``[B, H, W, 3]``,
  ``lowres_label`` int32 ``[B, H, W]`` (joint only) and ``lowres_logsnr`` ``[B]``.
- Returns float32 ``eps_hat`` ``[B, H, W, 3]`` and layout logits ``[B, H, W, K]`` (None when the
  model is image-only).

Classifier-free guidance is a sampling rule (``gcd_jax.diffusion.sampling.guided``), not part of
the network.
"""

from collections.abc import Callable
from typing import Any

import jax
import numpy as np

PyTree = Any

COND_KEYS = ("text", "text_mask", "drop_text", "lowres_image", "lowres_label", "lowres_logsnr")

# ``apply(params, x_t, y_t, logsnr, cond) -> (eps_hat, logits | None)``, see the module docstring.
ApplyFn = Callable[..., tuple[jax.Array, jax.Array | None]]

# An image–layout pair: images float32 ``[B, H, W, 3]`` in [−1, 1] and layouts int32 ``[B, H, W]``
# (None for an image-only model); device arrays inside compiled code, numpy arrays on the host.
Pair = tuple[jax.Array | np.ndarray, jax.Array | np.ndarray | None]

# Classifier-free guidance: ``w`` for both heads, or ``(w_image, w_layout)``.
Guidance = float | tuple[float, float] | jax.Array

# ``progress(done, total)``: called by batched generation after each batch.
Progress = Callable[[int, int], None]
