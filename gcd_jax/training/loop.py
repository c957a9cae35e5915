"""The training loop: restore or initialise the state, step, log, checkpoint, stop cleanly.

``train(config, workdir, sample_grid)`` trains (or resumes) until ``train.num_steps``; the loop
knows nothing of sampling: the entry point (``gcd_jax.cli.train``) passes ``sample_grid``, called
every ``train.sample_every`` steps.
"""

import collections
import functools
import signal
import time
from collections.abc import Callable
from typing import Any

import jax
import ml_collections
import numpy as np
from absl import logging

from gcd_jax import sharding
from gcd_jax.data import pipeline
from gcd_jax.diffusion import joint
from gcd_jax.errors import ConfigError, DivergedError
from gcd_jax.models.networks import Networks, build_networks, count_params
from gcd_jax.training import checkpoint, train_state
from gcd_jax.training.metric_log import MetricLog
from gcd_jax.training.train_state import TrainState, init_state, make_optimizer
from gcd_jax.training.train_step import compile_train_step, state_target, step_programs

# ``sample_grid(nets, state, frozen) -> path`` of the grid it wrote (see ``gcd_jax.cli.train``).
SampleGrid = Callable[[Networks, TrainState, Any], str]


class _Preemption:
    """Turns SIGTERM (TPU preemption, ``kill``) into a flag the loop checks between steps."""

    def __init__(self):
        self.requested = False
        self._previous = signal.signal(signal.SIGTERM, self._handle)

    def _handle(self, signum, frame):
        self.requested = True

    def restore(self):
        signal.signal(signal.SIGTERM, self._previous)


def validate_config(config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh) -> None:
    """Raises ``ConfigError`` for settings that cannot work, naming the field and what it needs."""
    train = config.train
    sharding.per_device_batch(train.global_batch_size, mesh)
    if train.global_batch_size % (train.grad_accum_steps * mesh.size):
        raise ConfigError(
            f"train.global_batch_size={train.global_batch_size} must be divisible by "
            f"train.grad_accum_steps ({train.grad_accum_steps}) x devices ({mesh.size})."
        )
    train_state.ema_decay(config.optim, 0)  # validates optim.ema_schedule
    step_programs(config)
    factor = 2 ** len(config.model.dim_mults)
    if any(s % factor for s in config.data.image_size):
        raise ConfigError(
            f"data.image_size={tuple(config.data.image_size)} must be divisible by {factor} "
            f"(2 ** len(model.dim_mults))."
        )


def log_recipe(config: ml_collections.ConfigDict) -> str:
    """Logs (and returns) the settings that make a run the reference's or not: the effective
    batch, schedules, augmentation, resizing, EMA rule and optimizer."""
    d, f, o, r = config.data, config.diffusion, config.optim, config.train
    lines = [
        f"batch: global {r.global_batch_size} x {r.grad_accum_steps} accumulation step(s), "
        f"{r.num_steps} steps",
        f"schedules: image {f.noise_schedule}, layout {f.noise_schedule_lbl}"
        + (
            f" (cosine_p p={f.cosine_p})"
            if "cosine_p" in (f.noise_schedule, f.noise_schedule_lbl)
            else ""
        ),
        f"data: {d.name}/{d.builder_config or 'default'} at {tuple(d.image_size)}, augment "
        f"{d.augment}"
        + (f" {tuple(d.crop_scale)}" if d.augment == "resized_crop" else "")
        + f", image resize {d.resize}, captions kept {d.caption_fraction:g}",
        train_state.describe_ema(o),
        f"optimizer: Adam lr {o.learning_rate:g} betas ({o.b1}, {o.b2}) eps {o.eps:g}, warm-up "
        f"{o.warmup_steps}, clip {o.grad_clip:g}",
    ]
    if config.model.sr:
        lines.append(
            f"SR: low-res {tuple(config.model.lowres_size)}, resize {f.lowres_resize}, "
            f"{f.lowres_aug_groups} augmentation time(s) per global batch "
            f"~ U(0, {f.lowres_aug_t_max}), schedule {f.lowres_noise_schedule}"
        )
    text = "\n  ".join(["recipe:", *lines])
    logging.info("%s", text)
    return text


# Compiled programs of this process: (what, config as JSON, mesh) -> compiled program. A second
# run in the same process (a notebook, the tests) skips tracing, compiling and reading the
# persistent cache (together ~20 s even for the tests' tiny model); the config fixes every shape.
_PROGRAMS: collections.OrderedDict = collections.OrderedDict()
_MAX_PROGRAMS = 8


def _compiled(what: str, config, mesh, jitted, *args):
    """``jitted.lower(*args).compile()`` once per (``what``, config, mesh) in this process;
    returns (program, seconds spent compiling: 0.0 when it was already there)."""
    key = (what, config.to_json(), mesh)
    if key in _PROGRAMS:
        _PROGRAMS.move_to_end(key)
        return _PROGRAMS[key], 0.0
    t0 = time.perf_counter()
    program = jitted.lower(*args).compile()
    _PROGRAMS[key] = program
    if len(_PROGRAMS) > _MAX_PROGRAMS:
        _PROGRAMS.popitem(last=False)
    return program, time.perf_counter() - t0


def _restore_or_init(ckpt, config, nets, optimizer, mesh):
    """(state, next batch index): the newest checkpoint of the workdir that restores (damaged
    newer ones are moved aside with a warning), else a fresh state."""
    target = state_target(config, nets, optimizer, mesh)
    shardings = jax.tree.map(lambda a: a.sharding, target)
    restored = ckpt.restore_newest(target)
    if restored is not None:
        return restored
    key = jax.random.key(config.train.seed)
    init = jax.jit(
        functools.partial(init_state, nets=nets, optimizer=optimizer), out_shardings=shardings
    )
    return _compiled("init", config, mesh, init, key)[0](key), 0


def _host_metrics(metrics: dict[str, jax.Array]) -> dict[str, float]:
    return {k: float(v) for k, v in jax.device_get(metrics).items()}


def train(
    config: ml_collections.ConfigDict, workdir: str, sample_grid: SampleGrid | None = None
) -> TrainState:
    """Trains (or resumes training in ``workdir``) until ``config.train.num_steps``.

    Writes checkpoints every ``train.ckpt_every`` steps and at exit (also on SIGTERM), metrics every
    ``train.log_every`` steps, and calls ``sample_grid`` every ``train.sample_every`` steps.
    """
    mesh = sharding.make_mesh()
    validate_config(config, mesh)
    nets, process = build_networks(config), joint.Process.from_config(config)
    optimizer = make_optimizer(config.optim)
    ckpt = checkpoint.Checkpointer(workdir, config)
    state, next_batch = _restore_or_init(ckpt, config, nets, optimizer, mesh)
    frozen = jax.device_put(nets.load_frozen(), sharding.replicated(mesh))
    start = int(state.step)
    logging.info(
        "devices: %d (%s), processes: %d; global batch %d, per device %d; %s parameters; %s",
        mesh.size,
        jax.devices()[0].platform,
        jax.process_count(),
        config.train.global_batch_size,
        sharding.per_device_batch(config.train.global_batch_size, mesh),
        f"{count_params(state.params):,}",
        f"resuming at step {start}" if start else "starting from scratch",
    )
    log_recipe(config)
    data = pipeline.create_train_iterator(config, nets.text.tokenize, start_step=next_batch)
    layout = jax.tree.map(lambda x: x.sharding, state)
    step_fn = compile_train_step(config, nets, process, optimizer, mesh, layout)
    log = MetricLog(workdir, start, config.train.num_steps, jax.process_index() == 0)
    preemption = _Preemption()
    step, metrics = start, None
    try:
        while step < config.train.num_steps and not preemption.requested:
            batch = sharding.shard_batch(next(data), mesh)
            if step == start:
                step_fn, seconds = _compiled(
                    "train_step", config, mesh, step_fn, state, batch, frozen
                )
                log.message(
                    f"compiled the train step in {seconds:.1f} s"
                    if seconds
                    else "the train step was compiled earlier in this process"
                )
            state, metrics = step_fn(state, batch, frozen)
            step += 1
            if step % config.train.log_every == 0 or step == config.train.num_steps:
                host = _host_metrics(metrics)
                _check_finite(host, step)
                log.write(step, host)
            if step % config.train.ckpt_every == 0:
                _check_finite(_host_metrics(metrics), step)
                ckpt.save(step, state, data.step)
            if sample_grid is not None and step % config.train.sample_every == 0:
                path = sample_grid(nets, state, frozen)
                log.message(f"step {step}: samples in {path}")
        if metrics is not None:
            _check_finite(_host_metrics(metrics), step)
            ckpt.save(step, state, data.step)
        if preemption.requested:
            log.message(f"SIGTERM: saved step {step}, exiting.")
    finally:
        preemption.restore()
        data.close()
        log.close()
        ckpt.close()
    return state


def _check_finite(metrics: dict[str, float], step: int) -> None:
    """Stops the run (keeping the last good checkpoint) when the loss is not finite."""
    bad = {k: v for k, v in metrics.items() if not np.isfinite(v)}
    if bad:
        raise DivergedError(
            f"Non-finite metrics at step {step}: {bad}. Stopping; the last checkpoint in the "
            "workdir is the last good state (try a lower optim.learning_rate or optim.grad_clip)."
        )
