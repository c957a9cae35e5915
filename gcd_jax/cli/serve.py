"""``--mode serve``: a local page to use a trained model (gradio, bound to 127.0.0.1, no share link).

    python run.py --mode serve --config experiments/demo.py --workdir /tmp/demo [--port 7860]
    python run.py --mode serve --config experiments/demo_sr.py:base --workdir /tmp/demo16 \\
        --sr_workdir /tmp/demo_sr                       # adds a toggle that runs the SR cascade

The page's logic (three tabs: text -> image + layout, layout -> image, image -> layout) is
``gcd_jax.cli.page.Page``; this module wires it into gradio Blocks and serves them. Bad input is a
``UserError`` shown on the tab's status line, never a traceback.
"""

import html
import os
from collections.abc import Callable, Iterator

import ml_collections
import numpy as np
from absl import logging

from gcd_jax.cli.page import (
    EXAMPLE_PROMPT,
    MAX_SAMPLES,
    Page,
    Result,
    display_scale,
    upscale,
)
from gcd_jax.data import classes
from gcd_jax.errors import InputError, UserError
from gcd_jax.inference import files

ERROR_PREFIX = "⚠️ "  # Status lines of bad input start with this (the browser test looks for it).


def hex_colour(rgb) -> str:
    return "#{:02x}{:02x}{:02x}".format(*(int(v) for v in rgb))


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
            path = upload if isinstance(upload, str) else upload.name
            return files.read_layout(path, info, size, "The uploaded layout")
        if editor is None or editor.get("composite") is None:
            raise InputError("Paint a layout or upload a label PNG first.")
        return files.layout_from_colours(editor["composite"], info.palette, size, info.class_names)

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
            prompt = gr.Textbox(label="prompt", placeholder=EXAMPLE_PROMPT, elem_id="t2i-prompt")
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
