"""Checkpoint -> samples: the text-to-(image, layout) driver, outpainting from files, PNG output.

``python run.py --mode sample --config C --workdir W --prompts "a;b"`` reloads the latest (or a
given) checkpoint of ``W``, EMA parameters by default, and writes a grid (image row, coloured
layout row), per-sample PNGs of the image and raw label map, and a JSON manifest to
``W/samples/``. ``--mode outpaint`` completes a given image and/or layout.
"""

import dataclasses
import json
import os
import pathlib
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging
from PIL import Image

from gcd_jax import checkpoint, sampling, sharding, train_state, viz
from gcd_jax.data import classes
from gcd_jax.models import guided_apply
from gcd_jax.networks import Networks, build_networks

PyTree = Any


@dataclasses.dataclass(frozen=True)
class Loaded:
    """A restored model ready to sample: networks, the chosen parameters, frozen text params."""

    nets: Networks
    params: PyTree
    frozen: PyTree
    step: int


def load(config: ml_collections.ConfigDict, workdir: str, step: int | None = None) -> Loaded:
    """Restores the checkpoint at ``step`` (default: latest) of ``workdir``; EMA parameters when
    ``config.sample.use_ema``. Raises ``FileNotFoundError`` when there is none."""
    ckpt = checkpoint.Checkpointer(workdir, config)
    try:
        step = ckpt.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(
                f"No checkpoint in {os.path.join(workdir, 'checkpoints')}: train first "
                f"(python run.py --config ... --workdir {workdir})."
            )
        nets = build_networks(config)
        optimizer = train_state.make_optimizer(config.optim)
        state, _ = ckpt.restore(train_state.abstract_state(nets, optimizer), step)
    finally:
        ckpt.close()
    params = state.ema_params if config.sample.use_ema else state.params
    return Loaded(nets, params, nets.load_frozen(), step)


def prompt_condition(
    nets: Networks, params: PyTree, frozen: PyTree, prompts: list[str]
) -> dict[str, jax.Array]:
    """``{'text': [B, L, D], 'text_mask': [B, L]}`` for the sampler's denoiser."""
    tokens, mask = nets.text.tokenize(prompts)
    return {"text": nets.encode_text(params, frozen, tokens, mask), "text_mask": jnp.asarray(mask)}


def generate(
    config: ml_collections.ConfigDict,
    loaded: Loaded,
    prompts: list[str],
    key: jax.Array,
    guidance_scale: float | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Samples one pair per prompt in batches of ``sample.batch_size``.

    Returns:
      images float32 ``[N, H, W, 3]`` in [−1, 1] and layouts int32 ``[N, H, W]`` (None when the
      model is image-only).
    """
    sampler = sampling.Sampler.from_config(config)
    scale = config.sample.guidance_scale if guidance_scale is None else guidance_scale
    denoise = sampling.guided_denoiser(
        guided_apply, loaded.nets.unet, {"params": loaded.params["unet"]}, scale
    )
    mesh = sharding.make_mesh()
    size = config.sample.batch_size
    images, layouts = [], []
    for i, start in enumerate(range(0, len(prompts), size)):
        chunk = prompts[start : start + size]
        padded = chunk + [chunk[-1]] * (-len(chunk) % mesh.size)  # whole batches per device
        cond = prompt_condition(loaded.nets, loaded.params, loaded.frozen, padded)
        shape = (len(padded), *config.data.image_size)
        x, y = sampling.sample_pairs(
            sampler, denoise, cond, jax.random.fold_in(key, i), shape, mesh
        )
        images.append(np.asarray(x)[: len(chunk)])
        layouts.append(None if y is None else np.asarray(y)[: len(chunk)])
    layout = None if layouts[0] is None else np.concatenate(layouts)
    return np.concatenate(images), layout


def grid_png(path: str, config: ml_collections.ConfigDict, images, layouts) -> None:
    """A two-row grid (images, coloured layouts; a blank row for an image-only model)."""
    palette = classes.dataset_info(config.data.name).palette
    layouts = np.zeros(images.shape[:3], np.int32) if layouts is None else layouts
    viz.save_png(path, viz.make_grid(viz.image_to_uint8(images), layouts, palette))


def read_prompts(prompts: str) -> list[str]:
    """``prompts``: a file with one prompt per line, or prompts separated by ';'."""
    if os.path.isfile(prompts):
        lines = pathlib.Path(prompts).read_text().splitlines()
    else:
        lines = prompts.split(";")
    result = [p.strip() for p in lines if p.strip()]
    if not result:
        raise ValueError(f"No prompts in {prompts!r}: give a file or 'first prompt;second prompt'.")
    return result


def write_samples(outdir: str, config, images, layouts, manifest: dict) -> None:
    """Grid, per-sample image/label PNGs and ``manifest.json`` under ``outdir``."""
    grid_png(os.path.join(outdir, "grid.png"), config, images, layouts)
    for i, image in enumerate(viz.image_to_uint8(images)):
        viz.save_png(os.path.join(outdir, f"{i:04d}_image.png"), image)
        if layouts is not None:
            viz.save_png(os.path.join(outdir, f"{i:04d}_label.png"), layouts[i].astype(np.uint8))
    with open(os.path.join(outdir, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=2)


def sample_main(
    config: ml_collections.ConfigDict,
    workdir: str,
    prompts: str,
    seed: int,
    step: int | None = None,
) -> str:
    """``--mode sample``: returns the output folder ``{workdir}/samples/step_{S}_seed_{seed}``."""
    loaded = load(config, workdir, step)
    prompt_list = read_prompts(prompts)
    logging.info("sampling %d prompts from step %d", len(prompt_list), loaded.step)
    images, layouts = generate(config, loaded, prompt_list, jax.random.key(seed))
    outdir = os.path.join(workdir, "samples", f"step_{loaded.step}_seed_{seed}")
    manifest = {
        "checkpoint_step": loaded.step,
        "seed": seed,
        "prompts": prompt_list,
        "guidance_scale": config.sample.guidance_scale,
        "num_steps": config.sample.num_steps,
        "use_ema": config.sample.use_ema,
        "files": [f"{i:04d}_image.png" for i in range(len(prompt_list))],
    }
    write_samples(outdir, config, images, layouts, manifest)
    return outdir


def read_layout(path: str, config: ml_collections.ConfigDict) -> np.ndarray:
    """A raw label-map PNG ``[H, W]`` with values in [0, K); anything else is a clear error."""
    label = np.asarray(Image.open(path))
    if label.ndim != 2:
        raise ValueError(f"{path}: a layout must be a single-channel label map, got {label.shape}.")
    k = config.data.num_classes
    if label.min() < 0 or label.max() >= k:
        raise ValueError(
            f"{path}: label values span [{label.min()}, {label.max()}], need [0, {k})."
        )
    return label.astype(np.int32)


def read_image(path: str) -> np.ndarray:
    """An RGB image file -> float32 ``[H, W, 3]`` in [−1, 1]."""
    return np.asarray(Image.open(path).convert("RGB"), np.float32) / 127.5 - 1.0


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
    prompt, and without prompts one unconditional sample (guidance on the null text alone)."""
    if not (image_path or layout_path):
        raise ValueError("--mode outpaint needs --image and/or --layout.")
    if layout_path and not config.model.joint:
        raise ValueError("An image-only model (model.joint=False) has no layout to condition on.")
    loaded = load(config, workdir, step)
    size = tuple(config.data.image_size)
    prompt_list = read_prompts(prompts) if prompts else [""]
    n = len(prompt_list)
    image = read_image(image_path) if image_path else np.zeros((*size, 3), np.float32)
    label = read_layout(layout_path, config) if layout_path else np.zeros(size, np.int32)
    for path, array in ((image_path, image), (layout_path, label)):
        if path and array.shape[:2] != size:
            raise ValueError(f"{path} is {array.shape[:2]}, the model samples {size} (H, W).")
    sampler = sampling.Sampler.from_config(config)
    scale = config.sample.guidance_scale if prompts else 0.0
    denoise = sampling.guided_denoiser(
        guided_apply, loaded.nets.unet, {"params": loaded.params["unet"]}, scale
    )
    cond = prompt_condition(loaded.nets, loaded.params, loaded.frozen, prompt_list)
    x, y = sampling.outpaint(
        sampler,
        denoise,
        cond,
        jax.random.key(seed),
        np.broadcast_to(image, (n, *size, 3)),
        np.full((n, *size), bool(image_path)),
        np.broadcast_to(label, (n, *size)) if config.model.joint else None,
        np.full((n, *size), bool(layout_path)) if config.model.joint else None,
    )
    outdir = os.path.join(workdir, "outpaint", f"step_{loaded.step}_seed_{seed}")
    manifest = {
        "checkpoint_step": loaded.step,
        "seed": seed,
        "prompts": prompt_list,
        "image": image_path,
        "layout": layout_path,
        "guidance_scale": scale,
        "num_steps": config.sample.num_steps,
        "resample_steps": config.sample.resample_steps,
    }
    write_samples(outdir, config, np.asarray(x), None if y is None else np.asarray(y), manifest)
    return outdir
