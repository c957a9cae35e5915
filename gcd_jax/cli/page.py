"""The local page's logic: the models behind it and one method per tab, turning page inputs
(numpy arrays, strings) into pictures and a status line. It knows nothing of gradio
(``gcd_jax.cli.serve`` wires it into a page), so the tests drive it directly.

Three tabs over a checkpoint (EMA parameters, ``inference.model.load``):
  * text -> image + layout: prompt, number of samples, steps, guidance, seed;
  * layout -> image: a painted or uploaded layout (``inference.files``); optional prompt;
  * image -> layout: an uploaded image (resized to the model's size); optional prompt.
The two last are ``generation.outpaint`` with one modality known. With an SR model the
cascade (``inference.cascade``) keeps the given modality known at both resolutions.
Bad input is a ``UserError`` whose message the page shows on its status line.
"""

import dataclasses
import time

import jax
import ml_collections
import numpy as np

from gcd_jax import sharding, viz
from gcd_jax.data import classes
from gcd_jax.errors import InputError
from gcd_jax.inference import cascade as cascade_lib
from gcd_jax.inference import files, generation
from gcd_jax.inference.model import Model, load
from gcd_jax.interfaces import Progress
from gcd_jax.training import checkpoint

DISPLAY = 256  # Page images are upscaled (nearest) by an integer factor to about this size.
MAX_SAMPLES = 16
EXAMPLE_PROMPT = "A large red square on the left."  # the t2i tab's hint, in the demo's words


# ------------------------------------------------------------------ pictures
def display_scale(size: tuple[int, int]) -> int:
    """The integer factor that shows a ``size`` (H, W) picture about ``DISPLAY`` pixels wide."""
    return max(1, DISPLAY // max(size))


def upscale(array: np.ndarray, scale: int) -> np.ndarray:
    """Nearest upscaling of ``[H, W, ...]`` by an integer factor."""
    return array.repeat(scale, 0).repeat(scale, 1)


def overlay(image: np.ndarray, coloured: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """uint8 blend ``(1 - alpha) * image + alpha * coloured`` of two uint8 ``[H, W, 3]``."""
    mixed = (1.0 - alpha) * image.astype(np.float32) + alpha * coloured.astype(np.float32)
    return np.clip(np.rint(mixed), 0, 255).astype(np.uint8)


# ------------------------------------------------------------------ the page's logic
@dataclasses.dataclass
class Result:
    """What a tab shows: pictures (uint8, upscaled for display) with captions, and a status."""

    pictures: list[tuple[np.ndarray, str]]
    status: str


class Page:
    """The models behind the page and one method per tab. ``sr``: the cascade's second stage."""

    def __init__(self, base: Model, sr: Model | None = None):
        if base.sr:
            raise InputError(
                "--config/--workdir must be a base model; give the SR model as --sr_workdir."
            )
        if sr is not None:
            cascade_lib.check_cascade(base.config, sr.config)
        self.base, self.sr = base, sr
        self.info = classes.dataset_info(base.config.data.name)
        self.mesh = sharding.make_mesh()
        self._compiled: set[tuple] = set()

    @classmethod
    def load(
        cls,
        config: ml_collections.ConfigDict,
        workdir: str,
        sr_workdir: str = "",
        step: int | None = None,
    ) -> "Page":
        """The base model at ``step`` (default: latest) and the SR model's latest checkpoint."""
        base = load(config, workdir, step)
        sr = load(checkpoint.read_config(sr_workdir), sr_workdir) if sr_workdir else None
        return cls(base, sr)

    @property
    def size(self) -> tuple[int, int]:
        return tuple(self.base.config.data.image_size)

    # -------------------------------------------------------------- helpers
    def compile_note(self, kind: str, num: int, steps: int, cascade: bool) -> str | None:
        """The status line to show while a call compiles (None when these settings ran before:
        the compiled sampler is reused)."""
        key = (kind, -(-num // self.mesh.size), int(steps), bool(cascade))
        if key in self._compiled:
            return None
        self._compiled.add(key)
        return (
            f"Compiling the sampler for {num} sample(s), {steps} steps"
            + (" and the SR stage" if cascade else "")
            + " (the first call with these settings; later calls reuse it)…"
        )

    def _pairs(self, model, images, layouts, captions) -> list[tuple[np.ndarray, str]]:
        """One picture per sample: the image and (joint models) its coloured layout beside it."""
        scale = display_scale(tuple(model.config.data.image_size))
        out = []
        for i, caption in enumerate(captions):
            tiles = [viz.image_to_uint8(images[i])]
            if layouts is not None:
                gap = np.full((tiles[0].shape[0], 2, 3), 255, np.uint8)
                tiles += [gap, viz.colorize(layouts[i], self.info.palette)]
            out.append((upscale(np.concatenate(tiles, 1), scale), caption))
        return out

    def _check_cascade(self, cascade: bool) -> None:
        if cascade and self.sr is None:
            raise InputError("No SR model is loaded (start the page with --sr_workdir).")

    def _seed_key(self, seed) -> jax.Array:
        return jax.random.key(int(seed))

    # -------------------------------------------------------------- tabs
    def text_to_image(
        self,
        prompt: str,
        num: int,
        steps: int,
        guidance: float,
        seed: int,
        cascade: bool = False,
        progress: Progress | None = None,
    ) -> Result:
        """``num`` pairs for ``prompt`` (seeds ``seed``'s batches), or the cascade's SR pairs."""
        prompt = (prompt or "").strip()
        if not prompt:
            raise InputError(f"Type a prompt first (e.g. '{EXAMPLE_PROMPT}').")
        if not 1 <= int(num) <= MAX_SAMPLES:
            raise InputError(f"Number of samples must be 1..{MAX_SAMPLES}, got {num}.")
        self._check_cascade(cascade)
        t0 = time.perf_counter()
        prompts, key = [prompt] * int(num), self._seed_key(seed)
        base = self.base.with_steps(steps)
        if cascade:
            model = self.sr.with_steps(steps)
            _, (images, layouts) = cascade_lib.cascade(
                base, model, prompts, key, None, guidance, guidance, self.mesh, progress
            )
        else:
            model = base
            images, layouts = generation.generate(
                base, prompts, key, guidance, mesh=self.mesh, progress=progress
            )
        captions = [f"{prompt} (sample {i + 1})" for i in range(int(num))]
        return Result(self._pairs(model, images, layouts, captions), self._done(model, num, t0))

    def layout_to_image(
        self,
        layout: np.ndarray,
        prompt: str,
        steps: int,
        guidance: float,
        seed: int,
        cascade: bool = False,
        progress: Progress | None = None,
    ) -> Result:
        """An image for the class-id layout ``[H, W]`` (the base model's size)."""
        self._check_layout(layout)
        self._check_cascade(cascade)
        t0 = time.perf_counter()
        label = np.asarray(layout, np.int32)[None]
        image = np.zeros((1, *self.size, 3), np.float32)
        x, y, model = self._outpaint(
            prompt, steps, guidance, seed, cascade, image, False, label, progress
        )
        scale = display_scale(tuple(model.config.data.image_size))
        pictures = [
            (upscale(viz.image_to_uint8(x[0]), scale), "image"),
            (upscale(viz.colorize(y[0], self.info.palette), scale), "layout"),
        ]
        return Result(pictures, self._done(model, 1, t0))

    def image_to_layout(
        self,
        image: np.ndarray,
        prompt: str,
        steps: int,
        guidance: float,
        seed: int,
        cascade: bool = False,
        progress: Progress | None = None,
    ) -> Result:
        """The layout of an uploaded uint8 image (resized to the model's size) and its overlay."""
        if image is None:
            raise InputError("Upload an image first.")
        self._check_cascade(cascade)
        t0 = time.perf_counter()
        model_size = tuple((self.sr or self.base).config.data.image_size) if cascade else self.size
        x_known = files.image_for_model(image, model_size)[None]
        x, y, model = self._outpaint(
            prompt, steps, guidance, seed, cascade, x_known, True, None, progress
        )
        shown = viz.image_to_uint8(x[0])
        coloured = viz.colorize(y[0], self.info.palette)
        scale = display_scale(tuple(model.config.data.image_size))
        pictures = [
            (upscale(coloured, scale), "layout"),
            (upscale(overlay(shown, coloured), scale), "layout over the image"),
        ]
        return Result(pictures, self._done(model, 1, t0))

    # -------------------------------------------------------------- internals
    def _check_layout(self, layout) -> None:
        if layout is None:
            raise InputError("Paint a layout or upload a label PNG first.")
        layout = np.asarray(layout)
        if layout.shape != self.size:
            raise InputError(f"The layout is {layout.shape}; the model needs {self.size} (H, W).")
        if layout.min() < 0 or layout.max() >= self.info.num_classes:
            raise InputError(f"Layout class ids must be in [0, {self.info.num_classes}).")

    def _outpaint(
        self, prompt, steps, guidance, seed, cascade_on, image, image_known, label, progress
    ):
        """Outpainting of one example with one modality known, by the base model or through the
        cascade; ``image`` and ``label`` are at the size of the model that returns the result."""
        prompts = [(prompt or "").strip()]
        scale = float(guidance) if prompts[0] else 0.0  # no prompt: the null text alone
        key = self._seed_key(seed)
        base = self.base.with_steps(steps)
        image_mask = np.full(image.shape[:3], image_known)
        label_mask = None if label is None else np.ones(label.shape, bool)
        if not cascade_on:
            known = (image, image_mask, label, label_mask)
            x, y = generation.outpaint(
                base, prompts, key, *known, scale, mesh=self.mesh, progress=progress
            )
            return x, y, base
        sr = self.sr.with_steps(steps)
        sr_size = tuple(sr.config.data.image_size)
        if label is not None:  # painted at the base size: the SR stage keeps it, upsampled
            label = cascade_lib.resize_nearest(label, sr_size)
            label_mask = cascade_lib.resize_nearest(label_mask, sr_size)
        if not image_known:
            image, image_mask = (
                np.zeros((1, *sr_size, 3), np.float32),
                np.zeros((1, *sr_size), bool),
            )
        known = cascade_lib.Known(image, image_mask, label, label_mask)
        _, (x, y) = cascade_lib.cascade(
            base, sr, prompts, key, known, scale, scale, self.mesh, progress
        )
        return x, y, sr

    def _done(self, model: Model, num: int, t0: float) -> str:
        return (
            f"Done: {int(num)} sample(s) at {tuple(model.config.data.image_size)} in "
            f"{time.perf_counter() - t0:.1f} s (checkpoint step {model.step}, "
            f"{model.config.sample.num_steps} steps)."
        )
