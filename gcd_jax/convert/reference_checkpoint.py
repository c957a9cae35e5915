"""Checkpoints of the authors' PyTorch trainer (GCDP's ``JointImagenTrainer.save``): pick one
U-Net's weights, check them against our model, map them to a Flax parameter tree, and report the
stored settings that disagree with a config.

The file (read by ``torch_checkpoint.load``, no PyTorch needed) pickles a dict:

- ``model``: the ``JointImagen`` state dict: ``unets.{i}.<U-Net key>`` for each U-Net of the
  cascade (``i`` from 0; a placeholder ``NullUnet`` holds only ``dummy_parameter``) and the
  buffers of the label (multinomial) schedules: ``noise_schedulers_lbl.{i}.*`` (training,
  1000 steps), ``noise_schedulers_lbl_sample.{i}.*`` (sampling) and
  ``lowres_noise_schedule_lbl.*`` (SR low-res augmentation);
- ``steps``: int64 ``[num_unets]``, training steps of each U-Net;
- ``ema`` (when trained with EMA): ``ema_pytorch.EMA`` wrappers, ``{i}.ema_model.<U-Net key>``,
  ``{i}.online_model.<U-Net key>`` (the raw weights again), ``{i}.initted``, ``{i}.step``;
- ``optim{i}``, ``scaler{i}``, ``version``: not used (the optimizer state is not converted).

The image (Gaussian) schedules are not stored; only the label schedules can be checked.
"""

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import traverse_util

from gcd_jax.convert import torch_checkpoint, torch_names
from gcd_jax.convert.torch_checkpoint import TorchTensor
from gcd_jax.diffusion import schedules
from gcd_jax.errors import CheckpointError, InputError

PyTree = Any
StateDict = Mapping[str, TorchTensor]

# Keys whose shape follows a config field: named in a shape-mismatch error.
_SHAPE_HINTS = {
    "init_emb_seg.emb_layer.weight": "data.num_classes",
    "init_emb_seg_lowres.emb_layer.weight": "data.num_classes",
    "final_conv_seg.weight": "data.num_classes",
    "final_conv_seg.bias": "data.num_classes",
    "text_to_cond.weight": "the text width (d_model of the T5 named by text.t5_name)",
    "null_text_embed": "text.max_length",
}
_LISTED = 8  # keys named in a missing / unexpected list


@dataclasses.dataclass(frozen=True)
class TrainerCheckpoint:
    """The parts of a trainer checkpoint that conversion reads (tensors not read yet)."""

    path: str
    model: StateDict
    ema: StateDict | None
    steps: np.ndarray  # int64 [num_unets]
    num_unets: int

    def unet_state(self, index: int, ema: bool) -> StateDict | None:
        """U-Net ``index`` (0-based): its EMA weights (None when the file has none) or raw ones."""
        if ema:
            if self.ema is None:
                return None
            prefix = f"{index}.ema_model."
            return {k[len(prefix) :]: v for k, v in self.ema.items() if k.startswith(prefix)}
        prefix = f"unets.{index}."
        return {k[len(prefix) :]: v for k, v in self.model.items() if k.startswith(prefix)}

    def ema_counters(self, index: int) -> tuple[int, bool] | None:
        """ema_pytorch's (update count, initialised) of U-Net ``index``; None without EMA."""
        if self.ema is None or f"{index}.step" not in self.ema:
            return None
        step = int(self.ema[f"{index}.step"].numpy().reshape(-1)[0])
        initted = bool(self.ema[f"{index}.initted"].numpy().reshape(-1)[0])
        return step, initted


def read(path: str) -> TrainerCheckpoint:
    """Reads the dict of a ``JointImagenTrainer`` checkpoint; raises ``InputError`` (with the
    reason) when the file is not one."""
    obj = torch_checkpoint.load(path)
    model = obj.get("model") if isinstance(obj, dict) else None
    if not isinstance(model, dict):
        keys = sorted(map(str, obj))[:_LISTED] if isinstance(obj, dict) else type(obj).__name__
        raise InputError(
            f"{path} is not a checkpoint of the authors' trainer (JointImagenTrainer.save): "
            f"expected a dict with 'model', 'steps' and 'ema', got {keys}."
        )
    unets = {k.split(".")[1] for k in model if k.startswith("unets.")}
    if not unets:
        raise InputError(f"{path}: 'model' holds no U-Net weights ('unets.*'): not a GCDP model.")
    steps = obj.get("steps")
    steps = np.zeros(len(unets), np.int64) if steps is None else steps.numpy().reshape(-1)
    ema = obj.get("ema")
    return TrainerCheckpoint(path, model, ema if isinstance(ema, dict) else None, steps, len(unets))


def _listing(keys: set[str]) -> str:
    shown = ", ".join(sorted(keys)[:_LISTED])
    return f"{shown}, ... ({len(keys)} in all)" if len(keys) > _LISTED else shown


def _kind_hint(state: StateDict, sr: bool) -> str:
    if set(state) == {"dummy_parameter"}:
        return " This U-Net is a placeholder (NullUnet): the file trains a later U-Net (--unet)."
    if "init_emb_seg.emb_layer.weight" not in state:
        return " It has no layout embedding: not a GCDP joint U-Net (an image-only Imagen?)."
    if ("init_emb_seg_lowres.emb_layer.weight" in state) != sr:
        kind = "a super-resolution" if not sr else "a base"
        return f" The checkpoint's U-Net is {kind} U-Net, the config's is not (model.sr, --unet)."
    return ""


def check_state(state: StateDict, table: Sequence[torch_names.Entry], what: str, sr: bool) -> None:
    """Raises ``CheckpointError`` naming every missing, unexpected, mis-shaped or non-float key of
    ``state`` against ``table``; ``what`` names the weights in the message."""
    expected = {e.name for e in table}
    missing, unexpected = expected - set(state), set(state) - expected
    if missing or unexpected:
        lines = [f"{what} do not match the config's U-Net." + _kind_hint(state, sr)]
        if missing:
            lines.append(f"Missing keys: {_listing(missing)}.")
        if unexpected:
            lines.append(f"Unexpected keys: {_listing(unexpected)}.")
        raise CheckpointError("\n  ".join(lines))
    problems = []
    for e in table:
        tensor = state[e.name]
        if tuple(tensor.shape) != e.torch_shape:
            hint = _SHAPE_HINTS.get(e.name, "model.*")
            problems.append(
                f"{e.name}: checkpoint {tuple(tensor.shape)}, config {e.torch_shape} ({hint})"
            )
        elif not np.issubdtype(tensor.dtype, np.floating) and tensor.dtype.name != "bfloat16":
            problems.append(f"{e.name}: dtype {tensor.dtype}, expected floating point")
    if problems:
        raise CheckpointError(
            f"{what}: {len(problems)} shape mismatch(es) with the config:\n  "
            + ";\n  ".join(problems)
            + "."
        )


def flax_params(state: StateDict, table: Sequence[torch_names.Entry]) -> PyTree:
    """The U-Net parameter tree (float32 ``jax.Array``s) of a checked state dict. Tensors are read
    one at a time, so the peak memory is the tree plus one tensor."""
    flat = {}
    for e in table:
        value = torch_names.from_torch(e, state[e.name].numpy().astype(np.float32, copy=False))
        flat[e.path] = jnp.asarray(value)
    return traverse_util.unflatten_dict(flat)


# ----------------------------------------------------------------------------- settings report


def label_buffer(name: str, cosine_p: float, num_steps: int) -> np.ndarray:
    """What the reference stores as ``log_cumprod_alpha`` for a label schedule on ``num_steps``
    steps: ``log ᾱ(i / num_steps) − log ᾱ(0)`` for i = 0 … num_steps − 1, ``ᾱ = sigmoid(λ)``."""
    kwargs = {"p": cosine_p} if name == "cosine_p" else {}
    t = np.arange(num_steps, dtype=np.float32) / np.float32(num_steps)
    logsnr = np.asarray(jax.jit(schedules.get_schedule(name, **kwargs))(t), np.float64)
    log_abar = -np.logaddexp(0.0, -logsnr)
    return log_abar - log_abar[0]


def _schedule_line(ckpt, key: str, field: str, name: str, steps_field: str, steps: int, p: float):
    tensor = ckpt.model.get(key)
    if tensor is None:
        return None
    stored = tensor.numpy().astype(np.float64)
    matches = [
        n
        for n in schedules.SCHEDULES
        if np.allclose(stored, label_buffer(n, p, stored.size), rtol=1e-3, atol=1e-3)
    ]
    if name in matches and stored.size == steps:
        return None

    def label(n: str) -> str:
        return f"cosine_p(p={p})" if n == "cosine_p" else n

    known = ", ".join(map(label, schedules.SCHEDULES))
    found = " = ".join(map(label, matches)) or f"none of {known}"
    return (
        f"{key}: the checkpoint's label schedule is {found} "
        f"over {stored.size} steps; the config has {field}={name!r} over {steps_field}={steps}."
    )


def settings_report(ckpt: TrainerCheckpoint, index: int, config: ml_collections.ConfigDict):
    """One line per stored setting of U-Net ``index`` that disagrees with ``config``: the label
    schedules (training, sampling, SR low-res augmentation), the step and the EMA counters."""
    d, s = config.diffusion, config.sample
    sample_field = "sample.noise_schedule_lbl"
    if not s.noise_schedule_lbl:
        sample_field = "diffusion.noise_schedule_lbl (sample.noise_schedule_lbl is empty)"
    checks = [
        (f"noise_schedulers_lbl.{index}.log_cumprod_alpha", "diffusion.noise_schedule_lbl",
         d.noise_schedule_lbl, "diffusion.num_timesteps", d.num_timesteps),
        (f"noise_schedulers_lbl_sample.{index}.log_cumprod_alpha", sample_field,
         s.noise_schedule_lbl or d.noise_schedule_lbl, "sample.num_steps", s.num_steps),
    ]  # fmt: skip
    if config.model.sr:
        checks.append(
            ("lowres_noise_schedule_lbl.log_cumprod_alpha", "diffusion.lowres_noise_schedule",
             d.lowres_noise_schedule, "diffusion.num_timesteps", d.num_timesteps)
        )  # fmt: skip
    lines = [_schedule_line(ckpt, *check, d.cosine_p) for check in checks]
    step = int(ckpt.steps[index])
    if step >= config.train.num_steps:
        lines.append(
            f"steps[{index}]: the checkpoint has trained {step} steps, config "
            f"train.num_steps={config.train.num_steps}: training would stop at once (raise "
            "--config.train.num_steps to fine-tune)."
        )
    counters = ckpt.ema_counters(index)
    if counters is not None and not counters[1]:
        lines.append(f"ema.{index}: never initialised (EMA weights are the initial copy).")
    elif counters is not None and counters[0] != step:
        lines.append(f"ema.{index}.step: {counters[0]} EMA updates for {step} training steps.")
    return [line for line in lines if line]
