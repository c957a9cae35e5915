"""The Gaussian-categorical process: the training loss and the low-resolution conditioning of the
super-resolution stage. The sampler lives in ``gcd_jax.diffusion.sampling``.

Time conventions (docs/design.md §3, matching the reference implementation, github:pmh9960/GCDP,
``JointImagen.p_losses``):

- ``t ~ U(0, t_max)`` per example, continuous; the image is noised at ``t`` with the image
  schedule, ``x_t = α_t x_0 + σ_t ε``.
- The layout lives on the grid of ``T`` steps: ``i = floor(t·T)``, ``t' = i/T``, ``s = (i−1)/T``;
  ``y_{t'} ~ q(y_{t'} | y_0)`` with the label schedule, and its variational-bound term is the KL
  from ``t'`` to ``s`` (the decoder NLL at ``i = 0``).
- The network is conditioned on the image log-SNR ``λ_img(t)`` alone (the reference's
  ``noise_scheduler.get_condition(times)``), in training and in sampling; the layout's time ``t'``
  trails ``t`` by less than ``1/T``. The P2 weight uses ``λ_img(t)`` as well.
"""

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

from gcd_jax import nearest
from gcd_jax.diffusion import categorical, gaussian, schedules
from gcd_jax.errors import ConfigError

# ``apply(params, x_t, y_t, logsnr, cond) -> (eps_hat, logits)``: the network's one calling
# convention (``gcd_jax.models.networks``; e.g. ``nets.apply``).
Apply = Callable[..., tuple[jax.Array, jax.Array | None]]


def standard_normal(key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """Standard normal float32 noise of ``shape``, drawn as a flat vector and reshaped.

    Why flat: with JAX 0.10's partitionable threefry, XLA:CPU compiles a rank-4 draw ~10x slower
    than a rank-1 one (seconds per draw); the values are iid either way and still shard along the
    batch axis.
    """
    return jax.random.normal(key, (math.prod(shape),), jnp.float32).reshape(shape)


@dataclasses.dataclass(frozen=True)
class NamedSchedule:
    """The config's schedule ``name`` (with ``cosine_p`` for 'cosine_p') as a callable ``t -> λ``.

    Compared by value, so that a ``Process`` or ``Sampler`` rebuilt from the same config hits the
    compilation cache of the functions that take it as a static argument.
    """

    name: str
    cosine_p: float

    def __post_init__(self):
        self._schedule()  # validates the name now rather than at trace time

    def _schedule(self) -> schedules.Schedule:
        kwargs = {"p": self.cosine_p} if self.name == "cosine_p" else {}
        return schedules.get_schedule(self.name, **kwargs)

    def __call__(self, t: jax.Array) -> jax.Array:
        return self._schedule()(t)


def check_resize_method(method: str) -> str:
    """Validates ``diffusion.lowres_resize``: 'nearest' or a ``jax.image.resize`` method name
    (raises ValueError naming it)."""
    try:
        jax.image.ResizeMethod.from_string(method)
    except ValueError as e:
        raise ConfigError(f"diffusion.lowres_resize={method!r}: {e}") from None
    return method


def resize_nearest(x: jax.Array, size: tuple[int, int]) -> jax.Array:
    """Nearest-neighbour resize of ``[B, h, w, ...]`` to ``[B, H, W, ...]`` in PyTorch's convention
    (``F.interpolate(mode='nearest')``, the reference's ``resize_image_to``): output pixel ``i``
    takes source pixel ``floor(i · h / H)``. (``jax.image.resize``'s 'nearest' samples pixel
    centres instead, which picks the other pixel of each pair when halving.)"""
    rows = nearest.source_index(x.shape[1], size[0])
    cols = nearest.source_index(x.shape[2], size[1])
    return x[:, rows][:, :, cols]


@dataclasses.dataclass(frozen=True)
class Process:
    """Everything the training loss needs, read once from the config.

    Attributes:
      image_logsnr, label_logsnr: training schedules ``t -> λ`` of the two modalities.
      lowres_logsnr: SR only, schedule of the low-res augmentation noise (both modalities).
      num_classes: K. num_timesteps: T of the layout's variational-bound grid.
      t_max: training times are ``U(0, t_max)``.
      p2_k, p2_gamma: P2 weight ``(k + exp(λ_t))^(−γ)``. lambda_img, lambda_lbl: term weights.
      text_drop_prob: probability of replacing the text by the null text.
      joint: False for the image-only ablation (no layout terms, ``y_t = None``).
      sr: super-resolution stage; lowres_size ``(h, w)``, lowres_aug_t_max, lowres_aug_groups
        (augmentation-time draws per ``loss`` call: ``diffusion.lowres_aug_groups`` per global
        batch over ``train.grad_accum_steps`` micro-batches, at least 1) and lowres_resize (image
        filter, see ``resize_pair``) define its low-res condition.
    """

    image_logsnr: schedules.Schedule
    label_logsnr: schedules.Schedule
    lowres_logsnr: schedules.Schedule
    num_classes: int
    num_timesteps: int
    t_max: float
    p2_k: float
    p2_gamma: float
    lambda_img: float
    lambda_lbl: float
    text_drop_prob: float
    joint: bool
    sr: bool
    lowres_size: tuple[int, int]
    lowres_aug_t_max: float
    lowres_aug_groups: int
    lowres_resize: str

    @classmethod
    def from_config(cls, config: ml_collections.ConfigDict) -> "Process":
        f, m, t = config.diffusion, config.model, config.train
        if m.sr and min(m.lowres_size) <= 0:
            raise ConfigError(f"model.sr needs a positive model.lowres_size, got {m.lowres_size}.")
        groups, batch, micro = f.lowres_aug_groups, t.global_batch_size, t.grad_accum_steps
        if groups < 1 or batch % groups or (groups > micro and groups % micro):
            raise ConfigError(
                f"diffusion.lowres_aug_groups={groups}: expected a divisor of "
                f"train.global_batch_size={batch} that is a multiple of train.grad_accum_steps="
                f"{micro} (or at most it)."
            )
        return cls(
            image_logsnr=NamedSchedule(f.noise_schedule, f.cosine_p),
            label_logsnr=NamedSchedule(f.noise_schedule_lbl, f.cosine_p),
            lowres_logsnr=NamedSchedule(f.lowres_noise_schedule, f.cosine_p),
            num_classes=config.data.num_classes,
            num_timesteps=f.num_timesteps,
            t_max=f.t_max,
            p2_k=f.p2_k,
            p2_gamma=f.p2_gamma,
            lambda_img=f.lambda_img,
            lambda_lbl=f.lambda_lbl,
            text_drop_prob=config.text.drop_prob,
            joint=m.joint,
            sr=m.sr,
            lowres_size=tuple(m.lowres_size),
            lowres_aug_t_max=f.lowres_aug_t_max,
            lowres_aug_groups=max(f.lowres_aug_groups // t.grad_accum_steps, 1),
            lowres_resize=check_resize_method(f.lowres_resize),
        )


def resize_pair(
    image: jax.Array, label: jax.Array | None, size: tuple[int, int], method: str
) -> tuple[jax.Array, jax.Array | None]:
    """Resizes an image ``[B, h, w, 3]`` with ``method`` ('nearest': ``resize_nearest``; else a
    ``jax.image.resize`` method, clipped back to [−1, 1] as some filters overshoot) and a layout
    int32 ``[B, h, w]`` (or None) with ``resize_nearest`` to ``size = (H, W)``."""
    b, c = image.shape[0], image.shape[-1]
    if method == "nearest":
        image = resize_nearest(image, size)
    else:
        image = jnp.clip(jax.image.resize(image, (b, *size, c), method), -1.0, 1.0)
    if label is not None:
        label = resize_nearest(label, size)
    return image, label


def lowres_logsnrs(
    schedule: schedules.Schedule, t_aug: jax.Array, num_timesteps: int
) -> tuple[jax.Array, jax.Array]:
    """``(λ(t_aug), λ(⌊t_aug·T⌋/T))``: the low-res image's log-SNR and the layout's, whose time
    the reference floors to its ``T``-step table (``joint_imagen.py`` MultinomialDiffusion
    ``change_times_dtype``), as the layout term of the loss (``_label_grid``)."""
    t_grid = jnp.floor(t_aug * num_timesteps) / num_timesteps
    return schedule(t_aug), schedule(t_grid)


def lowres_condition(
    image_up: jax.Array,
    label_up: jax.Array | None,
    logsnr_aug: jax.Array,
    logsnr_aug_lbl: jax.Array,
    key: jax.Array,
    num_classes: int,
) -> dict[str, jax.Array | None]:
    """The SR stage's conditioning inputs from an upsampled low-res pair, noised at ``λ_aug``.

    Args:
      image_up: low-res image already resized to the SR size ``[B, H, W, 3]`` in [−1, 1].
      label_up: low-res layout resized nearest ``[B, H, W]`` int32, or None (image-only model).
      logsnr_aug, logsnr_aug_lbl: ``[B]`` log-SNR of the augmentation time for the image (the
        U-Net's ``lowres_logsnr``) and for the layout (on the grid, see ``lowres_logsnrs``).
      key: split into (image noise, layout Gumbel noise).
    Returns:
      ``{'lowres_image': [B, H, W, 3], 'lowres_label': [B, H, W] int32 or None,
      'lowres_logsnr': [B]}``, the keyword arguments of the SR U-Net.
    """
    k_image, k_label = jax.random.split(key)
    noise = standard_normal(k_image, image_up.shape)
    lowres_label = None
    if label_up is not None:
        log_y = categorical.index_to_log_onehot(label_up, num_classes)
        lowres_label = categorical.sample(k_label, categorical.q_probs(log_y, logsnr_aug_lbl))
    return {
        "lowres_image": gaussian.q_sample(image_up, logsnr_aug, noise),
        "lowres_label": lowres_label,
        "lowres_logsnr": logsnr_aug,
    }


def _training_lowres(
    process: Process, image: jax.Array, label: jax.Array | None, key: jax.Array
) -> dict[str, jax.Array | None]:
    """SR training condition: the high-res pair down to ``lowres_size`` and back up, noised at
    ``t_aug ~ U(0, lowres_aug_t_max)``, one draw per group of ``B / lowres_aug_groups``
    consecutive examples (*ref*: one per GPU's forward). Keys: (t_aug, condition noise)."""
    k_time, k_noise = jax.random.split(key)
    size = image.shape[1:3]
    small = resize_pair(image, label, process.lowres_size, process.lowres_resize)
    image_up, label_up = resize_pair(*small, size, process.lowres_resize)
    b = image.shape[0]
    groups = process.lowres_aug_groups
    t_aug = jax.random.uniform(k_time, (groups,), maxval=process.lowres_aug_t_max)
    t_aug = jnp.repeat(t_aug, b // groups, total_repeat_length=b)
    logsnrs = lowres_logsnrs(process.lowres_logsnr, t_aug, process.num_timesteps)
    return lowres_condition(image_up, label_up, *logsnrs, k_noise, process.num_classes)


def _label_grid(process: Process, t: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Grid times of the layout term for ``t`` ``[B]``: ``(λ_lbl(t'), λ_lbl(s), is_first)``.

    At ``i = 0`` the KL branch is discarded for the decoder NLL; its ``s`` is clamped to 0 so that
    every value stays finite.
    """
    steps = jnp.floor(t * process.num_timesteps)
    is_first = steps == 0
    t_grid = steps / process.num_timesteps
    s_grid = jnp.maximum(steps - 1, 0) / process.num_timesteps
    return process.label_logsnr(t_grid), process.label_logsnr(s_grid), is_first


def loss(
    process: Process, apply: Apply, params: Any, batch: dict[str, jax.Array], key: jax.Array
) -> dict[str, jax.Array]:
    """Per-example GCDP training loss (docs/design.md §3): draws the randomness, then ``loss_from_draws``.

    Args:
      process: from ``Process.from_config``.
      apply, params: the network (``gcd_jax.models.networks``), called once as ``apply(params, x_t, y_t,
        λ_img(t), cond)`` with ``cond = {text, text_mask, drop_text[, lowres_image, lowres_label,
        lowres_logsnr]}`` and ``y_t = None`` when not joint.
      batch: ``image`` float32 ``[B, H, W, 3]`` in [−1, 1]; ``label`` int32 ``[B, H, W]``; ``text``
        embeddings ``[B, L, D]``; ``mask`` bool ``[B, L]``; ``has_text`` bool ``[B]`` (False trains
        the example with the null text). SR: the pair at the high resolution.
      key: split ``(time, image noise, label noise, text dropout, low-res)``; the low-res key splits
        into ``(t_aug, condition)`` and that into ``(image noise, label noise)``.
    Returns:
      ``[B]`` arrays ``loss``, ``loss_img``, ``loss_lbl`` (see ``loss_from_draws``).
    """
    image, label = batch["image"], batch["label"]
    b = image.shape[0]
    k_time, k_noise, k_label, k_drop, k_lowres = jax.random.split(key, 5)
    t = jax.random.uniform(k_time, (b,), maxval=process.t_max)
    noise = standard_normal(k_noise, image.shape)
    drop_text = jax.random.bernoulli(k_drop, process.text_drop_prob, (b,)) | ~batch["has_text"]
    lowres = {}
    if process.sr:
        lowres = _training_lowres(process, image, label if process.joint else None, k_lowres)
    cond = {"text": batch["text"], "text_mask": batch["mask"], "drop_text": drop_text, **lowres}
    y_t = None
    if process.joint:
        logsnr_lbl_t, _, _ = _label_grid(process, t)
        log_y0 = categorical.index_to_log_onehot(label, process.num_classes)
        y_t = categorical.sample(k_label, categorical.q_probs(log_y0, logsnr_lbl_t))

    def call(x_t, y_t, logsnr_t):
        return apply(params, x_t, y_t, logsnr_t, cond)

    return loss_from_draws(process, call, image, label, t, noise, y_t)


def loss_from_draws(
    process: Process,
    call: Callable[..., tuple[jax.Array, jax.Array | None]],
    image: jax.Array,
    label: jax.Array,
    t: jax.Array,
    noise: jax.Array,
    y_t: jax.Array | None,
) -> dict[str, jax.Array]:
    """Per-example GCDP training loss given its random draws (docs/design.md §3).

    Args:
      process: from ``Process.from_config``.
      call: ``call(x_t, y_t, λ_img(t)) -> (eps_hat [B, H, W, 3], logits [B, H, W, K] or None)``,
        the network with its parameters and conditioning (text, text dropout, SR low-res inputs)
        bound; called once.
      image: float32 ``[B, H, W, 3]`` in [−1, 1]; label: int32 ``[B, H, W]``.
      t: ``[B]`` times in [0, 1); ``noise``: ε ``[B, H, W, 3]``; ``x_t = α_t x_0 + σ_t ε``.
      y_t: int32 ``[B, H, W]``, a draw of ``q(y_{t'} | y_0)`` at the grid time ``t' = ⌊t·T⌋/T``;
        None for the image-only model.
    Returns:
      ``[B]`` arrays: ``loss = λ_img·loss_img + λ_lbl·loss_lbl``; ``loss_img`` the P2-weighted ε-MSE
      (mean over pixels and channels); ``loss_lbl`` the P2-weighted layout variational bound
      (``categorical.vb_loss``), zeros for the image-only model.
    """
    logsnr_t = process.image_logsnr(t)
    x_t = gaussian.q_sample(image, logsnr_t, noise)
    eps_hat, logits = call(x_t, y_t, logsnr_t)
    if process.joint:
        logsnr_lbl_t, logsnr_lbl_s, is_first = _label_grid(process, t)
        vb = categorical.vb_loss(
            categorical.index_to_log_onehot(label, process.num_classes),
            categorical.index_to_log_onehot(y_t, process.num_classes),
            jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1),
            logsnr_lbl_t,
            logsnr_lbl_s,
            process.label_logsnr(jnp.float32(1.0)),
            is_first,
            process.num_timesteps,
        )
    else:
        vb = jnp.zeros(t.shape, jnp.float32)

    mse = jnp.mean(jnp.square(eps_hat.astype(jnp.float32) - noise), axis=(1, 2, 3))  # [B]
    weight = (process.p2_k + jnp.exp(logsnr_t)) ** (-process.p2_gamma)  # [B]
    loss_img, loss_lbl = weight * mse, weight * vb
    return {
        "loss": process.lambda_img * loss_img + process.lambda_lbl * loss_lbl,
        "loss_img": loss_img,
        "loss_lbl": loss_lbl,
    }
