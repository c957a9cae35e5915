"""The train state (one pytree that Orbax saves as is), its optimizer and its initialisation."""

from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import optax

from gcd_jax.networks import Networks

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


def make_optimizer(optim: ml_collections.ConfigDict) -> optax.GradientTransformation:
    """Adam (reference settings) with optional linear warm-up and global-norm clipping."""
    learning_rate: Any = optim.learning_rate
    if optim.warmup_steps > 0:
        learning_rate = optax.linear_schedule(0.0, optim.learning_rate, optim.warmup_steps)
    adam = optax.adam(learning_rate, b1=optim.b1, b2=optim.b2, eps=optim.eps)
    if optim.grad_clip > 0:
        return optax.chain(optax.clip_by_global_norm(optim.grad_clip), adam)
    return adam


def ema_decay(optim: ml_collections.ConfigDict, step: jax.Array) -> jax.Array:
    """``min(decay, (1 + step) / (10 + step))`` with warm-up, else the constant decay."""
    if optim.ema_warmup:
        return jnp.minimum(optim.ema_decay, (1.0 + step) / (10.0 + step))
    return jnp.asarray(optim.ema_decay, jnp.float32)


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
