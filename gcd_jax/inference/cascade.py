"""The SR cascade: base samples -> SR samples, the one implementation the CLI, the page,
evaluation and the tests use.

Plain text-to-image runs ``generation.generate`` on the base model, then on the SR model with the
base pairs as its low-res condition. With ``known`` (cross-modal outpainting through the cascade:
a given layout, or a given image to segment) both stages run ``generation.outpaint``: ``known``
is given at the SR stage's size; the base stage gets it downsized as the SR model's training
condition is (``generation.lowres_from_data`` for the image, nearest for layouts and masks).
"""

import dataclasses
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging
from jax.sharding import Mesh

from gcd_jax.diffusion import joint
from gcd_jax.errors import ConfigError
from gcd_jax.inference import generation
from gcd_jax.inference.model import Model
from gcd_jax.interfaces import Guidance, Pair, Progress


def resize_nearest(a: np.ndarray | None, size: tuple[int, int]) -> np.ndarray | None:
    """A host array ``[N, h, w, ...]`` (layout, mask) resized to ``size`` by the reference's
    nearest rule (``joint.resize_nearest``); None stays None."""
    return None if a is None else np.asarray(joint.resize_nearest(jnp.asarray(a), size))


@dataclasses.dataclass(frozen=True)
class Known:
    """What is given of the output, at the SR stage's size ``(H, W)``: an image float32
    ``[N, H, W, 3]`` in [−1, 1] with its mask bool ``[N, H, W]`` (True = known), and a layout
    int32 ``[N, H, W]`` with its mask (None: the layout is unknown)."""

    image: np.ndarray
    image_mask: np.ndarray
    label: np.ndarray | None = None
    label_mask: np.ndarray | None = None

    def downsized(self, sr_config: ml_collections.ConfigDict) -> "Known":
        """The same, at the base stage's size (the SR model's ``model.lowres_size``)."""
        size = tuple(sr_config.model.lowres_size)
        image = generation.lowres_from_data(sr_config, self.image, None)[0]
        near = lambda a: resize_nearest(a, size)
        return Known(image, near(self.image_mask), near(self.label), near(self.label_mask))


def check_cascade(base: ml_collections.ConfigDict, sr: ml_collections.ConfigDict) -> None:
    """ConfigError naming the mismatch when a base model cannot feed an SR model."""
    if not sr.model.sr:
        raise ConfigError("The cascade's second stage must be an SR config (model.sr=True).")
    if base.model.sr:
        raise ConfigError("The base workdir holds an SR model (model.sr=True), not a base model.")
    problems = []
    if base.data.num_classes != sr.data.num_classes:
        problems.append(f"classes: base {base.data.num_classes}, SR {sr.data.num_classes}")
    if tuple(base.data.image_size) != tuple(sr.model.lowres_size):
        problems.append(
            f"size: base samples {tuple(base.data.image_size)}, SR model.lowres_size "
            f"{tuple(sr.model.lowres_size)}"
        )
    if base.model.joint != sr.model.joint:
        problems.append(f"joint: base {base.model.joint}, SR {sr.model.joint}")
    if problems:
        raise ConfigError("The base and SR models do not fit together: " + "; ".join(problems))


def cascade(
    base: Model,
    sr: Model,
    prompts: list[str],
    key: jax.Array,
    known: Known | None = None,
    base_guidance: Guidance | None = None,
    sr_guidance: Guidance | None = None,
    mesh: Mesh | None = None,
    progress: Progress | None = None,
) -> tuple[Pair, Pair]:
    """Base samples -> SR samples for each prompt; returns both stages' pairs (host arrays).

    Args:
      base, sr: the two stages (``check_cascade`` must pass).
      prompts: N captions.
      key: split into (base, SR).
      known: optional given image and/or layout at the SR size (see ``Known``).
      base_guidance, sr_guidance: each stage's guidance; None: its config's.
      mesh, progress: as in ``generation.generate``.
    """
    check_cascade(base.config, sr.config)
    k_base, k_sr = jax.random.split(key)
    common = dict(mesh=mesh, progress=progress)
    t0 = time.perf_counter()
    if known is None:
        low = generation.generate(base, prompts, k_base, base_guidance, **common)
        t1 = time.perf_counter()
        high = generation.generate(sr, prompts, k_sr, sr_guidance, lowres=low, **common)
    else:
        small = known.downsized(sr.config)
        low = generation.outpaint(
            base, prompts, k_base, *dataclasses.astuple(small), base_guidance, **common
        )
        t1 = time.perf_counter()
        high = generation.outpaint(
            sr, prompts, k_sr, *dataclasses.astuple(known), sr_guidance, lowres=low, **common
        )
    t2 = time.perf_counter()
    logging.info(
        "cascade: %d pairs, base stage %s in %.1f s, SR stage %s in %.1f s (compilation included)",
        len(prompts),
        low[0].shape[1:3],
        t1 - t0,
        high[0].shape[1:3],
        t2 - t1,
    )
    return low, high
