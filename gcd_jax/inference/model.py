"""A trained model ready to sample: its config, networks, sampling parameters and sampler.

``load`` restores only the parameters a sampler needs (EMA or raw, by an Orbax partial restore;
never the optimizer state); ``from_state`` wraps parameters in memory (the training-time grids).
"""

import dataclasses

import jax
import jax.numpy as jnp
import ml_collections
from jax.sharding import Mesh

from gcd_jax import sharding
from gcd_jax.diffusion import sampling
from gcd_jax.interfaces import PyTree
from gcd_jax.models.networks import Networks, build_networks
from gcd_jax.training import checkpoint


@dataclasses.dataclass(frozen=True)
class Model:
    """One trained stage: its config, networks, sampling parameters (the trainable tree: EMA or
    raw), the frozen text encoder's parameters, the checkpoint step, and the sampler its config
    gives (``sampling.Sampler.from_config``; tests may pass another)."""

    config: ml_collections.ConfigDict
    nets: Networks
    params: PyTree
    frozen: PyTree
    step: int
    sampler: sampling.Sampler

    @property
    def sr(self) -> bool:
        return bool(self.config.model.sr)

    def text_condition(self, prompts: list[str]) -> dict[str, jax.Array]:
        """``{'text': [B, L, D], 'text_mask': [B, L]}`` for ``prompts``."""
        tokens, mask = self.nets.text.tokenize(prompts)
        text = self.nets.encode_text(self.params, self.frozen, tokens, mask)
        return {"text": text, "text_mask": jnp.asarray(mask)}

    def with_steps(self, num_steps: int) -> "Model":
        """The same model sampling with ``num_steps`` steps (the page's slider)."""
        config = ml_collections.ConfigDict(self.config.to_dict())
        config.sample.num_steps = int(num_steps)
        return from_state(config, self.nets, self.params, self.frozen, self.step)


def from_state(config: ml_collections.ConfigDict, nets: Networks, params, frozen, step) -> Model:
    """A ``Model`` from parameters in memory (e.g. the EMA parameters of a running training)."""
    return Model(config, nets, params, frozen, int(step), sampling.Sampler.from_config(config))


def load(
    config: ml_collections.ConfigDict,
    workdir: str,
    step: int | None = None,
    mesh: Mesh | None = None,
) -> Model:
    """Restores the sampling parameters at ``step`` (default: latest) of ``workdir``: EMA when
    ``config.sample.use_ema``, else the raw parameters, replicated over ``mesh``. Raises
    ``MissingError`` when there is no such checkpoint (listing the steps there are),
    ``CheckpointError`` when it was made with another model or cannot be read back (naming the
    cause and the other steps)."""
    mesh = sharding.make_mesh() if mesh is None else mesh
    nets = build_networks(config)
    ckpt = checkpoint.Checkpointer(workdir, config, create=False)
    try:
        step = ckpt.resolve_step(step)
        replicated = sharding.replicated(mesh)
        abstract = jax.tree.map(
            lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=replicated),
            jax.eval_shape(nets.init, jax.random.key(0)),
        )
        field = "ema_params" if config.sample.use_ema else "params"
        params = ckpt.restore_params(abstract, step, field)
    finally:
        ckpt.close()
    return from_state(config, nets, params, nets.load_frozen(), step)
