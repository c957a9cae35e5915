"""A frozen T5 encoder in Flax linen that loads Hugging Face ``safetensors`` checkpoints.

``transformers`` 5.x ships no Flax models, so the encoder is written here and fed with the published
PyTorch weights. It covers T5 v1.0 (``t5-large``: ReLU feed-forward) and v1.1 / FLAN-T5
(``feed_forward_proj='gated-gelu'``). Architecture, as in the reference implementation:

- token embedding ``shared`` (not scaled), no absolute positions;
- per layer: RMS norm -> self-attention -> residual, RMS norm -> feed-forward -> residual;
- attention logits are NOT scaled by 1/sqrt(d_kv) (the scale is folded into the initialisation) and
  get a learned relative-position bias over bidirectional log-spaced buckets; the bias table
  lives in the first layer and is shared by all layers;
- a final RMS norm. Dropout is omitted: the encoder is only run for inference.

Parameters (``[in, out]`` kernels) are read from ``config.json`` + ``model.safetensors`` of a local
folder or of the local Hugging Face cache; nothing is downloaded.
"""

import dataclasses
import json
import pathlib
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import huggingface_hub
import jax
import jax.numpy as jnp
import numpy as np
import safetensors
from flax import traverse_util

from gcd_jax.errors import InputError, MissingError

PyTree = dict[str, Any]

# What a hub T5 folder needs here; repos such as t5-large also hold PyTorch, TF, Flax and ONNX
# copies of the weights that would multiply the download.
_FETCH_FILES = "--include '*.json' '*.safetensors' spiece.model"


def _gelu_tanh(x: jax.Array) -> jax.Array:
    return jax.nn.gelu(x, approximate=True)


# config.json's `feed_forward_proj` -> (activation, gated). Hugging Face runs 'gated-gelu' with
# 'gelu_new', the tanh approximation.
_FEED_FORWARDS: dict[str, tuple[Callable[[jax.Array], jax.Array], bool]] = {
    "relu": (jax.nn.relu, False),
    "gated-gelu": (_gelu_tanh, True),
}

# Hugging Face T5Config defaults of the fields that old config.json files (t5-large's, 2020) omit.
_CONFIG_DEFAULTS = {
    "relative_attention_num_buckets": 32,
    "relative_attention_max_distance": 128,
    "feed_forward_proj": "relu",
    "layer_norm_epsilon": 1e-6,
}


@dataclasses.dataclass(frozen=True)
class T5Config:
    """Architecture hyper-parameters, named as in Hugging Face's ``config.json``."""

    vocab_size: int
    d_model: int
    d_kv: int
    d_ff: int
    num_layers: int
    num_heads: int
    relative_attention_num_buckets: int
    relative_attention_max_distance: int
    feed_forward_proj: str  # A key of _FEED_FORWARDS.
    layer_norm_epsilon: float


def read_config(folder: pathlib.Path) -> T5Config:
    """Reads ``folder/config.json``; fields absent from old checkpoints take Hugging Face defaults.

    Parsed as JSON rather than with ``transformers.T5Config``, which imports PyTorch when present.
    """
    path = folder / "config.json"
    if not path.is_file():
        raise MissingError(f"No config.json in T5 folder {folder}.")
    fields = {**_CONFIG_DEFAULTS, **json.loads(path.read_text())}
    names = [f.name for f in dataclasses.fields(T5Config)]
    missing = [name for name in names if name not in fields]
    if missing:
        raise InputError(f"{path} lacks T5 hyper-parameters {missing}.")
    config = T5Config(**{name: fields[name] for name in names})
    if config.feed_forward_proj not in _FEED_FORWARDS:
        raise InputError(
            f"Unsupported feed_forward_proj {config.feed_forward_proj!r} in {path}; "
            f"supported: {sorted(_FEED_FORWARDS)}."
        )
    return config


def relative_position_buckets(length: int, num_buckets: int, max_distance: int) -> np.ndarray:
    """Bidirectional T5 buckets of ``key - query`` offsets: ``[L, L]`` int32 in [0, num_buckets).

    Half the buckets hold positive offsets. Within a half, offsets below ``num_buckets // 4`` get a
    bucket each, larger ones share log-spaced buckets up to ``max_distance``. Computed in numpy
    float32 at trace time (the length is static), like the reference's float32 arithmetic.
    """
    offset = np.arange(length)[None, :] - np.arange(length)[:, None]
    half = num_buckets // 2
    bucket = np.where(offset > 0, half, 0)
    distance = np.abs(offset)
    max_exact = half // 2
    ratio = np.maximum(distance, 1).astype(np.float32) / np.float32(max_exact)
    log_bucket = max_exact + (
        np.log(ratio) / np.float32(np.log(max_distance / max_exact)) * np.float32(half - max_exact)
    ).astype(np.int64)
    log_bucket = np.minimum(log_bucket, half - 1)
    return (bucket + np.where(distance < max_exact, distance, log_bucket)).astype(np.int32)


class T5LayerNorm(nn.Module):
    """RMS norm ``x / sqrt(mean(x^2) + eps) * scale``: no mean subtraction or bias; f32 variance."""

    epsilon: float

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        scale = self.param("scale", nn.initializers.ones, (x.shape[-1],))
        variance = jnp.mean(jnp.square(x.astype(jnp.float32)), axis=-1, keepdims=True)
        return scale * (x * jax.lax.rsqrt(variance + self.epsilon))


class T5SelfAttention(nn.Module):
    """Unscaled multi-head self-attention with an additive position bias."""

    config: T5Config

    @nn.compact
    def __call__(self, x: jax.Array, position_bias: jax.Array, mask: jax.Array) -> jax.Array:
        """x ``[B, L, D]``, position_bias ``[H, L, L]``, mask ``[B, L]`` (True = token).

        Returns ``[B, L, D]``; padding keys get zero weight.
        """
        c = self.config
        heads = lambda name: nn.Dense(c.num_heads * c.d_kv, use_bias=False, name=name)(x).reshape(
            *x.shape[:2], c.num_heads, c.d_kv
        )
        q, k, v = heads("q"), heads("k"), heads("v")
        logits = jnp.einsum("bqhd,bkhd->bhqk", q, k) + position_bias
        logits = jnp.where(mask[:, None, None, :], logits, jnp.finfo(logits.dtype).min)
        weights = jax.nn.softmax(logits, axis=-1)
        out = jnp.einsum("bhqk,bkhd->bqhd", weights, v).reshape(*x.shape[:2], -1)
        return nn.Dense(c.d_model, use_bias=False, name="o")(out)


class T5FeedForward(nn.Module):
    """``act(x W_i) W_o`` (v1.0) or ``(act(x W_i0) * x W_i1) W_o`` (v1.1, gated)."""

    config: T5Config

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        c = self.config
        dense = lambda features, name: nn.Dense(features, use_bias=False, name=name)
        act, gated = _FEED_FORWARDS[c.feed_forward_proj]
        if gated:
            hidden = act(dense(c.d_ff, "wi_0")(x)) * dense(c.d_ff, "wi_1")(x)
        else:
            hidden = act(dense(c.d_ff, "wi")(x))
        return dense(c.d_model, "wo")(hidden)


class T5Block(nn.Module):
    """Pre-norm residual self-attention then feed-forward."""

    config: T5Config

    @nn.compact
    def __call__(self, x: jax.Array, position_bias: jax.Array, mask: jax.Array) -> jax.Array:
        eps = self.config.layer_norm_epsilon
        h = T5LayerNorm(eps, name="attention_norm")(x)
        x = x + T5SelfAttention(self.config, name="attention")(h, position_bias, mask)
        h = T5LayerNorm(eps, name="ffn_norm")(x)
        return x + T5FeedForward(self.config, name="ffn")(h)


class T5Encoder(nn.Module):
    """T5 encoder stack: ``tokens int32 [B, L], mask bool [B, L] -> float32 [B, L, d_model]``.

    Outputs at padding positions (mask False) are zero; padding keys are ignored by attention.
    """

    config: T5Config

    @nn.compact
    def __call__(self, tokens: jax.Array, mask: jax.Array) -> jax.Array:
        c = self.config
        x = nn.Embed(c.vocab_size, c.d_model, name="shared")(tokens)
        buckets = relative_position_buckets(
            tokens.shape[1], c.relative_attention_num_buckets, c.relative_attention_max_distance
        )
        bias_table = nn.Embed(c.relative_attention_num_buckets, c.num_heads, name="relative_bias")
        position_bias = jnp.transpose(bias_table(buckets), (2, 0, 1))  # [H, L, L]
        for i in range(c.num_layers):
            x = T5Block(c, name=f"block_{i}")(x, position_bias, mask)
        x = T5LayerNorm(c.layer_norm_epsilon, name="final_norm")(x)
        return jnp.where(mask[..., None], x, 0.0)


def _checkpoint_names(config: T5Config) -> dict[tuple[str, ...], tuple[str, bool]]:
    """Flax param path -> (Hugging Face tensor name, transpose?: torch Linear is [out, in])."""
    names = {
        ("shared", "embedding"): ("shared.weight", False),
        ("relative_bias", "embedding"): (
            "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight",
            False,
        ),
        ("final_norm", "scale"): ("encoder.final_layer_norm.weight", False),
    }
    ffn = ("wi_0", "wi_1", "wo") if _FEED_FORWARDS[config.feed_forward_proj][1] else ("wi", "wo")
    for i in range(config.num_layers):
        hf, block = f"encoder.block.{i}.layer", f"block_{i}"
        names[(block, "attention_norm", "scale")] = (f"{hf}.0.layer_norm.weight", False)
        names[(block, "ffn_norm", "scale")] = (f"{hf}.1.layer_norm.weight", False)
        for proj in ("q", "k", "v", "o"):
            names[(block, "attention", proj, "kernel")] = (
                f"{hf}.0.SelfAttention.{proj}.weight",
                True,
            )
        for proj in ffn:
            names[(block, "ffn", proj, "kernel")] = (f"{hf}.1.DenseReluDense.{proj}.weight", True)
    return names


def _safetensors_files(folder: pathlib.Path) -> dict[str, pathlib.Path]:
    """Tensor name -> file holding it, for a single or a sharded (indexed) checkpoint."""
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        weight_map = json.loads(index.read_text())["weight_map"]
        return {name: folder / file for name, file in weight_map.items()}
    single = folder / "model.safetensors"
    if not single.is_file():
        raise MissingError(
            f"No model.safetensors (or model.safetensors.index.json) in T5 folder {folder}."
        )
    with safetensors.safe_open(str(single), framework="numpy") as f:
        return dict.fromkeys(f.keys(), single)


def load_params(folder: pathlib.Path, config: T5Config) -> PyTree:
    """Reads the encoder weights of a Hugging Face T5 checkpoint as a float32 Flax param tree.

    Raises a ValueError listing every missing tensor and every shape mismatch.
    """
    expected = traverse_util.flatten_dict(
        jax.eval_shape(
            T5Encoder(config).init,
            jax.random.key(0),
            jnp.zeros((1, 1), jnp.int32),
            jnp.ones((1, 1), bool),
        )["params"]
    )
    files = _safetensors_files(folder)
    names = _checkpoint_names(config)
    missing = sorted(hf for hf, _ in names.values() if hf not in files)
    if missing:
        raise InputError(f"T5 checkpoint in {folder} lacks tensors: {missing}")
    flat, mismatched = {}, []
    for file in sorted(set(files[hf] for hf, _ in names.values())):
        # Host numpy arrays (bfloat16 checkpoints decode through ml_dtypes), not device arrays.
        with safetensors.safe_open(str(file), framework="numpy") as f:
            for path, (hf, transpose) in names.items():
                if files[hf] != file:
                    continue
                array = np.asarray(f.get_tensor(hf), dtype=np.float32)
                flat[path] = array.T if transpose else array
                if flat[path].shape != expected[path].shape:
                    mismatched.append(f"{hf}: {flat[path].shape} (want {expected[path].shape})")
    if mismatched:
        raise InputError(f"T5 checkpoint in {folder} does not match its config.json: {mismatched}")
    return traverse_util.unflatten_dict(flat)


def resolve_model_dir(name: str) -> pathlib.Path:
    """A local folder, or the local Hugging Face cache's snapshot of hub model ``name``.

    Never downloads: a hub model missing from the cache raises one FileNotFoundError saying how
    to fetch it.
    """
    path = pathlib.Path(name).expanduser()
    if path.is_dir():
        return path
    try:
        return pathlib.Path(huggingface_hub.snapshot_download(name, local_files_only=True))
    except huggingface_hub.errors.HFValidationError:
        raise MissingError(
            f"T5 model folder {name!r} does not exist (nor is it a Hugging Face model name)."
        ) from None
    except huggingface_hub.errors.LocalEntryNotFoundError:
        raise MissingError(
            f"T5 model {name!r} is neither a local folder nor in the local Hugging Face cache "
            f"({huggingface_hub.constants.HF_HUB_CACHE}). Fetch it once with `hf download {name} "
            f"{_FETCH_FILES}` (older clients: `huggingface-cli download {name} {_FETCH_FILES}`), "
            "or set text.t5_name to a folder holding config.json, model.safetensors and the "
            "tokenizer files."
        ) from None
