"""Training: the train state, the optimizer, the data-parallel step and the loop.

``train_step(state, batch, frozen) -> (state, metrics)`` is pure: ``gradient_step`` then
``update_step``, jitted as one program or two (``train.step_programs``), with the state donated;
the batch is sharded over the ``data`` mesh axis and the state replicated or FSDP-sharded, so the
same code runs on one CPU, eight fake CPU devices, a GPU box or a TPU pod slice.
"""

import collections
import concurrent.futures
import dataclasses
import functools
import os
import signal
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging

from gcd_jax import sharding, viz
from gcd_jax.data import classes, pipeline
from gcd_jax.diffusion import joint
from gcd_jax.errors import ConfigError, DivergedError
from gcd_jax.inference import generation
from gcd_jax.models.networks import Networks, build_networks, count_params
from gcd_jax.training import checkpoint, train_state
from gcd_jax.training.metric_log import MetricLog
from gcd_jax.training.train_state import TrainState, init_state, make_optimizer

PyTree = Any


def _micro_batches(batch: dict, num: int) -> dict:
    """``[B, ...]`` -> ``[num, B / num, ...]``; micro-batch i takes rows i, i + num, ..., so every
    micro-batch keeps an equal share on each device of the data axis."""
    return jax.tree.map(lambda x: x.reshape(-1, num, *x.shape[1:]).swapaxes(0, 1), batch)


def gradient_step(
    state: TrainState,
    batch: dict[str, jax.Array],
    frozen: PyTree,
    *,
    nets: Networks,
    process: joint.Process,
    config: ml_collections.ConfigDict,
) -> tuple[PyTree, dict[str, jax.Array]]:
    """The gradient of the mean loss over the global batch ``{image, label, tokens, mask,
    has_text}`` (averaged over ``train.grad_accum_steps`` micro-batches) and the loss metrics
    (means over the batch).

    RNG: ``fold_in(state.key, step)``, then per micro-batch; the process splits it by purpose.
    """
    key = jax.random.fold_in(jax.random.wrap_key_data(state.key), state.step)
    num_micro = config.train.grad_accum_steps

    def loss_fn(params, micro, micro_key):
        text = nets.encode_text(params, frozen, micro["tokens"], micro["mask"])
        inputs = dict(micro, text=text)
        per_example = joint.loss(process, nets.apply, params, inputs, micro_key)  # [B]
        return jnp.mean(per_example["loss"]), per_example

    grad_fn = jax.grad(loss_fn, has_aux=True)
    if num_micro == 1:
        grads, per_example = grad_fn(state.params, batch, key)
    else:

        def accumulate(total, xs):
            micro, i = xs
            grads, per_example = grad_fn(state.params, micro, jax.random.fold_in(key, i))
            return jax.tree.map(jnp.add, total, grads), per_example

        zeros = jax.tree.map(jnp.zeros_like, state.params)
        grads, per_example = jax.lax.scan(
            accumulate, zeros, (_micro_batches(batch, num_micro), jnp.arange(num_micro))
        )
        grads = jax.tree.map(lambda g: g / num_micro, grads)
    return grads, {name: jnp.mean(value) for name, value in per_example.items()}


def update_step(
    state: TrainState,
    grads: PyTree,
    *,
    optimizer: optax.GradientTransformation,
    config: ml_collections.ConfigDict,
) -> tuple[TrainState, dict[str, jax.Array]]:
    """The optimizer step and the EMA update with ``grads``; the norm metrics when
    ``train.norm_metrics``."""
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    ema_params = train_state.ema_update(config.optim, state.step, state.ema_params, params)
    metrics = {}
    # No norm of ``updates``: reading them besides the in-place parameter update makes XLA keep
    # the whole update tree, one more parameter-sized buffer (2.2 GiB of the base step's plan).
    if config.train.norm_metrics:
        group = NORM_GROUP_BYTES
        if config.train.shard_state:  # concatenate replicated arrays only
            group = min(group, config.train.shard_min_bytes)
        metrics.update(grad_norm=global_norm(grads, group), param_norm=global_norm(params, group))
    new_state = state.replace(
        step=state.step + 1, params=params, ema_params=ema_params, opt_state=opt_state
    )
    return new_state, metrics


# ``global_norm``'s groups: under 1 MiB and at most 32 arrays (see there).
NORM_GROUP_BYTES, NORM_GROUP_ARRAYS = 2**20, 32


def global_norm(
    tree: PyTree, group_bytes: int = NORM_GROUP_BYTES, group_arrays: int = NORM_GROUP_ARRAYS
) -> jax.Array:
    """The 2-norm of all of ``tree``'s entries, in float32: one reduction per group of leaves,
    raveled and concatenated in order into groups of under ``group_bytes`` (stored size) and at
    most ``group_arrays`` leaves; a leaf of ``group_bytes`` or more is reduced alone, as it is.
    ``optax.tree.norm`` (a reduction per array, a chain of scalar adds) is ~5 kernels per array
    on XLA:CPU; grouped, the base step's update (1,107 arrays, 233 of 1 MiB or more) compiled in
    12.7 instead of 22.9 s and ran as fast (1.0 s). Larger groups compile faster and run slower
    (64 MiB groups: 7.0 s, 2.0 s per update); one concatenation of the whole tree is
    materialised (2.7 GiB; README). Leaves under ``train.shard_min_bytes`` are replicated, so
    with ``group_bytes`` at most that only unsharded arrays are concatenated."""
    total = jnp.zeros((), jnp.float32)
    group, size = [], 0

    def add(total, group):
        if len(group) == 1:  # as it is: raveling a sharded array would gather it
            x = group[0].astype(jnp.float32)
        else:
            x = jnp.concatenate([jnp.ravel(g).astype(jnp.float32) for g in group])
        return total + jnp.sum(jnp.square(x))

    for x in jax.tree.leaves(tree):
        nbytes = x.size * np.dtype(x.dtype).itemsize
        if group and (size + nbytes >= group_bytes or len(group) == group_arrays):
            total, group, size = add(total, group), [], 0
        group.append(x)
        size += nbytes
    if group:
        total = add(total, group)
    return jnp.sqrt(total)


def train_step(
    state: TrainState,
    batch: dict[str, jax.Array],
    frozen: PyTree,
    *,
    nets: Networks,
    process: joint.Process,
    optimizer: optax.GradientTransformation,
    config: ml_collections.ConfigDict,
) -> tuple[TrainState, dict[str, jax.Array]]:
    """One optimizer step on the global batch: ``gradient_step`` then ``update_step``, as one
    function. Returns the new state and scalar metrics (loss means over the batch, norms)."""
    return _gradient_then_update(
        functools.partial(gradient_step, nets=nets, process=process, config=config),
        functools.partial(update_step, optimizer=optimizer, config=config),
        state,
        batch,
        frozen,
    )


def _gradient_then_update(gradient, update, state, batch, frozen):
    """``update(state, gradients)`` after ``gradient(state, batch, frozen)``; metrics merged."""
    grads, metrics = gradient(state, batch, frozen)
    state, more = update(state, grads)
    return state, {**metrics, **more}


def peak_bytes(memory) -> int:
    """The peak device memory of a compiled program from its ``memory_analysis()``: arguments +
    outputs that do not reuse (alias) an argument + temporaries."""
    return (
        memory.argument_size_in_bytes
        + memory.output_size_in_bytes
        - memory.alias_size_in_bytes
        + memory.temp_size_in_bytes
    )


@dataclasses.dataclass(frozen=True)
class SplitTrainStep:
    """The train step as two programs (``train.step_programs``): ``gradient`` (state, batch, frozen)
    -> (gradients, loss metrics) and ``update`` (state, gradients) -> (state, norm metrics), the
    second donating the state. Holds the pair jitted or compiled and is used like the one-program
    ``jax.jit`` step: called, or ``lower(...).compile()``d, the update compiling in a background
    thread while the gradient is traced and compiled (XLA releases the GIL while it compiles)."""

    gradient: Any
    update: Any

    def __call__(self, state, batch, frozen):
        return _gradient_then_update(self.gradient, self.update, state, batch, frozen)

    def lower(self, state, batch, frozen) -> "_LoweredSplitStep":
        # The gradients have the parameters' shapes, dtypes and shardings.
        update = self.update.lower(state, state.params)
        pool = concurrent.futures.ThreadPoolExecutor(1)
        pending = pool.submit(update.compile)
        pool.shutdown(wait=False)
        return _LoweredSplitStep(self.gradient.lower(state, batch, frozen), pending)

    def __iter__(self):
        return iter((self.gradient, self.update))

    def memory_analysis(self):
        """``memory_analysis()`` of the program with the larger ``peak_bytes``; the gradients are
        the first's output and the second's argument."""
        return max((p.memory_analysis() for p in self), key=peak_bytes)

    def cost_analysis(self) -> dict[str, float]:
        """The two programs' FLOPs, summed."""
        return {"flops": sum(p.cost_analysis()["flops"] for p in self)}


@dataclasses.dataclass(frozen=True)
class _LoweredSplitStep:
    """``SplitTrainStep.lower``'s result: the lowered gradient, the update's compile under way."""

    gradient: Any
    update: concurrent.futures.Future

    def compile(self) -> SplitTrainStep:
        return SplitTrainStep(self.gradient.compile(), self.update.result())


STEP_PROGRAMS = ("one", "two", "auto")


def step_programs(config: ml_collections.ConfigDict) -> str:
    """``train.step_programs`` resolved: 'one' or 'two' ('auto': two on CPU, where XLA's compile
    is the slow part, one on GPU/TPU, where the device memory is the limit; README)."""
    programs = config.train.step_programs
    if programs not in STEP_PROGRAMS:
        raise ConfigError(
            f"Unknown train.step_programs {programs!r}; expected one of {sorted(STEP_PROGRAMS)}."
        )
    if programs == "auto":
        return "two" if jax.default_backend() == "cpu" else "one"
    return programs


def compile_train_step(
    config: ml_collections.ConfigDict,
    nets: Networks,
    process: joint.Process,
    optimizer: optax.GradientTransformation,
    mesh: jax.sharding.Mesh,
    state_layout: Any = None,
) -> Any:
    """``jit`` of ``train_step``, or for two ``train.step_programs`` a ``SplitTrainStep``, with
    the batch sharded over ``data``, the state laid out by ``state_layout`` (default
    ``state_shardings``; pass those of a state already built to skip tracing the init again) and
    donated, the rest replicated."""
    replicated = sharding.replicated(mesh)
    state = state_layout
    if state is None:
        state = state_shardings(config, nets, optimizer, mesh)
    batch = sharding.batch_sharded(mesh)
    if step_programs(config) == "one":
        step_fn = functools.partial(
            train_step, nets=nets, process=process, optimizer=optimizer, config=config
        )
        return jax.jit(
            step_fn,
            in_shardings=(state, batch, replicated),
            out_shardings=(state, replicated),
            donate_argnums=0,
        )
    gradient = jax.jit(
        functools.partial(gradient_step, nets=nets, process=process, config=config),
        in_shardings=(state, batch, replicated),
        out_shardings=(state.params, replicated),
        # The EMA and the moments it does not read stay on the device while it runs: kept as
        # arguments, its memory_analysis() counts them.
        keep_unused=True,
    )
    update = jax.jit(
        functools.partial(update_step, optimizer=optimizer, config=config),
        in_shardings=(state, state.params),
        out_shardings=(state, replicated),
        donate_argnums=0,  # every output already reuses a state buffer: the gradients are not
    )
    return SplitTrainStep(gradient, update)


def state_target(config, nets, optimizer, mesh: jax.sharding.Mesh) -> Any:
    """The train state's shapes and dtypes with their shardings (``ShapeDtypeStruct`` leaves):
    replicated, or FSDP over ``data`` with ``config.train.shard_state`` (arrays of at least
    ``train.shard_min_bytes``). The restore target of a checkpoint and the step's state layout."""
    abstract = train_state.abstract_state(nets, optimizer)
    shardings = sharding.state_shardings(
        abstract, mesh, config.train.shard_state, config.train.shard_min_bytes
    )
    return jax.tree.map(
        lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, shardings
    )


def state_shardings(config, nets, optimizer, mesh: jax.sharding.Mesh) -> Any:
    """The shardings of ``state_target``."""
    return jax.tree.map(lambda a: a.sharding, state_target(config, nets, optimizer, mesh))


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


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> TrainState:
    """Trains (or resumes training in ``workdir``) until ``config.train.num_steps``.

    Writes checkpoints every ``train.ckpt_every`` steps and at exit (also on SIGTERM), metrics every
    ``train.log_every`` steps, and sample grids every ``train.sample_every`` steps.
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
    sample_inputs = _sample_inputs(config)
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
            if sample_inputs[0] and step % config.train.sample_every == 0:
                path = _sample_grid(config, nets, state, frozen, sample_inputs, workdir)
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


def _sample_inputs(config: ml_collections.ConfigDict) -> tuple[list[str], generation.Pair | None]:
    """Captions of the first ``train.num_sample_images`` held-out examples (none if disabled) and,
    for an SR model, their own image and layout resized down as the SR condition is."""
    if not config.train.sample_every:
        return [], None
    examples = pipeline.load_eval_examples(config, config.train.num_sample_images)
    prompts = [str(c) for c in examples["captions"]]
    lowres = None
    if config.model.sr:
        lowres = generation.lowres_from_data(config, examples["image"], examples["label"])
    return prompts, lowres


def _sample_grid(config, nets, state, frozen, inputs, workdir) -> str:
    """Samples the prompts with the EMA parameters; writes ``samples/step_{N}.png``."""
    step = int(state.step)
    model = generation.from_state(config, nets, state.ema_params, frozen, step)
    prompts, lowres = inputs
    images, layouts = generation.generate(model, prompts, jax.random.key(step), lowres=lowres)
    path = os.path.join(workdir, "samples", f"step_{step:07d}.png")
    if jax.process_index() == 0:
        info = classes.dataset_info(config.data.name)
        grid = viz.pair_grid(images, layouts, info.palette, prompts, info.class_names)
        viz.save_png(path, grid)
    return path


def _check_finite(metrics: dict[str, float], step: int) -> None:
    """Stops the run (keeping the last good checkpoint) when the loss is not finite."""
    bad = {k: v for k, v in metrics.items() if not np.isfinite(v)}
    if bad:
        raise DivergedError(
            f"Non-finite metrics at step {step}: {bad}. Stopping; the last checkpoint in the "
            "workdir is the last good state (try a lower optim.learning_rate or optim.grad_clip)."
        )
