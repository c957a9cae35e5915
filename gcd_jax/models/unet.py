"""The joint U-Net of GCDP: an Imagen-style efficient U-Net that denoises an image and its semantic
layout together, conditioned on log-SNR and text (base model), or additionally on an upsampled,
noised low-resolution image and layout (super-resolution model).

The model knows nothing about diffusion: it maps ``(x_t, y_t, logsnr_t, text)`` to ``eps_hat`` and
the logits of ``y_0``.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from gcd_jax.errors import ConfigError
from gcd_jax.models.attention import Attention, TransformerBlock
from gcd_jax.models.conditioning import TextConditioning, TimeConditioning
from gcd_jax.models.layers import CrossEmbed, Downsample, Dtype, PixelShuffleUpsample, layer_norm
from gcd_jax.models.resnet import ResnetBlock
from gcd_jax.models.scanned import ScanStep, rematerialised

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def compute_dtype(name: str) -> Dtype:
    """``model.dtype``: 'float32', 'bfloat16', or 'auto' = bfloat16 on GPU/TPU, float32 on CPU
    (where bfloat16 matmuls are emulated and slower)."""
    if name == "auto":
        return jnp.bfloat16 if jax.default_backend() in ("gpu", "tpu") else jnp.float32
    if name not in DTYPES:
        raise ConfigError(f"model.dtype must be 'auto' or one of {sorted(DTYPES)}, got {name!r}")
    return DTYPES[name]


_SKIP_SCALE = 2**-0.5  # keeps the variance of the concatenated skip connections in check


class JointUNet(nn.Module):
    """Efficient U-Net with an ε head and a layout-logit head.

    Levels are pre-downsampled (pixel-unshuffle + 1×1 conv) and upsampled back by pixel-shuffle, so
    H and W must be divisible by ``2 ** len(dim_mults)``; H need not equal W.

    Attributes:
      num_classes: K, layout classes.
      joint: False gives the image-only ablation (no layout input, no logit head).
      sr: super-resolution variant (low-res image/layout inputs and augmentation log-SNR).
      dim: base width; the time hidden is ``4·dim`` (``8·dim`` for SR), tokens are ``dim`` wide.
      dim_mults, num_res_blocks, attn_levels, cross_attn_levels: one entry per level.
      attn_heads, attn_dim_head: attention shape of every level's attention and the middle
        self-attention.
      mid_cross_attn_heads, mid_cross_attn_dim_head: cross-attention shape of the two middle
        blocks (the reference builds them with fixed 8 × 64 whatever ``attn_heads`` says).
      ff_mult: feed-forward expansion of the transformer blocks.
      num_groups: GroupNorm groups.
      cross_embed_kernels: kernel sizes of the first layer.
      num_time_tokens: time tokens (per log-SNR input) prepended to the text tokens.
      num_latents, num_mean_pooled, resampler_depth, resampler_max_len, resampler_ff_mult:
        Perceiver resampler of the text tokens.
      max_text_len: text tokens are truncated/padded to this length (learned null tokens).
      label_embed_dim: channels of the learned layout embeddings.
      time_sinu_dim: learned sinusoidal frequencies ×2 of the log-SNR embedding.
      dtype: compute dtype; parameters are float32 and outputs are float32.
      remat: rematerialisation of the residual and transformer blocks: 'none', 'blocks' (keep only
        each block's inputs, recompute the rest in the backward pass) or the name of a
        ``jax.checkpoint_policies`` policy (e.g. 'dots_with_no_batch_dims_saveable'). Parameters
        and outputs are the same for every setting.
      scan_blocks: run the identical residual blocks of a level (``num_res_blocks[l] >= 2``) as
        one ``nn.scan``, their parameters stacked on a leading axis under ``{down,up}{l}_blocks``
        (``unstack_blocks`` / ``stack_blocks`` convert to and from the per-block layout): XLA
        compiles one block per level instead of all of them. Outputs are the same.
    """

    num_classes: int
    joint: bool
    sr: bool
    dim: int
    dim_mults: tuple[int, ...]
    num_res_blocks: tuple[int, ...]
    attn_levels: tuple[bool, ...]
    cross_attn_levels: tuple[bool, ...]
    attn_heads: int
    attn_dim_head: int
    mid_cross_attn_heads: int
    mid_cross_attn_dim_head: int
    ff_mult: float
    num_groups: int
    cross_embed_kernels: tuple[int, ...]
    num_time_tokens: int
    num_latents: int
    num_mean_pooled: int
    resampler_depth: int
    resampler_max_len: int
    resampler_ff_mult: float
    max_text_len: int
    label_embed_dim: int
    time_sinu_dim: int
    dtype: Dtype
    remat: str = "none"
    scan_blocks: bool = False

    def _block(self, module_class):
        return rematerialised(module_class, self.remat)

    def _resnet(
        self,
        dim_out: int,
        name: str,
        cross_attn: bool = False,
        use_gca: bool = False,
        heads: int | None = None,
        dim_head: int | None = None,
    ):
        """A ResnetBlock; its cross-attention uses ``attn_heads`` × ``attn_dim_head`` unless given."""
        return self._block(ResnetBlock)(
            dim_out=dim_out,
            groups=self.num_groups,
            cross_attn=cross_attn,
            use_gca=use_gca,
            heads=self.attn_heads if heads is None else heads,
            dim_head=self.attn_dim_head if dim_head is None else dim_head,
            dtype=self.dtype,
            name=name,
        )

    def _check(self, x_t: jax.Array) -> None:
        levels = len(self.dim_mults)
        per_level = (self.num_res_blocks, self.attn_levels, self.cross_attn_levels)
        if any(len(v) != levels for v in per_level):
            raise ConfigError(f"per-level settings must all have {levels} entries: {per_level}")
        h, w = x_t.shape[1:3]
        if h % 2**levels or w % 2**levels:
            raise ConfigError(f"image size {(h, w)} must be divisible by 2**{levels}")

    def _embed_labels(self, labels: jax.Array, name: str) -> jax.Array:
        embed = nn.Embed(
            self.num_classes,
            self.label_embed_dim,
            embedding_init=nn.initializers.normal(1.0),
            dtype=self.dtype,
            name=name,
        )
        return embed(labels)

    def _conditioning(self, logsnr, text, text_mask, drop_text, lowres_logsnr):
        """→ time hidden ``[B, T]`` and normalised conditioning tokens ``[B, M, dim]``."""
        time_cond_dim = 4 * self.dim * (2 if self.sr else 1)
        time_kwargs = dict(
            time_cond_dim=time_cond_dim,
            cond_dim=self.dim,
            num_tokens=self.num_time_tokens,
            sinu_dim=self.time_sinu_dim,
            dtype=self.dtype,
        )
        t, time_tokens = TimeConditioning(**time_kwargs, name="time")(logsnr)
        if self.sr:
            lowres_t, lowres_tokens = TimeConditioning(**time_kwargs, name="lowres_time")(
                lowres_logsnr
            )
            t = t + lowres_t
            time_tokens = jnp.concatenate([time_tokens, lowres_tokens], axis=1)
        text_tokens, text_hidden = TextConditioning(
            cond_dim=self.dim,
            time_cond_dim=time_cond_dim,
            max_len=self.max_text_len,
            resampler_depth=self.resampler_depth,
            heads=self.attn_heads,
            dim_head=self.attn_dim_head,
            num_latents=self.num_latents,
            num_mean_pooled=self.num_mean_pooled,
            resampler_max_len=self.resampler_max_len,
            resampler_ff_mult=self.resampler_ff_mult,
            dtype=self.dtype,
            name="text",
        )(text.astype(self.dtype), text_mask, drop_text)
        context = jnp.concatenate([time_tokens, text_tokens], axis=1)
        return t + text_hidden, layer_norm(self.dtype, "norm_cond")(context)

    def _level_blocks(self, x, t, context, level: int, prefix: str, skips=None):
        """The blocks of one level (down path when ``skips`` is None, else up path, popping
        skips)."""
        width = self.dim * self.dim_mults[level]
        name = f"{prefix}{level}"

        def with_skip(x):
            return x if skips is None else jnp.concatenate([x, skips.pop() * _SKIP_SCALE], -1)

        outputs = []
        cross = self.cross_attn_levels[level]
        x = self._resnet(width, f"{name}_init_block", cross_attn=cross)(with_skip(x), t, context)
        n = self.num_res_blocks[level]
        if self.scan_blocks and n >= 2:
            # Down: each block's output is a skip; up: block j takes the j-th popped skip.
            block = dict(
                dim_out=width,
                groups=self.num_groups,
                cross_attn=False,
                use_gca=True,
                heads=self.attn_heads,
                dim_head=self.attn_dim_head,
                dtype=self.dtype,
            )
            up = skips is not None
            scanned = nn.scan(
                ScanStep,
                variable_axes={"params": 0},
                split_rngs={"params": True},
                in_axes=(0, nn.broadcast) if up else (nn.broadcast,),
                length=n,
            )(block=block, remat=self.remat, up=up, skip_scale=_SKIP_SCALE, name=f"{name}_blocks")
            if up:
                x, _ = scanned(x, jnp.stack([skips.pop() for _ in range(n)]), t)
            else:
                x, ys = scanned(x, t)
                outputs.extend(ys[j] for j in range(n))
        else:
            for j in range(n):
                x = self._resnet(width, f"{name}_block{j}", use_gca=True)(with_skip(x), t)
                outputs.append(x)
        if self.attn_levels[level]:
            x = self._block(TransformerBlock)(
                self.attn_heads, self.attn_dim_head, self.ff_mult, self.dtype, name=f"{name}_attn"
            )(x, context)
        outputs.append(x)
        return x, outputs

    def _middle(self, x, t, context):
        mid = [
            self._resnet(
                x.shape[-1],
                f"mid_block{i}",
                cross_attn=True,
                heads=self.mid_cross_attn_heads,
                dim_head=self.mid_cross_attn_dim_head,
            )
            for i in (1, 2)
        ]
        x = mid[0](x, t, context)
        b, h, w, c = x.shape
        tokens = x.reshape(b, h * w, c)
        attn = Attention(self.attn_heads, self.attn_dim_head, False, self.dtype, name="mid_attn")
        x = (attn(tokens) + tokens).reshape(x.shape)
        return mid[1](x, t, context)

    @nn.compact
    def __call__(
        self,
        x_t: jax.Array,
        y_t: jax.Array | None,
        logsnr: jax.Array,
        text: jax.Array,
        text_mask: jax.Array,
        drop_text: jax.Array,
        lowres_image: jax.Array | None = None,
        lowres_label: jax.Array | None = None,
        lowres_logsnr: jax.Array | None = None,
    ) -> tuple[jax.Array, jax.Array | None]:
        """Predict ε and the layout logits.

        Args:
          x_t: noisy image ``[B, H, W, 3]``, float.
          y_t: noisy layout ``[B, H, W]`` int32 in [0, K); None when ``joint`` is False.
          logsnr: image log-SNR λ_t ``[B]``.
          text: text embeddings ``[B, L, D]``; text_mask: ``[B, L]`` bool (True = real token).
          drop_text: ``[B]`` bool, True replaces the text by the learned null text.
          lowres_image, lowres_label, lowres_logsnr: SR only — the low-resolution image
            ``[B, H, W, 3]`` and layout ``[B, H, W]`` already upsampled to H×W and noised, and
            their augmentation log-SNR ``[B]``.

        Returns:
          ``eps_hat`` ``[B, H, W, 3]`` and label logits ``[B, H, W, K]`` (None when not
          ``joint``), float32.
        """
        self._check(x_t)
        inputs = [x_t.astype(self.dtype)]
        if self.joint:
            inputs.append(self._embed_labels(y_t, "label_embed"))
        lowres = []
        if self.sr:
            lowres.append(lowres_image.astype(self.dtype))
            if self.joint:
                lowres.append(self._embed_labels(lowres_label, "lowres_label_embed"))
        x = jnp.concatenate(inputs + lowres, axis=-1)

        t, context = self._conditioning(logsnr, text, text_mask, drop_text, lowres_logsnr)
        x = CrossEmbed(self.dim, self.cross_embed_kernels, self.dtype, name="init_conv")(x)
        x = self._resnet(self.dim, "init_resnet_block", use_gca=True)(x, t)

        skips = []
        for level, mult in enumerate(self.dim_mults):
            x = Downsample(self.dim * mult, self.dtype, name=f"down{level}_downsample")(x)
            x, outputs = self._level_blocks(x, t, context, level, "down")
            skips.extend(outputs)

        x = self._middle(x, t, context)

        for level in reversed(range(len(self.dim_mults))):
            x, _ = self._level_blocks(x, t, context, level, "up", skips)
            width_in = self.dim * self.dim_mults[level - 1] if level else self.dim
            x = PixelShuffleUpsample(width_in, self.dtype, name=f"up{level}_upsample")(x)

        x = self._resnet(self.dim, "final_res_block", use_gca=True)(x, t)
        x = jnp.concatenate([x, *lowres], axis=-1).astype(jnp.float32)
        eps_hat = _zero_head(3, "eps_head")(x)
        logits = _zero_head(self.num_classes, "label_head")(x) if self.joint else None
        return eps_hat, logits


def _zero_head(features: int, name: str) -> nn.Conv:
    """Zero-initialised 3×3 output convolution, run in float32."""
    return nn.Conv(
        features,
        (3, 3),
        dtype=jnp.float32,
        kernel_init=nn.initializers.zeros,
        name=name,
    )


def build_unet(config: ml_collections.ConfigDict) -> JointUNet:
    """The U-Net described by ``config.model`` (K from ``config.data.num_classes``, the null-text
    length from ``config.text.max_length``)."""
    m = config.model
    dtype = compute_dtype(m.dtype)
    if m.remat not in ("none", "blocks") and not callable(
        getattr(jax.checkpoint_policies, m.remat, None)
    ):
        raise ConfigError(
            f"model.remat must be 'none', 'blocks' or a jax.checkpoint_policies name, got "
            f"{m.remat!r}."
        )
    return JointUNet(
        num_classes=config.data.num_classes,
        joint=m.joint,
        sr=m.sr,
        dim=m.dim,
        dim_mults=tuple(m.dim_mults),
        num_res_blocks=tuple(m.num_res_blocks),
        attn_levels=tuple(m.attn_levels),
        cross_attn_levels=tuple(m.cross_attn_levels),
        attn_heads=m.attn_heads,
        attn_dim_head=m.attn_dim_head,
        mid_cross_attn_heads=m.mid_cross_attn_heads,
        mid_cross_attn_dim_head=m.mid_cross_attn_dim_head,
        ff_mult=m.ff_mult,
        num_groups=m.num_groups,
        cross_embed_kernels=tuple(m.cross_embed_kernels),
        num_time_tokens=m.num_time_tokens,
        num_latents=m.num_latents,
        num_mean_pooled=m.num_mean_pooled_latents,
        resampler_depth=m.resampler_depth,
        resampler_max_len=m.resampler_max_len,
        resampler_ff_mult=m.resampler_ff_mult,
        max_text_len=config.text.max_length,
        label_embed_dim=m.label_embed_dim,
        time_sinu_dim=m.time_sinu_dim,
        dtype=dtype,
        remat=m.remat,
        scan_blocks=m.scan_blocks,
    )


def input_specs(
    model: JointUNet,
    batch_size: int,
    image_size: tuple[int, int],
    text_len: int,
    text_dim: int,
) -> dict[str, Any]:
    """Abstract inputs (``jax.ShapeDtypeStruct``) of ``model.__call__``, keyed by argument name, for
    ``jax.eval_shape`` / ``model.init`` / ahead-of-time compilation."""
    b, (h, w) = batch_size, image_size
    f32, i32 = jnp.float32, jnp.int32
    specs = dict(
        x_t=jax.ShapeDtypeStruct((b, h, w, 3), f32),
        y_t=jax.ShapeDtypeStruct((b, h, w), i32) if model.joint else None,
        logsnr=jax.ShapeDtypeStruct((b,), f32),
        text=jax.ShapeDtypeStruct((b, text_len, text_dim), f32),
        text_mask=jax.ShapeDtypeStruct((b, text_len), jnp.bool_),
        drop_text=jax.ShapeDtypeStruct((b,), jnp.bool_),
    )
    if model.sr:
        specs.update(
            lowres_image=jax.ShapeDtypeStruct((b, h, w, 3), f32),
            lowres_label=jax.ShapeDtypeStruct((b, h, w), i32) if model.joint else None,
            lowres_logsnr=jax.ShapeDtypeStruct((b,), f32),
        )
    return specs
