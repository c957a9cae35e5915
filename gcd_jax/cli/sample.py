"""``--mode sample`` and ``--mode outpaint``: checkpoint -> PNG grids, per-sample files, manifest.

    python run.py --mode sample --config C --workdir W --prompts "a;b"
    python run.py --mode sample --config C_sr --workdir W_sr --base_workdir W --prompts "a;b"
    python run.py --mode sample --config C_sr --workdir W_sr --image x.png --layout y.png
    python run.py --mode outpaint --config C --workdir W --layout y.png --prompts "a"

A base model samples one pair per prompt. An SR model (``model.sr``) samples the cascade from a base
workdir (base samples -> SR samples, both stages written) or starts at the SR stage from a given
image and layout (the reference's ``--start_at_unet_number 2``), resized nearest to its low-res
size. Outputs go to ``W/samples/step_{S}_seed_{seed}/`` (``W/outpaint/...``): ``grid.png`` (images
on top, coloured layouts below), ``{i:04d}_image.png``, ``{i:04d}_label.png`` (raw class ids) and
``manifest.json``; a cascade also writes the base stage under ``lowres/``.
"""

import json
import os

import jax
import ml_collections
import numpy as np
from absl import logging

from gcd_jax import viz
from gcd_jax.data import classes
from gcd_jax.diffusion import sampling
from gcd_jax.errors import InputError
from gcd_jax.inference import cascade, files, generation
from gcd_jax.inference.model import Model, load
from gcd_jax.interfaces import Pair
from gcd_jax.training import checkpoint


def write_samples(outdir: str, config, images, layouts, manifest: dict) -> None:
    """Grid, per-sample image/label PNGs and ``manifest.json`` under ``outdir``."""
    info = classes.dataset_info(config.data.name)
    grid = viz.pair_grid(images, layouts, info.palette, manifest["prompts"], info.class_names)
    viz.save_png(os.path.join(outdir, "grid.png"), grid)
    for i, image in enumerate(viz.image_to_uint8(images)):
        viz.save_png(os.path.join(outdir, f"{i:04d}_image.png"), image)
        if layouts is not None:
            viz.save_png(os.path.join(outdir, f"{i:04d}_label.png"), layouts[i].astype(np.uint8))
    with open(os.path.join(outdir, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=2)


def _manifest(model: Model, seed: int, prompts: list[str], **extra) -> dict:
    s = model.config.sample
    return {
        "checkpoint_step": model.step,
        "seed": seed,
        "prompts": prompts,
        "guidance_scale": sampling.config_guidance(s),
        "num_steps": s.num_steps,
        "use_ema": s.use_ema,
        "files": [f"{i:04d}_image.png" for i in range(len(prompts))],
        **extra,
    }


def _given_lowres(config, prompts, image_path, layout_path) -> Pair:
    """The SR stage's start from files: one image and one layout, resized to the low-res size
    (nearest, as the reference resizes its start image), repeated for every prompt."""
    if not (image_path and (layout_path or not config.model.joint)):
        raise InputError(
            "An SR config samples from --base_workdir (the cascade) or from --image and --layout "
            "(starting at the SR stage)."
        )
    info = classes.dataset_info(config.data.name)
    image = files.read_image(image_path)[None]
    label = files.read_layout(layout_path, info)[None] if layout_path else None
    if label is not None and label.shape != image.shape[:3]:
        raise InputError(f"{image_path} is {image.shape[1:3]} but {layout_path} {label.shape[1:]}.")
    lowres_config = ml_collections.ConfigDict(config.to_dict())
    lowres_config.diffusion.lowres_resize = "nearest"
    image, label = generation.lowres_from_data(lowres_config, image, label)
    n = len(prompts)
    return np.repeat(image, n, 0), None if label is None else np.repeat(label, n, 0)


def sample_main(
    config: ml_collections.ConfigDict,
    workdir: str,
    prompts: str,
    seed: int,
    step: int | None = None,
    base_workdir: str = "",
    image_path: str = "",
    layout_path: str = "",
) -> str:
    """``--mode sample``: returns the output folder ``{workdir}/samples/step_{S}_seed_{seed}``."""
    prompt_list = files.read_prompts(prompts)
    if not config.model.sr and (base_workdir or image_path or layout_path):
        raise InputError("--base_workdir/--image/--layout are for SR configs (model.sr=True).")
    key = jax.random.key(seed)
    base = None
    if config.model.sr and base_workdir:
        base_config = checkpoint.read_config(base_workdir)
        cascade.check_cascade(base_config, config)
        base = load(base_config, base_workdir)
    elif config.model.sr:
        lowres = _given_lowres(config, prompt_list, image_path, layout_path)
    model = load(config, workdir, step)
    logging.info("sampling %d prompts from step %d", len(prompt_list), model.step)
    progress = generation.log_progress("sample")
    outdir = os.path.join(workdir, "samples", f"step_{model.step}_seed_{seed}")
    if base is not None:
        lowres, (images, layouts) = cascade.cascade(
            base, model, prompt_list, key, progress=progress
        )
        manifest = _manifest(base, seed, prompt_list, workdir=base_workdir)
        write_samples(os.path.join(outdir, "lowres"), base.config, *lowres, manifest)
    else:
        low = lowres if config.model.sr else None
        images, layouts = generation.generate(
            model, prompt_list, key, lowres=low, progress=progress
        )
    extra = {"base_workdir": base_workdir, "image": image_path, "layout": layout_path}
    write_samples(outdir, config, images, layouts, _manifest(model, seed, prompt_list, **extra))
    return outdir


def outpaint_main(
    config: ml_collections.ConfigDict,
    workdir: str,
    prompts: str,
    seed: int,
    image_path: str = "",
    layout_path: str = "",
    step: int | None = None,
) -> str:
    """``--mode outpaint``: layout -> image (semantic image synthesis) and/or image -> layout
    (segmentation). The given modality is kept exactly, the other is generated; one sample per
    prompt, and without prompts one unconditional sample (guidance on the null text alone). An SR
    model takes both files and conditions on their low-res versions as well."""
    if not (image_path or layout_path):
        raise InputError("--mode outpaint needs --image and/or --layout.")
    if layout_path and not config.model.joint:
        raise InputError("An image-only model (model.joint=False) has no layout to condition on.")
    if config.model.sr and not (image_path and layout_path):
        raise InputError("SR outpainting conditions on a low-res pair: give --image and --layout.")
    size = tuple(config.data.image_size)
    prompt_list = files.read_prompts(prompts) if prompts else [""]
    n = len(prompt_list)
    image = np.zeros((*size, 3), np.float32)
    if image_path:
        image = files.read_image(image_path)
        files.check_size(image_path, image, size)
    info = classes.dataset_info(config.data.name)
    label = files.read_layout(layout_path, info, size) if layout_path else None
    images = np.broadcast_to(image, (n, *size, 3))
    labels = None if label is None else np.broadcast_to(label, (n, *size))
    lowres = generation.lowres_from_data(config, images, labels) if config.model.sr else None
    model = load(config, workdir, step)
    scale = sampling.config_guidance(config.sample) if prompts else 0.0
    x, y = generation.outpaint(
        model,
        prompt_list,
        jax.random.key(seed),
        images,
        np.full((n, *size), bool(image_path)),
        labels,
        None if labels is None else np.ones((n, *size), bool),
        guidance_scale=scale,
        lowres=lowres,
        progress=generation.log_progress("outpaint"),
    )
    outdir = os.path.join(workdir, "outpaint", f"step_{model.step}_seed_{seed}")
    manifest = _manifest(
        model,
        seed,
        prompt_list,
        image=image_path,
        layout=layout_path,
        resample_steps=config.sample.resample_steps,
    )
    manifest["guidance_scale"] = scale
    write_samples(outdir, config, x, y, manifest)
    return outdir
