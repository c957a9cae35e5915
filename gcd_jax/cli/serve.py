"""``--mode serve``: a local page to use a trained model (gradio, bound to 127.0.0.1, no share link).

    python run.py --mode serve --config experiments/demo.py --workdir /tmp/demo [--port 7860]
    python run.py --mode serve --config experiments/demo_sr.py:base --workdir /tmp/demo16 \\
        --sr_workdir /tmp/demo_sr                       # adds a toggle that runs the SR cascade

Three tabs over the latest checkpoint (EMA parameters, ``generation.load``):
  * text -> image + layout: prompt, number of samples, steps, guidance, seed;
  * layout -> image: paint a layout with the dataset's palette (a brush per class) or upload a
    label PNG (class ids, or colours of the palette); optional prompt;
  * image -> layout: upload an image (resized to the model's size); optional prompt.
The two last are ``generation.outpaint`` with one modality known. With an SR workdir the cascade
keeps the given modality known at both resolutions.

``Page`` holds the models and turns page inputs (numpy arrays, strings) into page outputs; it
knows nothing of gradio, so the tests drive it directly. ``build`` wires it into gradio Blocks.
Bad input (empty prompt, a layout of the wrong size or with colours outside the palette, an
unreadable file) is a ``UserError`` whose message the page shows on its status line.
"""

import dataclasses
import html
import os
import time
from collections.abc import Callable, Iterator

import jax
import ml_collections
import numpy as np
from absl import logging
from PIL import Image

from gcd_jax import sharding, viz
from gcd_jax.data import classes
from gcd_jax.errors import InputError, UserError
from gcd_jax.inference import generation
from gcd_jax.training import checkpoint

DISPLAY = 256  # Page images are upscaled (nearest) by an integer factor to about this size.
COLOUR_TOLERANCE = 60.0  # RGB distance within which a painted pixel takes a palette colour.
MAX_UNKNOWN = 0.05  # Largest fraction of pixels whose colour is in no palette entry.
MAX_SAMPLES = 16
# The prompt the page suggests; in the demo's vocabulary (tests/test_example_prompts.py).
EXAMPLE_PROMPT = "A large red square on the left."
ERROR_PREFIX = "⚠️ "  # Status lines of bad input start with this (the browser test looks for it).


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


def legend_html(info: classes.DatasetInfo) -> str:
    """The classes and their layout colours, as HTML swatches."""
    items = []
    for k, (name, (r, g, b)) in enumerate(zip(info.class_names, info.palette, strict=True)):
        swatch = (
            f'<span style="display:inline-block;width:12px;height:12px;margin-right:4px;'
            f'background:rgb({r},{g},{b});border:1px solid #666"></span>'
        )
        items.append(f'<span style="margin-right:12px">{swatch}{k}: {html.escape(name)}</span>')
    return '<div id="gcd-legend">' + "".join(items) + "</div>"


def hex_colour(rgb) -> str:
    return "#{:02x}{:02x}{:02x}".format(*(int(v) for v in rgb))


def layout_from_colours(
    rgb: np.ndarray, palette: np.ndarray, size: tuple[int, int], names=None
) -> np.ndarray:
    """A painted or coloured layout, uint8 ``[h, w, 3|4]``, -> class ids int32 ``size``.

    Each pixel takes the palette colour nearest to it (transparent pixels: class 0); a pixel
    farther than ``COLOUR_TOLERANCE`` from every palette colour is unknown (anti-aliased stroke
    edges are, a few pixels). ``[h, w]`` must be ``size`` or an integer multiple of it; each
    block of a multiple takes the most common known class in it.

    Raises:
      InputError: the wrong size, or more than ``MAX_UNKNOWN`` of the pixels in no palette colour
        (the message names the most common of them and the palette).
    """
    rgb = np.asarray(rgb)
    h, w = rgb.shape[:2]
    height, width = size
    if rgb.ndim != 3 or h % height or w % width or h // height != w // width:
        raise InputError(
            f"The layout is {h}x{w} (H x W); the model needs {height}x{width} or an integer "
            "multiple of it."
        )
    colours = rgb[..., :3].astype(np.float32)
    if rgb.shape[-1] == 4:  # Transparent = background (class 0).
        alpha = rgb[..., 3:].astype(np.float32) / 255.0
        colours = alpha * colours + (1.0 - alpha) * palette[0].astype(np.float32)
    dist = np.linalg.norm(colours[..., None, :] - palette.astype(np.float32), axis=-1)
    ids, known = dist.argmin(-1), dist.min(-1) <= COLOUR_TOLERANCE
    if (~known).mean() > MAX_UNKNOWN:
        values, counts = np.unique(np.rint(colours[~known]).astype(int), axis=0, return_counts=True)
        common = ", ".join(hex_colour(v) for v in values[np.argsort(-counts)[:4]])
        allowed = ", ".join(
            f"{hex_colour(c)}" + (f" ({n})" if names is not None else "")
            for c, n in zip(palette, names if names is not None else palette, strict=True)
        )
        raise InputError(
            f"{(~known).mean():.0%} of the layout's pixels have colours outside the palette "
            f"(e.g. {common}); use the class colours: {allowed}."
        )
    s = h // height
    k = len(palette)
    blocks = np.where(known, ids, k).reshape(height, s, width, s).transpose(0, 2, 1, 3)
    counts = np.stack([(blocks == c).sum((-1, -2)) for c in range(k)], -1)
    nearest = ids.reshape(height, s, width, s)[:, 0, :, 0]  # a block with no known pixel
    return np.where(counts.max(-1) > 0, counts.argmax(-1), nearest).astype(np.int32)


def read_layout_file(path: str, info: classes.DatasetInfo, size: tuple[int, int]) -> np.ndarray:
    """An uploaded label PNG: single-channel class ids (as ``--mode outpaint --layout``) at the
    model's size, or a coloured layout in the palette (see ``layout_from_colours``)."""
    try:
        with Image.open(path) as image:
            mode, array = (
                image.mode,
                np.asarray(image.convert("RGBA") if image.mode in ("RGBA", "LA") else image),
            )
    except (OSError, ValueError, SyntaxError) as error:
        raise InputError(
            f"The uploaded layout is not an image file PIL can read ({error})."
        ) from None
    if array.ndim == 2 and mode in ("L", "P", "I", "I;16"):
        if array.shape != tuple(size):
            raise InputError(
                f"The uploaded label map is {array.shape[0]}x{array.shape[1]}; the model needs "
                f"{size[0]}x{size[1]} (H x W)."
            )
        if array.max() >= info.num_classes:
            raise InputError(
                f"The uploaded label map has class ids up to {array.max()}; this model has "
                f"{info.num_classes} classes (ids 0..{info.num_classes - 1})."
            )
        return array.astype(np.int32)
    if array.ndim == 2:
        array = np.asarray(Image.fromarray(array).convert("RGB"))
    return layout_from_colours(array, info.palette, size, info.class_names)


def image_for_model(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """An uploaded uint8 image ``[h, w, 3|4]`` (any size) -> float32 ``size + (3,)`` in [−1, 1]
    (bicubic resize; alpha dropped)."""
    image = np.asarray(image)
    if image.ndim == 2:
        image = np.stack([image] * 3, -1)
    if image.ndim != 3 or image.shape[-1] not in (3, 4):
        raise InputError(f"The uploaded image has shape {image.shape}; expected an RGB picture.")
    resized = Image.fromarray(image[..., :3].astype(np.uint8)).resize(
        (size[1], size[0]), Image.Resampling.BICUBIC
    )
    return np.asarray(resized, np.float32) / 127.5 - 1.0


# ------------------------------------------------------------------ the page's logic
@dataclasses.dataclass
class Result:
    """What a tab shows: pictures (uint8, upscaled for display) with captions, and a status."""

    pictures: list[tuple[np.ndarray, str]]
    status: str


class Page:
    """The models behind the page and one method per tab. ``sr``: the cascade's second stage."""

    def __init__(self, base: generation.Model, sr: generation.Model | None = None):
        if base.sr:
            raise InputError(
                "--config/--workdir must be a base model; give the SR model as --sr_workdir."
            )
        if sr is not None:
            generation.check_cascade(base.config, sr.config)
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
        base = generation.load(config, workdir, step)
        sr = generation.load(checkpoint.read_config(sr_workdir), sr_workdir) if sr_workdir else None
        return cls(base, sr)

    @property
    def size(self) -> tuple[int, int]:
        return tuple(self.base.config.data.image_size)

    # -------------------------------------------------------------- helpers
    def _with_steps(self, model: generation.Model, steps: int) -> generation.Model:
        config = ml_collections.ConfigDict(model.config.to_dict())
        config.sample.num_steps = int(steps)
        return dataclasses.replace(model, config=config)

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
        progress: generation.Progress | None = None,
    ) -> Result:
        """``num`` pairs for ``prompt`` (seeds ``seed``'s batches), or the cascade's SR pairs."""
        prompt = (prompt or "").strip()
        if not prompt:
            raise InputError(f"Type a prompt first (e.g. {EXAMPLE_PROMPT!r}).")
        if not 1 <= int(num) <= MAX_SAMPLES:
            raise InputError(f"Number of samples must be 1..{MAX_SAMPLES}, got {num}.")
        self._check_cascade(cascade)
        t0 = time.perf_counter()
        prompts, key = [prompt] * int(num), self._seed_key(seed)
        base = self._with_steps(self.base, steps)
        if cascade:
            sr = self._with_steps(self.sr, steps)
            k_base, k_sr = jax.random.split(key)
            low = generation.generate(
                base, prompts, k_base, guidance, mesh=self.mesh, progress=progress
            )
            images, layouts = generation.generate(
                sr, prompts, k_sr, guidance, lowres=low, mesh=self.mesh, progress=progress
            )
            model = sr
        else:
            images, layouts = generation.generate(
                base, prompts, key, guidance, mesh=self.mesh, progress=progress
            )
            model = base
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
        progress: generation.Progress | None = None,
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
        progress: generation.Progress | None = None,
    ) -> Result:
        """The layout of an uploaded uint8 image (resized to the model's size) and its overlay."""
        if image is None:
            raise InputError("Upload an image first.")
        self._check_cascade(cascade)
        t0 = time.perf_counter()
        model_size = tuple((self.sr or self.base).config.data.image_size) if cascade else self.size
        x_known = image_for_model(image, model_size)[None]
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
        self, prompt, steps, guidance, seed, cascade, image, image_known, label, progress
    ):
        """Base (then SR) outpainting of one example with the given modality known; ``image``
        is at the base size, or at the SR size when ``cascade`` and the image is known."""
        prompts = [(prompt or "").strip()]
        scale = float(guidance) if prompts[0] else 0.0  # no prompt: the null text alone
        key = self._seed_key(seed)
        base = self._with_steps(self.base, steps)
        high_image = None
        if (
            cascade and image_known
        ):  # the SR stage keeps the full-size upload, the base its downsize
            high_image = image
            image = generation.lowres_from_data(self.sr.config, image, None)[0]
        k_base, k_sr = jax.random.split(key)
        x, y = generation.outpaint(
            base,
            prompts,
            k_base if cascade else key,
            image,
            np.full(image.shape[:3], image_known),
            label,
            None if label is None else np.ones(label.shape, bool),
            guidance_scale=scale,
            mesh=self.mesh,
            progress=progress,
        )
        if not cascade:
            return x, y, base
        sr = self._with_steps(self.sr, steps)
        sr_size = tuple(sr.config.data.image_size)
        if label is not None:
            big = np.asarray(
                Image.fromarray(label[0].astype(np.uint8)).resize(
                    sr_size[::-1], Image.Resampling.NEAREST
                )
            )
            sr_label, sr_label_mask = big[None].astype(np.int32), np.ones((1, *sr_size), bool)
        else:
            sr_label, sr_label_mask = None, None
        sr_image = high_image if high_image is not None else np.zeros((1, *sr_size, 3), np.float32)
        x, y = generation.outpaint(
            sr,
            prompts,
            k_sr,
            sr_image,
            np.full((1, *sr_size), image_known),
            sr_label,
            sr_label_mask,
            guidance_scale=scale,
            lowres=(x, y),
            mesh=self.mesh,
            progress=progress,
        )
        return x, y, sr

    def _done(self, model: generation.Model, num: int, t0: float) -> str:
        return (
            f"Done: {int(num)} sample(s) at {tuple(model.config.data.image_size)} in "
            f"{time.perf_counter() - t0:.1f} s (checkpoint step {model.step}, "
            f"{model.config.sample.num_steps} steps)."
        )


# ------------------------------------------------------------------ gradio
def stream(call: Callable[[], Result], note: str | None, outputs: int) -> Iterator[tuple]:
    """A gradio handler's updates: the status line first ('compiling…' or 'sampling…'), then the
    pictures and 'Done…'. A ``UserError`` becomes an error status, never a traceback; any other
    exception is a bug, logged with its traceback and named on the status line."""
    import gradio as gr

    keep = (gr.skip(),) * outputs
    yield (*keep, note or "Sampling…")
    try:
        result = call()
    except UserError as error:
        yield (*keep, ERROR_PREFIX + str(error))
        return
    except Exception as error:
        logging.exception("serve: the call failed")
        yield (
            *keep,
            f"{ERROR_PREFIX}Internal error ({type(error).__name__}: {error}); see the log.",
        )
        return
    if outputs == 1:  # a gallery: (picture, caption) pairs
        yield (result.pictures, result.status)
    else:
        yield (*(picture for picture, _ in result.pictures[:outputs]), result.status)


def build(page: Page):
    """The gradio Blocks of the page (not launched)."""
    import gradio as gr

    info, size = page.info, page.size
    scale = display_scale(size)
    colours = [hex_colour(c) for c in info.palette]
    cascade_visible = page.sr is not None

    def settings(prefix: str):
        with gr.Row():
            steps = gr.Slider(
                1,
                1000,
                value=page.base.config.sample.num_steps,
                step=1,
                label="steps",
                elem_id=f"{prefix}-steps",
            )
            guidance = gr.Slider(
                0.0,
                15.0,
                value=page.base.config.sample.guidance_scale,
                step=0.5,
                label="guidance",
                elem_id=f"{prefix}-guidance",
            )
            seed = gr.Number(0, precision=0, label="seed", elem_id=f"{prefix}-seed")
            cascade = gr.Checkbox(
                False, label="SR cascade", visible=cascade_visible, elem_id=f"{prefix}-cascade"
            )
        return steps, guidance, seed, cascade

    tracker = gr.Progress()  # gradio fills in a handler's gr.Progress default argument

    def reporter(progress):
        return lambda done, total: progress((done, total), desc="sampling", unit="samples")

    def painted_layout(editor, upload):
        if upload:
            return read_layout_file(upload if isinstance(upload, str) else upload.name, info, size)
        if editor is None or editor.get("composite") is None:
            raise InputError("Paint a layout or upload a label PNG first.")
        return layout_from_colours(editor["composite"], info.palette, size, info.class_names)

    def t2i(prompt, num, steps, guidance, seed, cascade, progress=tracker):
        note = page.compile_note("t2i", int(num), int(steps), bool(cascade))
        args = (prompt, num, steps, guidance, seed, cascade, reporter(progress))
        yield from stream(lambda: page.text_to_image(*args), note, 1)

    def l2i(editor, upload, prompt, steps, guidance, seed, cascade, progress=tracker):
        def call():
            layout = painted_layout(editor, upload)
            args = (prompt, steps, guidance, seed, cascade, reporter(progress))
            return page.layout_to_image(layout, *args)

        yield from stream(call, page.compile_note("l2i", 1, int(steps), bool(cascade)), 2)

    def i2l(image, prompt, steps, guidance, seed, cascade, progress=tracker):
        note = page.compile_note("i2l", 1, int(steps), bool(cascade))
        args = (image, prompt, steps, guidance, seed, cascade, reporter(progress))
        yield from stream(lambda: page.image_to_layout(*args), note, 2)

    background = upscale(np.broadcast_to(info.palette[0], (*size, 3)).astype(np.uint8), scale)
    with gr.Blocks(title="gcd_jax") as blocks:
        gr.Markdown(
            f"### gcd_jax: {info.name} model, checkpoint step {page.base.step}"
            + (f" + SR model (step {page.sr.step})" if page.sr else "")
            + f" — samples are {size[0]}x{size[1]}, shown {scale}x"
        )
        gr.HTML(legend_html(info))
        with gr.Tab("Text → image + layout"):
            prompt = gr.Textbox(label="prompt", elem_id="t2i-prompt")
            num = gr.Slider(1, MAX_SAMPLES, value=2, step=1, label="samples", elem_id="t2i-num")
            t2i_settings = settings("t2i")
            t2i_button = gr.Button("Generate", variant="primary", elem_id="t2i-run")
            t2i_status = gr.Markdown("", elem_id="t2i-status")
            t2i_gallery = gr.Gallery(
                label="image | layout",
                columns=2,
                format="png",
                object_fit="contain",
                height="auto",
                elem_id="t2i-gallery",
            )
        with gr.Tab("Layout → image"):
            with gr.Row():
                editor = gr.ImageEditor(
                    value={"background": background, "layers": [], "composite": None},
                    type="numpy",
                    image_mode="RGB",
                    canvas_size=(background.shape[1], background.shape[0]),
                    fixed_canvas=True,
                    transforms=(),
                    sources=(),
                    layers=False,
                    brush=gr.Brush(
                        colors=colours,
                        default_color=colours[min(1, len(colours) - 1)],
                        color_mode="fixed",
                        default_size=max(4, 3 * scale),
                    ),
                    format="png",
                    label="paint a layout (brush colours = classes, see the legend)",
                    elem_id="l2i-canvas",
                )
                upload = gr.File(
                    label="or upload a label PNG", file_types=[".png"], elem_id="l2i-upload"
                )
            l2i_prompt = gr.Textbox(label="prompt (optional)", elem_id="l2i-prompt")
            l2i_settings = settings("l2i")
            l2i_button = gr.Button("Generate image", variant="primary", elem_id="l2i-run")
            l2i_status = gr.Markdown("", elem_id="l2i-status")
            with gr.Row():
                l2i_image = gr.Image(label="image", format="png", elem_id="l2i-image")
                l2i_layout = gr.Image(label="layout", format="png", elem_id="l2i-layout")
        with gr.Tab("Image → layout"):
            image = gr.Image(
                type="numpy",
                image_mode="RGB",
                label=f"image (resized to {size[0]}x{size[1]})",
                format="png",
                elem_id="i2l-image",
            )
            i2l_prompt = gr.Textbox(label="prompt (optional)", elem_id="i2l-prompt")
            i2l_settings = settings("i2l")
            i2l_button = gr.Button("Segment", variant="primary", elem_id="i2l-run")
            i2l_status = gr.Markdown("", elem_id="i2l-status")
            with gr.Row():
                layout_out = gr.Image(label="layout", format="png", elem_id="i2l-layout")
                overlay_out = gr.Image(label="overlay", format="png", elem_id="i2l-overlay")

        t2i_button.click(t2i, [prompt, num, *t2i_settings], [t2i_gallery, t2i_status])
        l2i_inputs = [editor, upload, l2i_prompt, *l2i_settings]
        l2i_button.click(l2i, l2i_inputs, [l2i_image, l2i_layout, l2i_status])
        i2l_inputs = [image, i2l_prompt, *i2l_settings]
        i2l_button.click(i2l, i2l_inputs, [layout_out, overlay_out, i2l_status])
    return blocks


def launch(page: Page, port: int = 7860, block: bool = True):
    """Serves ``build(page)`` on http://127.0.0.1:{port} (never a public share link); returns the
    Blocks (``block=False``: at once, the server running in a thread)."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    import gradio as gr

    blocks = build(page).queue(default_concurrency_limit=1)
    theme = gr.themes.Default(
        font=["ui-sans-serif", "system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"]
    )  # System fonts: the page loads nothing from the internet.
    blocks.launch(
        server_name="127.0.0.1",
        server_port=port,
        share=False,
        prevent_thread_lock=not block,
        ssr_mode=False,
        theme=theme,
        quiet=not block,
    )
    return blocks


def serve_main(
    config: ml_collections.ConfigDict,
    workdir: str,
    sr_workdir: str = "",
    port: int = 7860,
    step: int | None = None,
):
    """``--mode serve``: loads the models and serves the page until interrupted."""
    page = Page.load(config, workdir, sr_workdir, step)
    logging.info("serve: http://127.0.0.1:%d (step %d)", port, page.base.step)
    launch(page, port, block=True)
