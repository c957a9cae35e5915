"""The networks of one experiment: the joint U-Net and its text encoder, built from the config.

Trainable parameters are one pytree ``{'unet': ..., 'text': ...}`` (``'text'`` only for a learned
text encoder). A frozen encoder's (T5) parameters live outside it, are loaded once and are passed to
the compiled step as an argument, so they get no gradients and no optimizer state.

The networks are called by the project's one convention, ``apply(params, x_t, y_t, logsnr, cond)
-> (eps_hat, logits)`` with ``apply = nets.apply`` (see ``gcd_jax.interfaces``).
"""

import dataclasses

import jax
import jax.numpy as jnp
import ml_collections

from gcd_jax.interfaces import COND_KEYS, Pair, PyTree
from gcd_jax.models import build_unet, input_specs
from gcd_jax.models.text import TextEncoder, build_text_encoder
from gcd_jax.models.unet import JointUNet


@dataclasses.dataclass(frozen=True)
class Apply:
    """``apply(params, x_t, y_t, logsnr, cond) -> (eps_hat [B, H, W, 3], logits [B, H, W, K] |
    None)``, float32: the joint U-Net with its parameters ``params['unet']`` given per call.

    Compared and hashed by value (the module's settings), so equal models share compiled programs.
    """

    unet: JointUNet

    def __call__(
        self, params: PyTree, x_t: jax.Array, y_t: jax.Array | None, logsnr: jax.Array, cond: dict
    ) -> Pair:
        unknown = set(cond) - set(COND_KEYS)
        if unknown:
            raise ValueError(
                f"Unknown conditioning inputs {sorted(unknown)}; expected {COND_KEYS}."
            )
        drop_text = cond.get("drop_text")
        if drop_text is None:
            drop_text = jnp.zeros((x_t.shape[0],), bool)
        return self.unet.apply(
            {"params": params["unet"]},
            x_t,
            y_t,
            logsnr,
            cond["text"],
            cond["text_mask"],
            drop_text,
            lowres_image=cond.get("lowres_image"),
            lowres_label=cond.get("lowres_label"),
            lowres_logsnr=cond.get("lowres_logsnr"),
        )


@dataclasses.dataclass(frozen=True)
class Networks:
    unet: JointUNet
    text: TextEncoder
    image_size: tuple[int, int]

    def init(self, key: jax.Array) -> PyTree:
        """Trainable parameters, from abstract example inputs of batch 1."""
        unet_key, text_key = jax.random.split(key)
        specs = input_specs(self.unet, 1, self.image_size, self.text.max_length, self.text.width)
        dummy = {k: None if v is None else jnp.zeros(v.shape, v.dtype) for k, v in specs.items()}
        params = {"unet": self.unet.init(unet_key, **dummy)["params"]}
        if not self.text.frozen:
            tokens = jnp.zeros((1, self.text.max_length), jnp.int32)
            mask = jnp.ones((1, self.text.max_length), bool)
            params["text"] = self.text.module.init(text_key, tokens, mask)["params"]
        return params

    def load_frozen(self) -> PyTree:
        """Pretrained parameters of a frozen text encoder; an empty dict when there is none."""
        return self.text.load_params() if self.text.frozen else {}

    def encode_text(
        self, params: PyTree, frozen: PyTree, tokens: jax.Array, mask: jax.Array
    ) -> jax.Array:
        """Text embeddings ``[B, L, D]`` from tokens int32 ``[B, L]`` and mask bool ``[B, L]``."""
        text_params = frozen if self.text.frozen else params["text"]
        text = self.text.module.apply({"params": text_params}, tokens, mask)
        return jax.lax.stop_gradient(text) if self.text.frozen else text

    @property
    def apply(self) -> Apply:
        """The one way to call the trained U-Net (see the module docstring)."""
        return Apply(self.unet)


def build_networks(config: ml_collections.ConfigDict) -> Networks:
    return Networks(
        unet=build_unet(config),
        text=build_text_encoder(config),
        image_size=tuple(config.data.image_size),
    )


def count_params(params: PyTree) -> int:
    return sum(x.size for x in jax.tree.leaves(params))
