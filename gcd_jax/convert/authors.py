"""The authors' PyTorch checkpoints → gcd_jax checkpoints.

    python -m gcd_jax.convert --checkpoint base.pt --config experiments/cityscapes.py --workdir W
    python -m gcd_jax.convert --checkpoint sr.pt --config experiments/cityscapes_sr.py \
        --workdir W_SR                       # --unet defaults to 2 for an SR config
    python run.py --mode sample --config experiments/cityscapes.py --workdir W --prompts "..."

``--checkpoint`` is a file of the authors' trainer (``JointImagenTrainer.save``, see
``reference_checkpoint``); it is read without PyTorch and without running code from it. The
output is an ordinary checkpoint in ``{workdir}/checkpoints/{step}`` (step from the file) that
``run.py --mode sample|outpaint|evaluate`` restores, and that training resumes from (fine-tuning:
the Adam moments start from zero, the data order from the first batch).

Which weights go where: with ``--ema`` (the default) ``ema_params`` are the EMA weights (what the
authors sample with, and what ``sample.use_ema`` selects) and ``params`` the raw weights (what
training continues from); with ``--no-ema`` both are the raw weights. Conversion checks the
weights' keys and shapes against the config's U-Net and logs the stored settings (label schedules,
step, EMA counters) that disagree with the config. Only configs with a frozen T5 text encoder
(``text.encoder='t5'``) can be converted: the authors' models use T5, so the parameter tree is
``{'unet': ...}``; the conversion needs only the T5's ``config.json`` (its width), sampling needs
the whole T5.
"""

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from gcd_jax.convert import reference_checkpoint, torch_names
from gcd_jax.errors import CheckpointError, ConfigError, InputError
from gcd_jax.models import build_unet, t5
from gcd_jax.models.networks import Networks
from gcd_jax.models.scanned import stack_blocks, unstack_blocks
from gcd_jax.models.text import TextEncoder
from gcd_jax.training import checkpoint, train_state

PyTree = Any


@dataclasses.dataclass(frozen=True)
class Summary:
    """What ``convert`` did: U-Net number (1-based), step, mapped tensors and parameters, where
    ``params`` / ``ema_params`` came from, the settings report and the checkpoint folder."""

    unet: int
    step: int
    num_tensors: int
    num_params: int
    params_from: str
    ema_params_from: str
    report: list[str]
    directory: str


def _no_tokenizer(captions):
    raise RuntimeError("conversion builds the text encoder for its shape only")


def shape_networks(config: ml_collections.ConfigDict) -> Networks:
    """The experiment's networks for shapes: the U-Net and a frozen T5 known by its width only
    (read from the T5's ``config.json``; no tokenizer, no weights)."""
    if config.text.encoder != "t5":
        raise ConfigError(
            f"text.encoder={config.text.encoder!r}: the authors' models use a frozen T5 "
            "(text.encoder='t5'); a checkpoint with a learned text encoder cannot be converted."
        )
    t5_config = t5.read_config(t5.resolve_model_dir(config.text.t5_name))
    text = TextEncoder(
        module=t5.T5Encoder(t5_config),
        width=t5_config.d_model,
        max_length=config.text.max_length,
        frozen=True,
        tokenize=_no_tokenizer,
        load_params=None,
    )
    return Networks(build_unet(config), text, tuple(config.data.image_size))


def fresh_opt_state(optimizer: optax.GradientTransformation, params: PyTree) -> PyTree:
    """``optimizer.init(params)``. When the optimizer starts from zeros (Adam: moments and count),
    leaves of one shape and dtype share one zero array: the checkpoint is the same, and the
    conversion of a 697 M-parameter U-Net does not hold two more copies of it."""
    probe = optimizer.init({"w": jnp.ones((3,))})
    if any(np.any(np.asarray(leaf)) for leaf in jax.tree.leaves(probe)):
        return optimizer.init(params)
    zeros: dict[tuple, jax.Array] = {}

    def zero(s: jax.ShapeDtypeStruct) -> jax.Array:
        key = (s.shape, s.dtype)
        if key not in zeros:
            zeros[key] = jax.device_put(np.zeros(s.shape, s.dtype))  # no compile per shape
        return zeros[key]

    return jax.tree.map(zero, jax.eval_shape(optimizer.init, params))


def _same_layout(state: PyTree, abstract: PyTree) -> bool:
    def leaves(tree):
        return [(x.shape, jnp.dtype(x.dtype)) for x in jax.tree.leaves(tree)]

    return jax.tree.structure(state) == jax.tree.structure(abstract) and leaves(state) == leaves(
        abstract
    )


def _read_weights(ckpt, index: int, use_ema: bool, table, sr: bool):
    """(raw tree or None, EMA tree or None); all keys and shapes are checked before reading."""
    raw = ckpt.unet_state(index, ema=False)
    ema = ckpt.unet_state(index, ema=True) if use_ema else None
    if use_ema and ema is None:
        raise CheckpointError(f"{ckpt.path} holds no EMA weights ('ema'): convert with --no-ema.")
    label = f"{ckpt.path}, U-Net {index + 1}"
    reference_checkpoint.check_state(raw, table, f"{label} (raw weights)", sr)
    if ema is not None:
        reference_checkpoint.check_state(ema, table, f"{label} (EMA weights)", sr)
    raw_tree = reference_checkpoint.flax_params(raw, table)
    ema_tree = None if ema is None else reference_checkpoint.flax_params(ema, table)
    return raw_tree, ema_tree


def convert(
    checkpoint_path: str,
    config: ml_collections.ConfigDict,
    workdir: str,
    unet: int | None = None,
    use_ema: bool = True,
) -> Summary:
    """Writes U-Net ``unet`` (1-based; default 2 for an SR config, else 1) of an authors'
    checkpoint as the gcd_jax checkpoint of ``workdir`` (which must have none yet)."""
    unet = unet if unet is not None else (2 if config.model.sr else 1)
    nets = shape_networks(config)
    optimizer = train_state.make_optimizer(config.optim)
    abstract = train_state.abstract_state(nets, optimizer)
    # The name table is per block; with model.scan_blocks the blocks of a level are then stacked.
    table = torch_names.unet_table(
        unstack_blocks(abstract.params["unet"]),
        len(config.model.dim_mults),
        config.model.cross_embed_kernels,
    )
    ckpt = reference_checkpoint.read(checkpoint_path)
    if not 1 <= unet <= ckpt.num_unets:
        raise InputError(f"--unet={unet}, but {checkpoint_path} has {ckpt.num_unets} U-Net(s).")
    index = unet - 1
    report = reference_checkpoint.settings_report(ckpt, index, config)
    raw, ema = _read_weights(ckpt, index, use_ema, table, config.model.sr)
    if config.model.scan_blocks:
        raw, ema = stack_blocks(raw), None if ema is None else stack_blocks(ema)
    step = int(ckpt.steps[index])
    params = {"unet": raw}
    ema_params = params if ema is None else {"unet": ema}
    state = train_state.TrainState(
        step=jnp.asarray(step, jnp.int32),
        params=params,
        ema_params=ema_params,
        opt_state=fresh_opt_state(optimizer, params),
        key=jax.random.key_data(jax.random.split(jax.random.key(config.train.seed))[1]),
    )
    if not _same_layout(state, abstract):  # a bug here, not in the file: the checks came first
        raise AssertionError("the converted state does not have the layout of a TrainState")
    saver = checkpoint.Checkpointer(workdir, config)
    try:
        if saver.latest_step() is not None:
            raise CheckpointError(
                f"{workdir} already holds checkpoints (latest step {saver.latest_step()}): "
                "convert into a new --workdir."
            )
        saver.save(step, state, next_batch=0)
    finally:
        saver.close()
    return Summary(
        unet=unet,
        step=step,
        num_tensors=len(table),
        num_params=torch_names.num_params(table),
        params_from="raw weights",
        ema_params_from="raw weights" if ema is None else "EMA weights",
        report=report,
        directory=f"{workdir}/checkpoints/{step}",
    )
