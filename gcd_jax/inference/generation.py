"""The one batched generator every driver uses.

``generate`` and ``outpaint`` run the compiled sampler of
``gcd_jax.diffusion.sampling`` over any number of prompts in batches of ``sample.batch_size``: each batch is
padded to whole batches per device, laid out over the ``data`` mesh of every device of every host,
and its results are gathered on every host (``multihost_utils.process_allgather``), so the same
code serves one CPU, eight fake devices and a multi-host pod. ``--mode sample|outpaint|evaluate``
and the training-time sample grids all come through here.

SR models (``model.sr``) are conditioned on a low-resolution pair ``lowres = (images [N, h, w, 3] in
[−1, 1], layouts int32 [N, h, w])``: base samples (the cascade), given files (the reference's "start
at unet 2") or held-out data resized down (``lowres_from_data``, as the training condition).
"""

import functools
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from gcd_jax import sharding
from gcd_jax.diffusion import joint, sampling
from gcd_jax.errors import InputError
from gcd_jax.inference.model import Model
from gcd_jax.interfaces import Guidance, Pair, Progress


# ------------------------------------------------------------------ batching
def _global(tree: Any, mesh: Mesh) -> Any:
    """Host arrays, identical on every host, as global arrays replicated over ``mesh``."""
    spec = NamedSharding(mesh, PartitionSpec())

    def put(x):
        x = np.asarray(x)
        return jax.make_array_from_callback(x.shape, spec, lambda index: x[index])

    return jax.tree.map(put, tree)


def _to_host(x: jax.Array | None, n: int) -> np.ndarray | None:
    """The first ``n`` rows of a (possibly multi-host sharded) result, on every host."""
    if x is None:
        return None
    if x.is_fully_addressable:
        return np.asarray(x)[:n]
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))[:n]


def _batched(
    num: int,
    batch_size: int,
    mesh: Mesh,
    run: Callable[[np.ndarray, int], tuple[jax.Array, jax.Array | None]],
    progress: Progress | None,
) -> Pair:
    """Calls ``run(rows, i)`` for batch ``i`` of the ``num`` items (``rows``: item indices, padded
    with the last one to a multiple of the mesh size) and concatenates the host results."""
    if num == 0:
        raise InputError("Nothing to generate: the prompt list is empty.")
    images, layouts = [], []
    for i, start in enumerate(range(0, num, batch_size)):
        rows = np.arange(start, min(start + batch_size, num))
        padded = np.concatenate([rows, np.full(-len(rows) % mesh.size, rows[-1])])
        x, y = run(padded, i)
        images.append(_to_host(x, len(rows)))
        layouts.append(_to_host(y, len(rows)))
        if progress is not None:
            progress(int(rows[-1]) + 1, num)
    return np.concatenate(images), None if layouts[0] is None else np.concatenate(layouts)


def log_progress(name: str) -> Progress:
    """A ``Progress`` that logs ``'{name}: sampled i / n pairs (s)'``."""
    t0 = time.perf_counter()

    def progress(done: int, total: int) -> None:
        elapsed = time.perf_counter() - t0
        logging.info("%s: sampled %d / %d pairs (%.0f s)", name, done, total, elapsed)

    return progress


def _condition(model: Model, prompts, rows, lowres, key, mesh) -> dict[str, jax.Array]:
    """The ``cond`` of one batch: text (and, for SR, the upsampled, noised low-res pair)."""
    cond = _global(jax.device_get(model.text_condition([prompts[r] for r in rows])), mesh)
    if model.sr:
        image, label = lowres
        size = tuple(model.config.data.image_size)
        label_rows = None if label is None else _global(label[rows], mesh)
        image_rows = _global(image[rows], mesh)
        cond.update(sampling.upsampled_condition(model.sampler, image_rows, label_rows, size, key))
    return cond


def _check_lowres(model: Model, lowres: Pair | None, num: int) -> None:
    if not model.sr:
        return
    if lowres is None:
        raise InputError(
            "An SR model (model.sr=True) samples from a low-resolution image and layout: give a "
            "base workdir (--base_workdir, the cascade) or --image and --layout files."
        )
    image, label = lowres
    want = tuple(model.config.model.lowres_size)
    if image.shape[1:3] != want or len(image) != num:
        raise InputError(f"low-res images {image.shape} do not match {num} x {want} (H, W).")
    if model.config.model.joint and (label is None or label.shape != image.shape[:3]):
        raise InputError(f"low-res layouts {np.shape(label)} do not match {image.shape[:3]}.")


def generate(
    model: Model,
    prompts: list[str],
    key: jax.Array,
    guidance_scale: Guidance | None = None,
    lowres: Pair | None = None,
    mesh: Mesh | None = None,
    progress: Progress | None = None,
) -> Pair:
    """One sampled pair per prompt, in batches of ``sample.batch_size``.

    Args:
      model: from ``load`` or ``from_state``.
      prompts: N captions ('' samples unconditionally, through the null text).
      key: batch ``i`` uses ``fold_in(key, i)`` (split into (SR condition, sampling)).
      guidance_scale: ``w`` or ``(w_image, w_layout)``; default from ``config.sample``
        (``sampling.config_guidance``).
      lowres: SR models only, the low-res pair per prompt (see the module docstring).
      mesh: default: every device of every host.
      progress: called after each batch.
    Returns:
      images float32 ``[N, H, W, 3]`` in [−1, 1] and layouts int32 ``[N, H, W]`` (None when the
      model is image-only), on every host.
    """
    mesh = sharding.make_mesh() if mesh is None else mesh
    _check_lowres(model, lowres, len(prompts))
    scale = (
        sampling.config_guidance(model.config.sample) if guidance_scale is None else guidance_scale
    )
    size = tuple(model.config.data.image_size)

    def run(rows, i):
        k_cond, k_sample = jax.random.split(jax.random.fold_in(key, i))
        cond = _condition(model, prompts, rows, lowres, k_cond, mesh)
        shape = (len(rows), *size)
        args = (cond, k_sample, shape, scale, mesh)
        return sampling.sample_pairs(model.sampler, model.nets.apply, model.params, *args)

    return _batched(len(prompts), model.config.sample.batch_size, mesh, run, progress)


def outpaint(
    model: Model,
    prompts: list[str],
    key: jax.Array,
    image: np.ndarray,
    image_mask: np.ndarray,
    label: np.ndarray | None,
    label_mask: np.ndarray | None,
    guidance_scale: Guidance | None = None,
    lowres: Pair | None = None,
    mesh: Mesh | None = None,
    progress: Progress | None = None,
) -> Pair:
    """Cross-modal outpainting (``sampling.outpaint``) of N examples, batched like ``generate``.

    Args:
      image, image_mask: ``[N, H, W, 3]`` in [−1, 1] and bool ``[N, H, W]`` (True = known).
      label, label_mask: int32 ``[N, H, W]`` and bool ``[N, H, W]``; None: layout unknown.
      Others as in ``generate``.
    """
    mesh = sharding.make_mesh() if mesh is None else mesh
    _check_lowres(model, lowres, len(prompts))
    scale = (
        sampling.config_guidance(model.config.sample) if guidance_scale is None else guidance_scale
    )
    if label is None and model.config.model.joint:
        label, label_mask = np.zeros(image.shape[:3], np.int32), np.zeros(image.shape[:3], bool)

    def run(rows, i):
        k_cond, k_sample = jax.random.split(jax.random.fold_in(key, i))
        cond = _condition(model, prompts, rows, lowres, k_cond, mesh)
        known = _global((image[rows], image_mask[rows]), mesh)
        known_label = (
            (None, None) if label is None else _global((label[rows], label_mask[rows]), mesh)
        )
        return sampling.outpaint(
            model.sampler,
            model.nets.apply,
            model.params,
            cond,
            k_sample,
            *known,
            *known_label,
            guidance_scale=scale,
            mesh=mesh,
        )

    return _batched(len(prompts), model.config.sample.batch_size, mesh, run, progress)


@functools.partial(jax.jit, static_argnames=("size", "method"))
def _downsize(image, label, size, method):
    return joint.resize_pair(image, label, size, method)


def lowres_from_data(
    config: ml_collections.ConfigDict, image: np.ndarray, label: np.ndarray | None
) -> Pair:
    """An SR model's low-res pairs from high-res data ``[N, H, W, 3]``/``[N, H, W]`` (or any size):
    resized to ``model.lowres_size`` as the training condition is (``diffusion.lowres_resize``
    for the image, nearest for the layout)."""
    size = tuple(config.model.lowres_size)
    method = joint.check_resize_method(config.diffusion.lowres_resize)
    label = label if config.model.joint else None
    x, y = _downsize(
        jnp.asarray(image, jnp.float32),
        None if label is None else jnp.asarray(label, jnp.int32),
        size,
        method,
    )
    return np.asarray(x), None if y is None else np.asarray(y)
