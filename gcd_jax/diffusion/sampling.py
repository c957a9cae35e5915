"""Ancestral sampling of image–layout pairs, cross-modal outpainting (RePaint) and the SR condition.

Time runs on the uniform grid ``t_n = 1 − n/N``, ``n = 0..N``; step ``n`` goes from ``t = t_n`` to
``s = t_{n+1}``. The denoiser is conditioned on the image log-SNR ``λ_img(t)`` (as in training, see
``gcd_jax.diffusion.joint``). Each step (docs/design.md §3):

- image: ``x̂_0 = (x_t − σ_t ε̂)/α_t``, dynamically thresholded; ``x_s`` drawn from the Gaussian
  posterior ``q(x_s | x_t, x̂_0)``;
- layout: ``y_s`` by Gumbel-max from ``q(y_s | y_t, softmax(logits))`` between the label
  schedule's ``t`` and ``s``. (The reference samples the layout from a second schedule table of
  ``sample_timesteps`` = 100 entries, so each of its 100 steps also moves one 1/100 grid step: the
  same grid.)

The last step (``s = 0``) follows ``sample.final_step`` (``FINAL_STEPS``): 'reference' (the
reference's ``joint_imagen.py`` p_sample with ``t_next = 0``) returns the posterior mean at
``λ(0)`` without noise, clipped to [−1, 1] as its loop ends, and a layout drawn from
``q(y_0 | y_t, ŷ_0)`` whose marginal at ``s = 0`` is ``ŷ_0`` itself (the reference's table holds
``ᾱ = 1`` there); 'x0' returns ``x̂_0`` and the argmax of ``ŷ_0``.

The whole loop is one compiled program (``lax.scan``). The network is called by the project's one
convention, ``apply(params, x_t, y_t, logsnr, cond)`` (``gcd_jax.models.networks``): ``apply`` is a static
argument (hashable; equal ``apply``s share compiled programs) and ``params`` an argument of the
compiled program, never a constant baked into it. Classifier-free guidance is the sampler's rule
(``guided``): the conditional and the null (dropped-text) outputs come from one batched forward and
are combined as ``null + w·(cond − null)`` for ε and for the layout logits; ``w`` is traced (a new
value does not recompile), and ``w = 1`` skips the null half.

RNG: ``key -> (init, steps)``; ``init -> (image, layout)``; ``steps -> N`` step keys; a step key
``-> (image noise, layout Gumbel)``. In outpainting a step key ``-> R`` pass keys, each
``-> (known, reverse step, re-noise)`` and known / re-noise ``-> (image, layout)``. Gaussian noise
is drawn flat (``joint.standard_normal``), layouts by ``categorical.sample``.
"""

import dataclasses
import functools
import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
from jax.sharding import Mesh

from gcd_jax import sharding
from gcd_jax.diffusion import categorical, gaussian, joint, schedules
from gcd_jax.errors import ConfigError
from gcd_jax.interfaces import ApplyFn, Guidance, Pair

# Inside the compiled loop: ``denoise(x_t, y_t, logsnr, cond)``, the guided network.
Denoiser = Callable[..., tuple[jax.Array, jax.Array | None]]


@dataclasses.dataclass(frozen=True)
class Sampler:
    """Sampling settings, read from the config; a static argument of the compiled sampler (equal
    configs give equal samplers, which share compiled programs).

    Attributes:
      image_logsnr, label_logsnr: sampling schedules (``sample.noise_schedule(_lbl)``, '' = the
        training schedules).
      num_classes: K. joint: False for the image-only model (the layout is skipped: None).
      num_steps: N. threshold_p: dynamic-thresholding quantile. resample_steps: RePaint R.
      lowres_logsnr, lowres_aug_t, lowres_resize: SR conditioning (training's low-res schedule and
        image resize method, the fixed augmentation time ``sample.lowres_aug_t``).
      final_step: ``FINAL_STEPS`` key. num_timesteps: T of the layout's grid (the low-res
        layout's noise time is floored to it, ``joint.lowres_logsnrs``).
    """

    image_logsnr: schedules.Schedule
    label_logsnr: schedules.Schedule
    num_classes: int
    joint: bool
    num_steps: int
    threshold_p: float
    resample_steps: int
    lowres_logsnr: schedules.Schedule
    lowres_aug_t: float
    lowres_resize: str
    final_step: str = "reference"
    num_timesteps: int = 1000

    @classmethod
    def from_config(cls, config: ml_collections.ConfigDict) -> "Sampler":
        f, s = config.diffusion, config.sample
        if s.num_steps < 1 or s.resample_steps < 1:
            raise ConfigError("sample.num_steps and sample.resample_steps must be >= 1.")
        if s.final_step not in FINAL_STEPS:
            raise ConfigError(
                f"Unknown sample.final_step {s.final_step!r}; expected one of "
                f"{sorted(FINAL_STEPS)}."
            )
        return cls(
            image_logsnr=joint.NamedSchedule(s.noise_schedule or f.noise_schedule, f.cosine_p),
            label_logsnr=joint.NamedSchedule(
                s.noise_schedule_lbl or f.noise_schedule_lbl, f.cosine_p
            ),
            num_classes=config.data.num_classes,
            joint=config.model.joint,
            num_steps=s.num_steps,
            threshold_p=s.threshold_p,
            resample_steps=s.resample_steps,
            lowres_logsnr=joint.NamedSchedule(f.lowres_noise_schedule, f.cosine_p),
            lowres_aug_t=s.lowres_aug_t,
            lowres_resize=joint.check_resize_method(f.lowres_resize),
            final_step=s.final_step,
            num_timesteps=f.num_timesteps,
        )


# ------------------------------------------------------------------ guidance
def guided(
    apply: ApplyFn,
    params: Any,
    guidance_scale: jax.Array | None,
    x_t: jax.Array,
    y_t: jax.Array | None,
    logsnr: jax.Array,
    cond: dict[str, Any],
) -> Pair:
    """Classifier-free guidance: ``null + w·(cond − null)`` for ε and for the layout logits.

    The conditional and the null (``drop_text``) outputs come from ONE forward over the batch
    doubled along axis 0. ``guidance_scale``: a scalar ``w`` for both heads, or ``[w_image,
    w_layout]`` (one per head); None: the conditional network alone (``w = 1``, one forward of the
    batch). Returns float32 ``eps_hat`` ``[B, H, W, 3]`` and logits ``[B, H, W, K]`` (None when
    not joint).
    """
    b = x_t.shape[0]
    if guidance_scale is None:
        return apply(params, x_t, y_t, logsnr, {**cond, "drop_text": jnp.zeros((b,), bool)})

    def double(a):
        return None if a is None else jnp.concatenate([a, a], axis=0)

    both = jax.tree.map(double, {**cond, "x_t": x_t, "y_t": y_t, "logsnr": logsnr})
    both["drop_text"] = jnp.concatenate([jnp.zeros((b,), bool), jnp.ones((b,), bool)])
    x2, y2, l2 = both.pop("x_t"), both.pop("y_t"), both.pop("logsnr")
    outputs = apply(params, x2, y2, l2, both)

    def combine(out, w):
        if out is None:
            return None
        conditional, null = out[:b].astype(jnp.float32), out[b:].astype(jnp.float32)
        return null + w * (conditional - null)

    w = jnp.broadcast_to(guidance_scale, (2,))  # (image, layout)
    return combine(outputs[0], w[0]), combine(outputs[1], w[1])


def config_guidance(sample: ml_collections.ConfigDict) -> float | tuple[float, float]:
    """The guidance of a ``sample`` config: ``guidance_scale`` on both heads, or ``(guidance_scale,
    label_guidance_scale)`` when the latter is set."""
    if sample.get("label_guidance_scale") is None:
        return sample.guidance_scale
    return (sample.guidance_scale, sample.label_guidance_scale)


def _scale(guidance_scale: Guidance) -> jax.Array | None:
    """The traced guidance argument: None for a plain ``1`` on both heads (no null forward), else
    a float32 scalar or ``[w_image, w_layout]``."""
    if isinstance(guidance_scale, tuple | list):
        if len(guidance_scale) != 2:
            raise ValueError(f"guidance: w or (w_image, w_layout), got {guidance_scale!r}")
        if all(isinstance(w, int | float) and w == 1 for w in guidance_scale):
            return None
    elif isinstance(guidance_scale, int | float) and guidance_scale == 1:
        return None
    return jnp.asarray(guidance_scale, jnp.float32)


# ------------------------------------------------------------------ one step
def time_grid(num_steps: int) -> jax.Array:
    """``[N + 1]`` float32 times ``1 − n/N``, from 1 down to exactly 0."""
    return (num_steps - jnp.arange(num_steps + 1, dtype=jnp.float32)) / num_steps


def initial_state(sampler: Sampler, key: jax.Array, shape: tuple[int, int, int]) -> Pair:
    """``x_1 ~ N(0, I)`` ``[B, H, W, 3]`` and ``y_1`` uniform ``[B, H, W]`` (None if not joint)."""
    k_image, k_label = jax.random.split(key)
    x = joint.standard_normal(k_image, (*shape, 3))
    if not sampler.joint:
        return x, None
    # Drawn flat, like ``joint.standard_normal``, for compilation speed.
    y = jax.random.randint(k_label, (math.prod(shape),), 0, sampler.num_classes)
    return x, y.reshape(shape)


def reverse_step(
    sampler: Sampler,
    denoise: Denoiser,
    x_t: jax.Array,
    y_t: jax.Array | None,
    t: jax.Array,
    s: jax.Array,
    key: jax.Array,
    cond: Any,
) -> Pair:
    """One ancestral step ``t -> s`` (scalars, ``s < t``; ``s = 0`` is the last step).

    Returns ``x_s`` ``[B, H, W, 3]`` and ``y_s`` int32 ``[B, H, W]`` (None if not joint).
    """
    batch = x_t.shape[0]
    logsnr_t = jnp.full((batch,), sampler.image_logsnr(t))
    logsnr_s = jnp.full((batch,), sampler.image_logsnr(s))
    is_last = s <= 0
    k_image, k_label = jax.random.split(key)
    eps_hat, logits = denoise(x_t, y_t, logsnr_t, cond)

    x0_hat = gaussian.predict_x0(x_t, eps_hat.astype(jnp.float32), logsnr_t)
    x0_hat = gaussian.dynamic_threshold(x0_hat, sampler.threshold_p)
    mean, variance = gaussian.q_posterior(x0_hat, x_t, logsnr_t, logsnr_s)
    noise = joint.standard_normal(k_image, x_t.shape)
    x_s = mean + jnp.sqrt(variance) * noise
    layout = None
    if sampler.joint:
        log_y0_hat = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
        log_yt = categorical.index_to_log_onehot(y_t, sampler.num_classes)
        layout = (log_y0_hat, log_yt, sampler.label_logsnr(t), sampler.label_logsnr(s))
        y_s = categorical.sample(k_label, categorical.q_posterior(*layout))
    x_last, y_last = FINAL_STEPS[sampler.final_step](x0_hat, mean, layout, k_label)
    x_s = jnp.where(is_last, x_last, x_s)
    if not sampler.joint:
        return x_s, None
    return x_s, jnp.where(is_last, y_last, y_s)


# The last step's image and layout from (x̂_0, the posterior mean at λ(0), the layout's
# (log ŷ_0, log one-hot y_t, λ_lbl(t), λ_lbl(0)) or None, the layout key); see the module docstring.
FinalStep = Callable[[jax.Array, jax.Array, tuple | None, jax.Array], Pair]


def _final_reference(x0_hat, mean, layout, key) -> Pair:
    image = jnp.clip(mean, -1.0, 1.0)  # p_sample_loop's img.clamp_(-1., 1.)
    if layout is None:
        return image, None
    log_y0_hat, log_yt, logsnr_t, logsnr_s = layout
    log_post = categorical.posterior_given_marginal(log_y0_hat, log_yt, logsnr_t, logsnr_s)
    return image, categorical.sample(key, log_post)


def _final_x0(x0_hat, mean, layout, key) -> Pair:
    if layout is None:
        return x0_hat, None
    return x0_hat, jnp.argmax(layout[0], axis=-1).astype(jnp.int32)


FINAL_STEPS: dict[str, FinalStep] = {"reference": _final_reference, "x0": _final_x0}


def _scan_steps(sampler: Sampler, step: Callable[..., Pair], state: Pair, key: jax.Array) -> Pair:
    """Runs ``step(x_t, y_t, t, s, key) -> (x_s, y_s)`` over the grid in one ``lax.scan``."""
    times = time_grid(sampler.num_steps)
    keys = jax.random.split(key, sampler.num_steps)

    def body(carry, xs):
        t, s, k = xs
        return step(*carry, t, s, k), None

    state, _ = jax.lax.scan(body, state, (times[:-1], times[1:], keys))
    return state


def _constrain(tree: Any, mesh: Mesh | None) -> Any:
    """Shards every batch-leading array of ``tree`` over the mesh's ``data`` axis."""
    if mesh is None:
        return tree
    return jax.lax.with_sharding_constraint(tree, sharding.batch_sharded(mesh))


# ------------------------------------------------------------------ sampling
def _sample(sampler, denoise, cond, key, shape, mesh):
    k_init, k_steps = jax.random.split(key)
    state = _constrain(initial_state(sampler, k_init, shape), mesh)
    cond = _constrain(cond, mesh)
    step = lambda x, y, t, s, k: reverse_step(sampler, denoise, x, y, t, s, k, cond)
    return _scan_steps(sampler, step, state, k_steps)


@functools.partial(jax.jit, static_argnames=("sampler", "apply", "shape", "mesh"))
def _sample_jit(sampler, apply, params, scale, cond, key, shape, mesh):
    denoise = functools.partial(guided, apply, params, scale)
    return _sample(sampler, denoise, cond, key, shape, mesh)


def sample_pairs(
    sampler: Sampler,
    apply: ApplyFn,
    params: Any,
    cond: dict[str, Any],
    key: jax.Array,
    shape: tuple[int, int, int],
    guidance_scale: Guidance = 1.0,
    mesh: Mesh | None = None,
) -> Pair:
    """Samples image–layout pairs, the whole N-step loop as one compiled program.

    Args:
      sampler: ``Sampler.from_config``.
      apply, params: the network and its parameters (see ``Apply``; e.g. ``nets.apply`` and the
        EMA parameters).
      cond: dict of batch-leading arrays for ``apply`` (``{'text', 'text_mask'}``; SR: also the
        low-res inputs, see ``upsampled_condition``).
      key: PRNG key (see the module docstring for its splits).
      shape: ``(B, H, W)``.
      guidance_scale: classifier-free guidance ``w``, or ``(w_image, w_layout)`` (see ``guided``).
      mesh: optional 1-D ``data`` mesh; the batch (initial noise, ``cond``, every step) is then
        sharded over it. The samples do not depend on the mesh.
    Returns:
      images float32 ``[B, H, W, 3]`` in [−1, 1] and layouts int32 ``[B, H, W]`` (None if not
      joint).
    """
    scale = _scale(guidance_scale)
    return _sample_jit(sampler, apply, params, scale, cond, key, tuple(shape), mesh)


# ------------------------------------------------------------------ outpainting
def renoise_logsnr(logsnr_t: jax.Array, logsnr_s: jax.Array) -> jax.Array:
    """Log-SNR ``λ_{t|s}`` of the forward transition ``s -> t`` (``s < t``).

    ``sigmoid(λ_{t|s}) = ᾱ_t / ᾱ_s = α_t² / α_s²``, so the kernels at ``λ_{t|s}`` give the
    transition: ``gaussian.q_sample`` draws ``x_t = α_{t|s} x_s + σ_{t|s} ε`` (variance preserving:
    ``σ_{t|s}² = σ_t² − α_{t|s}² σ_s² = 1 − α_{t|s}²``), ``categorical.q_probs`` gives
    ``q(y_t | y_s) = Cat(ᾱ_{t|s} y_s + (1 − ᾱ_{t|s})/K)``.
    """
    log_keep = jnp.minimum(jax.nn.log_sigmoid(logsnr_t) - jax.nn.log_sigmoid(logsnr_s), 0.0)
    return log_keep - categorical.log1mexp(log_keep)


def _noise_known(sampler, known, x_t, y_t, t, key):
    """Replaces the known region of each modality by the known data forward-noised to ``t``."""
    k_image, k_label = jax.random.split(key)
    noise = joint.standard_normal(k_image, x_t.shape)
    x_known = gaussian.q_sample(known["image"], sampler.image_logsnr(t), noise)
    x_t = jnp.where(known["image_mask"][..., None], x_known, x_t)
    if sampler.joint:
        log_y = categorical.index_to_log_onehot(known["label"], sampler.num_classes)
        y_known = categorical.sample(k_label, categorical.q_probs(log_y, sampler.label_logsnr(t)))
        y_t = jnp.where(known["label_mask"], y_known, y_t)
    return x_t, y_t


def _renoise(sampler, x_s, y_s, t, s, key):
    """Draws ``x_t ~ q(x_t | x_s)`` and ``y_t ~ q(y_t | y_s)``: back from ``s`` to ``t``."""
    k_image, k_label = jax.random.split(key)
    noise = joint.standard_normal(k_image, x_s.shape)
    x_t = gaussian.q_sample(
        x_s, renoise_logsnr(sampler.image_logsnr(t), sampler.image_logsnr(s)), noise
    )
    if not sampler.joint:
        return x_t, None
    logsnr_ts = renoise_logsnr(sampler.label_logsnr(t), sampler.label_logsnr(s))
    log_y = categorical.index_to_log_onehot(y_s, sampler.num_classes)
    return x_t, categorical.sample(k_label, categorical.q_probs(log_y, logsnr_ts))


def repaint_step(sampler, denoise, known, x_t, y_t, t, s, key, cond) -> Pair:
    """One RePaint step ``t -> s`` with ``R = sampler.resample_steps`` passes: each pass replaces
    the known regions at ``t`` and takes ``reverse_step``; every pass but the last re-noises the
    result from ``s`` back to ``t``. ``known``: see ``outpaint``."""

    def one_pass(x_t, y_t, k):
        k_known, k_step, k_renoise = jax.random.split(k, 3)
        x_t, y_t = _noise_known(sampler, known, x_t, y_t, t, k_known)
        return reverse_step(sampler, denoise, x_t, y_t, t, s, k_step, cond), k_renoise

    def resample(carry, k):
        (x_s, y_s), k_renoise = one_pass(*carry, k)
        return _renoise(sampler, x_s, y_s, t, s, k_renoise), None

    keys = jax.random.split(key, sampler.resample_steps)
    state, _ = jax.lax.scan(resample, (x_t, y_t), keys[:-1])
    return one_pass(*state, keys[-1])[0]


@functools.partial(jax.jit, static_argnames=("sampler", "apply", "mesh"))
def _outpaint(sampler, apply, params, scale, cond, key, known, mesh):
    denoise = functools.partial(guided, apply, params, scale)
    k_init, k_steps = jax.random.split(key)
    known, cond = _constrain(known, mesh), _constrain(cond, mesh)
    state = _constrain(initial_state(sampler, k_init, known["image_mask"].shape), mesh)
    step = lambda x, y, t, s, k: repaint_step(sampler, denoise, known, x, y, t, s, k, cond)
    x, y = _scan_steps(sampler, step, state, k_steps)
    x = jnp.where(known["image_mask"][..., None], known["image"], x)
    if sampler.joint:
        y = jnp.where(known["label_mask"], known["label"], y)
    return x, y


def outpaint(
    sampler: Sampler,
    apply: ApplyFn,
    params: Any,
    cond: dict[str, Any],
    key: jax.Array,
    image: jax.Array,
    image_mask: jax.Array,
    label: jax.Array | None = None,
    label_mask: jax.Array | None = None,
    guidance_scale: Guidance = 1.0,
    mesh: Mesh | None = None,
) -> Pair:
    """Cross-modal outpainting (RePaint): completes the unknown regions of both modalities.

    Args:
      sampler, apply, params, cond, key, guidance_scale, mesh: as in ``sample_pairs``.
      image: known image float32 ``[B, H, W, 3]`` in [−1, 1] (values outside the mask unused).
      image_mask: bool ``[B, H, W]``, True where the image is known.
      label, label_mask: known layout int32 ``[B, H, W]`` and its mask; None: layout unknown.
        Image known + layout unknown is text-guided segmentation; layout known + image unknown
        (an all-False ``image_mask``) is semantic image synthesis.
    Returns:
      ``(images, layouts)`` as in ``sample_pairs``, equal to the known data inside the masks.
    """
    known = {"image": jnp.asarray(image, jnp.float32), "image_mask": jnp.asarray(image_mask, bool)}
    if sampler.joint:
        shape, unknown = known["image_mask"].shape, label is None
        known["label"] = jnp.zeros(shape, jnp.int32) if unknown else jnp.asarray(label, jnp.int32)
        known["label_mask"] = jnp.zeros(shape, bool) if unknown else jnp.asarray(label_mask, bool)
    scale = _scale(guidance_scale)
    return _outpaint(sampler, apply, params, scale, cond, key, known, mesh)


# ------------------------------------------------------------------ super-resolution condition
@functools.partial(jax.jit, static_argnames=("sampler", "size"))
def upsampled_condition(
    sampler: Sampler,
    image: jax.Array,
    label: jax.Array | None,
    size: tuple[int, int],
    key: jax.Array,
) -> dict[str, jax.Array | None]:
    """The SR U-Net's low-res inputs from a low-res pair ``[B, h, w, 3]``/``[B, h, w]``: resized to
    ``size`` and noised at the fixed time ``sampler.lowres_aug_t`` (``joint.lowres_condition``).
    The cascade (``gcd_jax.inference.cascade``) merges it into the SR stage's ``cond``."""
    image_up, label_up = joint.resize_pair(
        image, label if sampler.joint else None, size, sampler.lowres_resize
    )
    t_aug = jnp.full((image.shape[0],), sampler.lowres_aug_t, jnp.float32)
    logsnrs = joint.lowres_logsnrs(sampler.lowres_logsnr, t_aug, sampler.num_timesteps)
    return joint.lowres_condition(image_up, label_up, *logsnrs, key, sampler.num_classes)
