"""The train state (one pytree that Orbax saves as is), its optimizer and its initialisation."""

from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import optax

from gcd_jax.errors import ConfigError
from gcd_jax.models.networks import Networks

PyTree = Any


@flax.struct.dataclass
class TrainState:
    """Everything a run needs to continue exactly: Orbax saves it as is.

    ``key`` holds raw ``uint32`` key data (``jax.random.key_data``) so that it serialises.
    """

    step: jax.Array  # int32 []
    params: PyTree
    ema_params: PyTree
    opt_state: PyTree
    key: jax.Array


MOMENT_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def scale_by_adam_stored(b1: float, b2: float, eps: float, dtype) -> optax.GradientTransformation:
    """``optax.scale_by_adam`` with both moments *stored* in ``dtype`` (e.g. bfloat16: half their
    memory), updated in float32 and applied as stored. The state is ``optax.ScaleByAdamState``, the
    same tree as ``optax.adam``'s, so a checkpoint restores across moment dtypes (cast)."""

    def init(params):
        def zeros(p):
            return jnp.zeros(p.shape, dtype)

        count = jnp.zeros([], jnp.int32)
        return optax.ScaleByAdamState(
            count, jax.tree.map(zeros, params), jax.tree.map(zeros, params)
        )

    def update(updates, state, params=None):
        del params
        count = optax.safe_int32_increment(state.count)
        f32 = jnp.float32
        mu = jax.tree.map(
            lambda g, m: b1 * m.astype(f32) + (1 - b1) * g.astype(f32), updates, state.mu
        )
        nu = jax.tree.map(
            lambda g, v: b2 * v.astype(f32) + (1 - b2) * jnp.square(g.astype(f32)),
            updates,
            state.nu,
        )
        stored = optax.ScaleByAdamState(
            count, *(jax.tree.map(lambda x: x.astype(dtype), t) for t in (mu, nu))
        )
        # The update reads the moments as stored (rounded to ``dtype``), not their float32
        # values before rounding as optax's ``mu_dtype`` does: the stored moments are written
        # in place, so the float32 ones would be one more parameter-sized tree held by XLA
        # (1.8 GiB of the base step's plan). The difference is ``dtype``'s rounding.
        c1, c2 = 1 - b1 ** count.astype(f32), 1 - b2 ** count.astype(f32)
        out = jax.tree.map(
            lambda g, m, v: (m.astype(f32) / c1 / (jnp.sqrt(v.astype(f32) / c2) + eps)).astype(
                g.dtype
            ),
            updates,
            stored.mu,
            stored.nu,
        )
        return out, stored

    return optax.GradientTransformation(init, update)


def make_optimizer(optim: ml_collections.ConfigDict) -> optax.GradientTransformation:
    """Adam (reference settings) with optional linear warm-up and global-norm clipping; moments
    stored in ``optim.moment_dtype``."""
    if optim.moment_dtype not in MOMENT_DTYPES:
        raise ConfigError(
            f"optim.moment_dtype must be one of {sorted(MOMENT_DTYPES)}, got {optim.moment_dtype!r}"
        )
    learning_rate: Any = optim.learning_rate
    if optim.warmup_steps > 0:
        learning_rate = optax.linear_schedule(0.0, optim.learning_rate, optim.warmup_steps)
    if optim.moment_dtype == "float32":
        adam = optax.adam(learning_rate, b1=optim.b1, b2=optim.b2, eps=optim.eps)
    else:
        dtype = MOMENT_DTYPES[optim.moment_dtype]
        adam = optax.chain(
            scale_by_adam_stored(optim.b1, optim.b2, optim.eps, dtype),
            optax.scale_by_learning_rate(learning_rate),
        )
    if optim.grad_clip > 0:
        return optax.chain(optax.clip_by_global_norm(optim.grad_clip), adam)
    return adam


def _ema_pytorch(optim: ml_collections.ConfigDict, step: jax.Array) -> jax.Array:
    # ema-pytorch 0.2.3's EMA.update(), called once after every optimizer step (its counter is
    # our ``step``): nothing unless step % every == 0; a copy while step <= after, and again at
    # the first update after it (``initted``); then lerp with 1 - (1 + step - after)^-power.
    every, after = optim.ema_update_every, optim.ema_update_after
    first_update = (after // every + 1) * every
    step = step.astype(jnp.float32)
    ramp = 1.0 - (1.0 + step - after) ** (-optim.ema_power)
    decay = jnp.clip(ramp, 0.0, optim.ema_decay)
    decay = jnp.where(step <= first_update, 0.0, decay)
    return jnp.where(jnp.mod(step, every) == 0, decay, 1.0)


def _ema_warmup(optim: ml_collections.ConfigDict, step: jax.Array) -> jax.Array:
    return jnp.minimum(optim.ema_decay, (1.0 + step) / (10.0 + step))


def _ema_constant(optim: ml_collections.ConfigDict, step: jax.Array) -> jax.Array:
    return jnp.full((), optim.ema_decay, jnp.float32)


# ``config.optim.ema_schedule`` -> decay rule; see experiments/base.py.
EMA_SCHEDULES = {"ema_pytorch": _ema_pytorch, "warmup": _ema_warmup, "constant": _ema_constant}


def ema_decay(optim: ml_collections.ConfigDict, step: jax.Array) -> jax.Array:
    """The decay of the EMA update after optimizer step ``step`` (int32 ``[]``, the steps done
    before it): ``ema <- decay · ema + (1 − decay) · params``; 1 leaves the EMA as it is, 0 copies
    the parameters. float32 ``[]``."""
    if optim.ema_schedule not in EMA_SCHEDULES:
        raise ConfigError(
            f"Unknown optim.ema_schedule {optim.ema_schedule!r}; expected one of "
            f"{sorted(EMA_SCHEDULES)}."
        )
    return EMA_SCHEDULES[optim.ema_schedule](optim, jnp.asarray(step)).astype(jnp.float32)


def ema_update(
    optim: ml_collections.ConfigDict, step: jax.Array, ema_params: PyTree, params: PyTree
) -> PyTree:
    """The EMA parameters after optimizer step ``step`` gave ``params`` (see ``ema_decay``)."""
    decay = ema_decay(optim, step)
    return jax.tree.map(lambda e, p: decay * e + (1.0 - decay) * p, ema_params, params)


def describe_ema(optim: ml_collections.ConfigDict) -> str:
    """One line naming the EMA rule and its settings, for the run's first log lines."""
    if optim.ema_schedule == "ema_pytorch":
        return (
            f"EMA ema_pytorch (every {optim.ema_update_every} steps after step "
            f"{optim.ema_update_after}, decay min({optim.ema_decay}, 1 - (1 + s - "
            f"{optim.ema_update_after})^-{optim.ema_power:.4g}))"
        )
    return f"EMA {optim.ema_schedule} (decay {optim.ema_decay})"


def init_state(
    key: jax.Array, nets: Networks, optimizer: optax.GradientTransformation
) -> TrainState:
    params_key, state_key = jax.random.split(key)
    params = nets.init(params_key)
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        ema_params=jax.tree.map(jnp.copy, params),
        opt_state=optimizer.init(params),
        key=jax.random.key_data(state_key),
    )


def abstract_state(nets: Networks, optimizer: optax.GradientTransformation) -> TrainState:
    """The shapes and dtypes of ``init_state`` (``jax.ShapeDtypeStruct`` leaves), computed without
    allocating anything: the restore target of a checkpoint."""
    return jax.eval_shape(lambda k: init_state(k, nets, optimizer), jax.random.key(0))
