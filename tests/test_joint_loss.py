"""The GCDP training loss against an independent float64 NumPy computation of docs/design.md §3.

The random draws are reproduced with the key splits documented in ``joint.loss`` (Gaussian noise
drawn flat, categorical draws by ``categorical.sample``'s Gumbel-max on ``[N, K]`` from
probabilities computed here); everything else
(schedules, Gaussian noising, categorical forward process, posteriors, KL, decoder NLL, prior, P2
weight) is recomputed here from the formulas, with probabilities rather than log-probabilities.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import base
from gcd_jax.diffusion import categorical, joint
from gcd_jax.errors import ConfigError

B, H, W, K, L, D = 8, 4, 4, 5, 3, 6


# ------------------------------------------------------------------ NumPy reference (float64)
def np_logsnr(name, t):
    t = np.asarray(t, np.float64)
    if name == "linear":
        return -np.log(np.expm1(1e-4 + 10.0 * t**2))
    s = 0.008
    return -np.log(np.maximum(np.cos((t + s) / (1 + s) * np.pi / 2) ** -2.0 - 1.0, 1e-5))


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def onehot(y, k=K):
    return np.eye(k)[y]


def softmax(z):
    z = z - z.max(-1, keepdims=True)
    return np.exp(z) / np.exp(z).sum(-1, keepdims=True)


def np_posterior(y0_probs, y_t, keep_t, keep_s):
    """q(y_s | y_t, y0) ∝ (ā_{t|s} y_t + (1 − ā_{t|s})/K) ⊙ (ā_s y0 + (1 − ā_s)/K)."""
    keep_ts = (keep_t / keep_s)[:, None, None, None]
    keep_s = keep_s[:, None, None, None]
    unnorm = (keep_ts * onehot(y_t) + (1 - keep_ts) / K) * (keep_s * y0_probs + (1 - keep_s) / K)
    return unnorm / unnorm.sum(-1, keepdims=True)


def np_kl(p, q):
    # At i = 0 the (discarded) KL branch has zero-probability classes in q.
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.sum(np.where(p > 0, p * (np.log(np.maximum(p, 1e-300)) - np.log(q)), 0.0), -1)


class Params:
    """A fixed linear 'network' (the same formula is written once in jnp and once in NumPy)."""

    def __init__(self, seed=0):
        r = np.random.default_rng(seed)
        self.a = r.normal(size=(K, 3))
        self.p = r.normal(size=(D, 3))
        self.b = r.normal(size=(3, K))
        self.c = r.normal(size=(K, K))

    def jax(self):
        return {k: jnp.asarray(v, jnp.float32) for k, v in vars(self).items()}


def as_apply(denoise):
    """The network convention ``apply(params, x_t, y_t, logsnr, cond)`` around a test denoiser
    ``denoise(params, x_t, y_t, logsnr, text, mask, drop, **lowres)``."""

    def apply(params, x_t, y_t, logsnr, cond):
        cond = dict(cond)
        text, mask, drop = cond.pop("text"), cond.pop("text_mask"), cond.pop("drop_text")
        return denoise(params, x_t, y_t, logsnr, text, mask, drop, **cond)

    return apply


def jax_denoise(params, x_t, y_t, logsnr, text, mask, drop):
    pooled = jnp.sum(text * mask[..., None], 1) / jnp.maximum(jnp.sum(mask, 1, keepdims=True), 1)
    pooled = jnp.where(drop[:, None], 0.3, pooled @ params["p"])
    eps = 0.5 * x_t + 0.01 * logsnr[:, None, None, None] + pooled[:, None, None, :]
    if y_t is None:
        return eps, None
    y = jax.nn.one_hot(y_t, K)
    eps = eps + y @ params["a"]
    logits = x_t @ params["b"] + y @ params["c"] + 0.1 * logsnr[:, None, None, None]
    return eps, logits


def np_denoise(params, x_t, y_t, logsnr, text, mask, drop):
    pooled = (text * mask[..., None]).sum(1) / np.maximum(mask.sum(1, keepdims=True), 1)
    pooled = np.where(drop[:, None], 0.3, pooled @ params.p)
    eps = 0.5 * x_t + 0.01 * logsnr[:, None, None, None] + pooled[:, None, None, :]
    if y_t is None:
        return eps, None
    eps = eps + onehot(y_t) @ params.a
    logits = x_t @ params.b + onehot(y_t) @ params.c + 0.1 * logsnr[:, None, None, None]
    return eps, logits


def draw_labels(key, log_q):
    """The layout draw: Gumbel-max by ``categorical.sample`` on the flattened ``[N, K]``."""
    flat = jnp.asarray(log_q.reshape(-1, K), jnp.float32)
    return np.asarray(categorical.sample(key, flat)).reshape(log_q.shape[:-1])


@jax.jit
def draws(key, t_max, drop_prob):
    """The draws of ``joint.loss``, by its documented key split: (time, noise, label, drop, _);
    the layout draw is returned as its key."""
    k_time, k_noise, k_label, k_drop, _ = jax.random.split(key, 5)
    return (
        jax.random.uniform(k_time, (B,), maxval=t_max),
        jax.random.normal(k_noise, (B * H * W * 3,)).reshape(B, H, W, 3),  # drawn flat
        k_label,
        jax.random.bernoulli(k_drop, drop_prob, (B,)),
    )


def np_loss(cfg, batch, key, params):
    f = cfg.diffusion
    T = f.num_timesteps
    t, noise, k_label, drop = draws(key, f.t_max, cfg.text.drop_prob)
    drop = drop | ~batch["has_text"]

    t, noise = np.float64(t), np.float64(noise)
    image, y0 = np.float64(batch["image"]), batch["label"]
    lam = np_logsnr(f.noise_schedule, t)
    alpha, sigma = np.sqrt(sigmoid(lam)), np.sqrt(sigmoid(-lam))
    x_t = alpha[:, None, None, None] * image + sigma[:, None, None, None] * noise

    i = np.floor(t * T)
    keep_t = sigmoid(np_logsnr(f.noise_schedule_lbl, i / T))
    keep_s = sigmoid(np_logsnr(f.noise_schedule_lbl, np.maximum(i - 1, 0) / T))
    q_t = keep_t[:, None, None, None] * onehot(y0) + (1 - keep_t[:, None, None, None]) / K
    y_t = draw_labels(k_label, np.log(q_t))

    eps, logits = np_denoise(params, x_t, y_t, lam, np.float64(batch["text"]), batch["mask"], drop)
    mse = np.mean((eps - noise) ** 2, axis=(1, 2, 3))
    y0_hat = softmax(logits)
    kl_t = np_kl(
        np_posterior(onehot(y0), y_t, keep_t, keep_s), np_posterior(y0_hat, y_t, keep_t, keep_s)
    )
    nll = -np.log(np.take_along_axis(y0_hat, y0[..., None], -1)[..., 0])
    term = np.where(i == 0, nll.sum((1, 2)), kl_t.sum((1, 2))) * T
    keep_1 = sigmoid(np_logsnr(f.noise_schedule_lbl, 1.0))
    prior = np_kl(keep_1 * onehot(y0) + (1 - keep_1) / K, np.full(K, 1.0 / K)).sum((1, 2))
    vb = (term + prior) / (np.log(2) * K * H * W)
    weight = (f.p2_k + np.exp(lam)) ** -f.p2_gamma
    loss_img, loss_lbl = weight * mse, weight * vb
    total = f.lambda_img * loss_img + f.lambda_lbl * loss_lbl
    return {"loss": total, "loss_img": loss_img, "loss_lbl": loss_lbl}, i


# ------------------------------------------------------------------ fixtures
def make_config(**diffusion):
    cfg = base.get_config()
    cfg.data.num_classes = K
    cfg.text.drop_prob = 0.5
    cfg.diffusion.lambda_lbl = 0.7
    cfg.diffusion.p2_gamma = 0.8
    for name, value in diffusion.items():
        setattr(cfg.diffusion, name, value)
    return cfg


def make_batch(seed=1, size=(H, W)):
    r = np.random.default_rng(seed)
    return {
        "image": r.uniform(-1, 1, (B, *size, 3)).astype(np.float32),
        "label": r.integers(0, K, (B, *size)).astype(np.int32),
        "text": r.normal(size=(B, L, D)).astype(np.float32),
        "mask": r.uniform(size=(B, L)) < 0.7,
        "has_text": np.array([True, False] * (B // 2)),
    }


@pytest.mark.parametrize(
    "diffusion",
    [
        {},  # the reference: linear/linear, T = 1000, t ~ U(0, 0.999)
        {"t_max": 0.002},  # i ∈ {0, 1}: the decoder NLL and the first KL
        {"noise_schedule": "cosine", "num_timesteps": 10, "p2_k": 2.0},  # different schedules
    ],
)
def test_loss_matches_numpy(diffusion):
    cfg = make_config(**diffusion)
    process = joint.Process.from_config(cfg)
    batch, params, key = make_batch(), Params(), jax.random.key(7)
    apply = as_apply(jax_denoise)
    out = jax.jit(lambda b, k: joint.loss(process, apply, params.jax(), b, k))(batch, key)
    ref, i = np_loss(cfg, batch, key, params)
    if diffusion.get("t_max"):
        assert (i == 0).any() and (i > 0).any()
    for name in ("loss", "loss_img", "loss_lbl"):
        assert out[name].shape == (B,)
        # atol: float32 rounding of T·KL between nearly equal posteriors (the layout term at
        # large t, ~1e-9 per pixel before the factor T = 1000) is ~2e-5.
        np.testing.assert_allclose(out[name], ref[name], rtol=2e-4, atol=5e-5, err_msg=name)
    assert (ref["loss_lbl"] > 0).all()


def test_image_only_ablation():
    cfg = make_config()
    cfg.model.joint = False
    process = joint.Process.from_config(cfg)
    batch, params, key = make_batch(), Params(), jax.random.key(3)

    def denoise(p, x_t, y_t, *rest):
        assert y_t is None
        return jax_denoise(p, x_t, y_t, *rest)

    out = jax.jit(lambda b, k: joint.loss(process, as_apply(denoise), params.jax(), b, k))(
        batch, key
    )
    # The image term alone, recomputed: identical draws for time, noise and text dropout.
    t, noise, _, drop = draws(key, cfg.diffusion.t_max, 0.5)
    drop = drop | ~batch["has_text"]
    lam = np_logsnr("linear", np.float64(t))
    a, s = np.sqrt(sigmoid(lam)), np.sqrt(sigmoid(-lam))
    noise = np.float64(noise)
    x_t = a[:, None, None, None] * batch["image"] + s[:, None, None, None] * noise
    eps, _ = np_denoise(params, x_t, None, lam, np.float64(batch["text"]), batch["mask"], drop)
    mse = np.mean((eps - noise) ** 2, axis=(1, 2, 3)) * (1 + np.exp(lam)) ** -0.8
    np.testing.assert_allclose(out["loss_img"], mse, rtol=2e-4)
    np.testing.assert_allclose(out["loss"], mse, rtol=2e-4)
    np.testing.assert_array_equal(out["loss_lbl"], 0.0)


@pytest.mark.parametrize("groups", [1, 2, B])
def test_sr_condition(groups):
    """SR: the high-res pair goes down to lowres_size and back up (nearest, PyTorch's convention,
    as the reference), then both modalities are noised at one t_aug per group of B / groups
    consecutive examples; the layout at the time floored to the 1000-step grid (the reference's
    MultinomialDiffusion.change_times_dtype), the image and the U-Net's input at t_aug itself."""
    cfg = make_config(lowres_resize="nearest", lowres_aug_t_max=0.3, lowres_aug_groups=groups)
    cfg.train.global_batch_size = B
    cfg.model.sr, cfg.model.lowres_size = True, (2, 2)
    process = joint.Process.from_config(cfg)
    batch, params, key = make_batch(), Params(), jax.random.key(5)

    @jax.jit
    def loss_and_condition(batch, key):
        seen = {}

        def denoise(p, x_t, y_t, logsnr, text, mask, drop, **lowres):
            seen.update(lowres)
            return jax_denoise(p, x_t, y_t, logsnr, text, mask, drop)

        return joint.loss(process, as_apply(denoise), params.jax(), batch, key), seen

    out, seen = loss_and_condition(batch, key)
    assert out["loss"].shape == (B,) and np.isfinite(out["loss"]).all()

    k_lowres = jax.random.split(key, 5)[4]
    k_time, k_noise = jax.random.split(k_lowres)
    k_img, k_lbl = jax.random.split(k_noise)
    t_aug = np.float64(jax.random.uniform(k_time, (groups,), maxval=0.3)).repeat(B // groups)
    assert len(set(t_aug)) == groups
    lam = np_logsnr("linear", t_aug)
    lam_lbl = np_logsnr("linear", np.floor(t_aug * 1000) / 1000)
    assert (np.abs(lam_lbl - lam) > 1e-4).all()  # the flooring is seen
    # PyTorch's nearest, floor(i * in / out): 4 -> 2 keeps pixels 0 and 2; 2 -> 4 repeats each.
    rows = np.array([0, 0, 2, 2])
    image_up = batch["image"][:, rows][:, :, rows]
    label_up = batch["label"][:, rows][:, :, rows]
    noise = np.float64(jax.random.normal(k_img, (B * H * W * 3,)).reshape(B, H, W, 3))
    a, s = np.sqrt(sigmoid(lam))[:, None, None, None], np.sqrt(sigmoid(-lam))[:, None, None, None]
    np.testing.assert_allclose(seen["lowres_image"], a * image_up + s * noise, atol=2e-6)
    keep = sigmoid(lam_lbl)[:, None, None, None]
    label = draw_labels(k_lbl, np.log(keep * onehot(label_up) + (1 - keep) / K))
    np.testing.assert_array_equal(seen["lowres_label"], label)
    np.testing.assert_allclose(seen["lowres_logsnr"], lam, rtol=1e-5)


def test_sr_shapes_default_resize():
    cfg = make_config()
    cfg.model.sr, cfg.model.lowres_size = True, (4, 4)
    process = joint.Process.from_config(cfg)
    batch = make_batch(size=(8, 8))
    seen = {}

    def denoise(p, x_t, y_t, logsnr, text, mask, drop, **lowres):
        seen.update(lowres)
        eps, logits = jax_denoise(p, x_t, y_t, logsnr, text, mask, drop)
        return eps + lowres["lowres_image"], logits

    apply, p = as_apply(denoise), Params().jax()
    out = jax.jit(lambda b, k: joint.loss(process, apply, p, b, k))(batch, jax.random.key(0))
    assert all(v.shape == (B,) for v in out.values())
    assert seen["lowres_image"].shape == (B, 8, 8, 3) and seen["lowres_logsnr"].shape == (B,)
    assert seen["lowres_label"].shape == (B, 8, 8) and seen["lowres_label"].dtype == jnp.int32


def test_gradients_finite():
    """Through both layout branches (i = 0 and i > 0) and the image term."""
    process = joint.Process.from_config(make_config(t_max=0.002))
    batch = make_batch()

    def mean_loss(p):
        out = joint.loss(process, as_apply(jax_denoise), p, batch, jax.random.key(11))
        return jnp.mean(out["loss"])

    grads = jax.jit(jax.grad(mean_loss))(Params().jax())
    for g in jax.tree.leaves(grads):
        assert np.isfinite(g).all() and np.abs(g).sum() > 0


def test_config_errors():
    cfg = make_config(lowres_resize="sideways")
    with pytest.raises(ValueError, match="lowres_resize"):
        joint.Process.from_config(cfg)
    cfg = make_config()
    cfg.model.sr = True
    with pytest.raises(ValueError, match="lowres_size"):
        joint.Process.from_config(cfg)


@pytest.mark.parametrize("groups, batch, accum", [(3, 8, 1), (16, 8, 1), (6, 12, 4), (0, 8, 1)])
def test_lowres_aug_groups_must_split_the_batch(groups, batch, accum):
    cfg = make_config(lowres_aug_groups=groups)
    cfg.train.global_batch_size, cfg.train.grad_accum_steps = batch, accum
    cfg.model.sr, cfg.model.lowres_size = True, (2, 2)
    with pytest.raises(ConfigError, match="lowres_aug_groups"):
        joint.Process.from_config(cfg)


@pytest.mark.parametrize("groups, accum, per_call", [(2, 1, 2), (8, 4, 2), (1, 4, 1), (2, 4, 1)])
def test_lowres_aug_groups_per_micro_batch(groups, accum, per_call):
    cfg = make_config(lowres_aug_groups=groups)
    cfg.train.global_batch_size, cfg.train.grad_accum_steps = 8, accum
    assert joint.Process.from_config(cfg).lowres_aug_groups == per_call
