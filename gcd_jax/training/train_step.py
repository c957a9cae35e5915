"""The data-parallel train step.

``train_step(state, batch, frozen) -> (state, metrics)`` is pure: ``gradient_step`` then
``update_step``, jitted as one program or two (``train.step_programs``), with the state donated;
the batch is sharded over the ``data`` mesh axis and the state replicated or FSDP-sharded, so the
same code runs on one CPU, eight fake CPU devices, a GPU box or a TPU pod slice.
"""

import concurrent.futures
import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from gcd_jax import sharding
from gcd_jax.diffusion import joint
from gcd_jax.errors import ConfigError
from gcd_jax.interfaces import PyTree
from gcd_jax.models.networks import Networks
from gcd_jax.training import train_state
from gcd_jax.training.train_state import TrainState


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

    Text: the batch's ``tokens`` go through the text encoder; a batch may instead carry the
    encoder's output, ``text`` float ``[B, L, D]`` (embeddings computed beforehand, as the
    authors' step takes ``text_embeds``), which the step uses as given. ``mask`` marks the real
    positions either way.

    RNG: ``fold_in(state.key, step)``, then per micro-batch; the process splits it by purpose.
    """
    if ("text" in batch) == ("tokens" in batch):
        raise ValueError(f"A train batch has 'tokens' or 'text', one of them; got {sorted(batch)}.")
    key = jax.random.fold_in(jax.random.wrap_key_data(state.key), state.step)
    num_micro = config.train.grad_accum_steps

    def loss_fn(params, micro, micro_key):
        inputs = dict(micro)
        if "tokens" in micro:
            inputs["text"] = nets.encode_text(params, frozen, inputs.pop("tokens"), micro["mask"])
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
