"""The sampler, outpainting and the SR cascade, with denoisers whose answers are known exactly.

- Oracle: the data is one pair (x0, y0), so ε = (x_t − α x0)/σ and the layout logits are log
  one-hot y0 are the exact denoiser; sampling must return the pair.
- Two-point mixture: the exact joint posterior p(mode | x_t, y_t) gives the posterior-mean ε and
  the posterior layout distribution; samples must be one of the two pairs (image and layout of the
  same mode), in the mixture's proportions.
"""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import base
from gcd_jax import sharding
from gcd_jax.diffusion import categorical, gaussian, sampling
from gcd_jax.inference import cascade, generation
from gcd_jax.inference.model import Model
from gcd_jax.models import build_unet
from gcd_jax.models.networks import Apply

K = 5
LOG_EPS = np.log(1e-30)


def make_sampler(image="linear", label="linear", steps=10, resample=1, joint=True, **kw):
    cfg = base.get_config()
    cfg.data.num_classes = K
    cfg.model.joint = joint
    cfg.sample.noise_schedule, cfg.sample.noise_schedule_lbl = image, label
    cfg.sample.num_steps, cfg.sample.resample_steps = steps, resample
    for name, value in kw.items():
        setattr(cfg.sample, name, value)
    return sampling.Sampler.from_config(cfg)


def alpha_sigma(logsnr, ndim=4):
    logsnr = logsnr.reshape(logsnr.shape + (1,) * (ndim - 1))
    return jnp.sqrt(jax.nn.sigmoid(logsnr)), jnp.sqrt(jax.nn.sigmoid(-logsnr))


def oracle(params, x_t, y_t, logsnr, cond):
    """Exact denoiser of the single pair ``params = (x0, y0)``."""
    x0, y0 = params
    alpha, sigma = alpha_sigma(logsnr)
    eps = (x_t - alpha * x0) / sigma
    logits = jnp.where(jax.nn.one_hot(y0, K) > 0, 0.0, LOG_EPS) if y_t is not None else None
    return eps, logits


def random_pair(seed, b=2, h=8, w=8):
    r = np.random.default_rng(seed)
    x0 = r.uniform(-0.9, 0.9, (b, h, w, 3)).astype(np.float32)
    return jnp.asarray(x0), jnp.asarray(r.integers(0, K, (b, h, w)), jnp.int32)


@pytest.mark.parametrize("final_step, atol", [("x0", 1e-3), ("reference", 5e-3)])
@pytest.mark.parametrize(
    "image, label, steps",
    [("linear", "linear", 3), ("cosine", "cosine_p", 10), ("linear", "cosine", 25)],
)
def test_oracle_returns_the_pair(image, label, steps, final_step, atol):
    """'x0' ends on x̂_0 = x0; 'reference' on the posterior mean at λ(0), which keeps the last
    state's noise scaled by α_0 e^(λ_t − λ_0) σ_t / α_t (below 3e-3 on these grids). The layout is
    y0 exactly in both: the reference's last marginal is ŷ_0 itself, one-hot here."""
    x0, y0 = random_pair(0)
    sampler = make_sampler(image, label, steps, final_step=final_step)
    x, y = sampling.sample_pairs(sampler, oracle, (x0, y0), {}, jax.random.key(0), y0.shape)
    np.testing.assert_allclose(x, x0, atol=atol)
    np.testing.assert_array_equal(y, y0)


def test_oracle_image_only():
    x0, _ = random_pair(1)
    sampler = make_sampler(steps=5, joint=False)

    def apply(params, x_t, y_t, logsnr, cond):
        assert y_t is None
        return oracle((params, None), x_t, None, logsnr, cond)

    x, y = sampling.sample_pairs(sampler, apply, x0, {}, jax.random.key(1), x0.shape[:3])
    assert y is None
    np.testing.assert_allclose(x, x0, atol=1e-3)


# ------------------------------------------------------------------ two-point mixture
MODES_X = jnp.array([np.full((2, 2, 3), 0.5), np.full((2, 2, 3), -0.5)], jnp.float32)
MODES_Y = jnp.array([[[0, 1], [2, 3]], [[4, 4], [1, 0]]], jnp.int32)


def mixture(log_pi, x_t, y_t, logsnr, cond):
    """Posterior-mean denoiser of two-point data with log mode weights ``log_pi`` (its
    parameters); both schedules are the same, so the layout's log-SNR is the image's."""
    alpha, sigma = alpha_sigma(logsnr)
    sq = jnp.sum((x_t[:, None] - alpha[:, None] * MODES_X[None]) ** 2, axis=(2, 3, 4))  # [B, M]
    keep = jax.nn.sigmoid(logsnr)[:, None, None, None]
    # q(y_t | y_mode) per pixel: keep·[y_t = y_mode] + (1 − keep)/K.
    match = (y_t[:, None] == MODES_Y[None]).astype(jnp.float32)  # [B, M, H, W]
    log_lik = jnp.sum(jnp.log(keep * match + (1 - keep) / K), axis=(2, 3))
    log_w = jax.nn.log_softmax(log_pi - sq / (2 * sigma[:, :, 0, 0] ** 2) + log_lik, axis=-1)
    x0_hat = jnp.einsum("bm,mhwc->bhwc", jnp.exp(log_w), MODES_X)
    log_onehot = jnp.where(jax.nn.one_hot(MODES_Y, K) > 0, 0.0, LOG_EPS)  # [M, H, W, K]
    logits = jax.nn.logsumexp(log_w[:, :, None, None, None] + log_onehot[None], axis=1)
    return (x_t - alpha * x0_hat) / sigma, logits


def mode_of(x, y, atol=1e-3):
    """Index of the mode each sample equals (image within atol and layout exactly), else -1."""
    x_ok = np.abs(np.asarray(x)[:, None] - np.asarray(MODES_X)[None]).max(axis=(2, 3, 4)) < atol
    y_ok = (np.asarray(y)[:, None] == np.asarray(MODES_Y)[None]).all(axis=(2, 3))
    both = x_ok & y_ok
    return np.where(both.any(1), both.argmax(1), -1)


@pytest.mark.parametrize("final_step, atol", [("x0", 1e-3), ("reference", 1e-2)])
def test_mixture_modes_in_proportion(final_step, atol):
    """512 samples of a 30/70 mixture: every sample is a whole mode (image and layout agree) and
    mode 0 appears 0.3 ± 0.07 of the time. Binomial σ = 0.02; the 20-step discretisation shifts
    the proportion to 0.28 (measured on 8192 samples: 0.280 at 20 steps, 0.292 at 100). The
    'reference' last step ends on the posterior mean at λ(0), which keeps a noise of scale
    α_0 e^(λ_t − λ_0) σ_t / α_t ≈ 7e-4 (t = 1/20, linear) of the last state: the image within 1e-2
    (the modes are 1 apart), the layout exactly a mode's."""
    sampler = make_sampler(steps=20, final_step=final_step)
    log_pi = jnp.log(jnp.array([0.3, 0.7]))
    x, y = sampling.sample_pairs(sampler, mixture, log_pi, {}, jax.random.key(2), (512, 2, 2))
    modes = mode_of(x, y, atol)
    assert (modes >= 0).all()
    assert abs(np.mean(modes == 0) - 0.3) < 0.07


# ------------------------------------------------------------------ one step, exactly
def np_sigmoid(x):
    return 1 / (1 + np.exp(-np.float64(x)))


def np_linear(t):
    return -np.log(np.expm1(1e-4 + 10.0 * np.float64(t) ** 2))


@pytest.mark.parametrize(
    "t, s, final_step", [(0.6, 0.45, "reference"), (0.05, 0.0, "x0"), (0.05, 0.0, "reference")]
)
def test_reverse_step_matches_numpy(t, s, final_step):
    """One step against the formulas of docs/design.md §3 in float64, with the step's own noise draws
    (step key -> (image noise, layout Gumbel)) and a denoiser returning fixed arrays. The layout
    draw is reproduced by ``categorical.sample`` from the posterior computed here."""
    r = np.random.default_rng(3)
    b, h, w = 2, 4, 4
    x_t = r.normal(size=(b, h, w, 3)).astype(np.float32)
    y_t = r.integers(0, K, (b, h, w)).astype(np.int32)
    eps = (2.0 * r.normal(size=(b, h, w, 3))).astype(np.float32)  # x̂0 beyond [-1, 1]
    logits = (2.0 * r.normal(size=(b, h, w, K))).astype(np.float32)
    sampler = make_sampler(threshold_p=0.9, final_step=final_step)
    key = jax.random.key(4)
    denoise = lambda *_: (jnp.asarray(eps), jnp.asarray(logits))
    x_s, y_s = jax.jit(lambda k: sampling.reverse_step(sampler, denoise, x_t, y_t, t, s, k, None))(
        key
    )
    k_image, k_label = jax.random.split(key)
    noise = np.float64(jax.random.normal(k_image, (x_t.size,)).reshape(x_t.shape))  # flat

    lam_t, lam_s = np_linear(t), np_linear(s)
    a_t, s_t, a_s = (
        np.sqrt(np_sigmoid(lam_t)),
        np.sqrt(np_sigmoid(-lam_t)),
        np.sqrt(np_sigmoid(lam_s)),
    )
    x0 = (x_t - s_t * np.float64(eps)) / a_t
    thr = np.maximum(np.quantile(np.abs(x0).reshape(b, -1), 0.9, axis=1), 1.0)[:, None, None, None]
    x0 = np.clip(x0, -thr, thr) / thr
    assert (thr > 1).all()
    p0 = np.exp(logits - logits.max(-1, keepdims=True))
    p0 = p0 / p0.sum(-1, keepdims=True)
    if s == 0 and final_step == "x0":
        np.testing.assert_allclose(x_s, x0, atol=1e-5)
        np.testing.assert_array_equal(y_s, p0.argmax(-1))
        return
    c = -np.expm1(lam_t - lam_s)
    mean = a_s * (x_t * (1 - c) / a_t + c * x0)
    keep_s, keep_ts = np_sigmoid(lam_s), np_sigmoid(lam_t) / np_sigmoid(lam_s)
    marginal = keep_s * p0 + (1 - keep_s) / K
    if s == 0:  # 'reference': no noise; the marginal at s = 0 is ŷ0 itself (joint_imagen.py:190)
        np.testing.assert_allclose(x_s, np.clip(mean, -1, 1), atol=1e-5)
        assert np.abs(mean - x0).max() > 1e-3  # the posterior mean, not x̂0
        marginal = p0
    else:
        np.testing.assert_allclose(x_s, mean + np.sqrt(np_sigmoid(-lam_s) * c) * noise, atol=1e-5)
    post = (keep_ts * np.eye(K)[y_t] + (1 - keep_ts) / K) * marginal
    log_post = np.log(post / post.sum(-1, keepdims=True)).reshape(-1, K).astype(np.float32)
    y_ref = categorical.sample(k_label, log_post).reshape(b, h, w)  # Gumbel-max on [N, K]
    np.testing.assert_array_equal(y_s, y_ref)


def net(params, x_t, y_t, logsnr, cond):
    """A small nonlinear stand-in network with parameters (for loop / sharding equality)."""
    y = jax.nn.one_hot(y_t, K)
    h = jnp.tanh(x_t @ params["a"] + y @ params["b"] + 0.1 * logsnr[:, None, None, None])
    h = h + cond["text"][:, None, None, :]
    return h @ params["c"], h @ params["d"]


def net_params(seed=0, width=4):
    r = np.random.default_rng(seed)
    shapes = {"a": (3, width), "b": (K, width), "c": (width, 3), "d": (width, K)}
    return {n: jnp.asarray(r.normal(size=sh), jnp.float32) for n, sh in shapes.items()}


def test_compiled_loop_equals_python_loop_and_is_reproducible():
    sampler = make_sampler(steps=4)
    params = net_params()
    denoise = lambda *a: net(params, *a)  # noqa: E731
    cond = {"text": jnp.linspace(-1, 1, 3 * 4).reshape(3, 4)}
    key, shape = jax.random.key(5), (3, 4, 4)
    x, y = sampling.sample_pairs(sampler, net, params, cond, key, shape)

    k_init, k_steps = jax.random.split(key)
    xs, ys = sampling.initial_state(sampler, k_init, shape)
    times = sampling.time_grid(4)
    step = jax.jit(
        lambda x, y, t, s, k: sampling.reverse_step(sampler, denoise, x, y, t, s, k, cond)
    )
    for n, k in enumerate(jax.random.split(k_steps, 4)):
        xs, ys = step(xs, ys, times[n], times[n + 1], k)
    np.testing.assert_allclose(x, xs, atol=1e-5)
    np.testing.assert_array_equal(y, ys)

    x2, y2 = sampling.sample_pairs(sampler, net, params, cond, key, shape)
    np.testing.assert_array_equal(x, x2)
    np.testing.assert_array_equal(y, y2)
    x3, _ = sampling.sample_pairs(sampler, net, params, cond, jax.random.key(6), shape)
    assert np.abs(np.asarray(x) - np.asarray(x3)).max() > 0.1


def test_time_grid():
    np.testing.assert_allclose(sampling.time_grid(4), [1.0, 0.75, 0.5, 0.25, 0.0])
    assert sampling.time_grid(7)[-1] == 0.0


# ------------------------------------------------------------------ outpainting
def test_renoise_is_the_forward_transition():
    """α_{t|s} α_s = α_t, α_{t|s}² σ_s² + σ_{t|s}² = σ_t², q(y_t|y_s) ∘ q(y_s|y0) = q(y_t|y0)."""
    lam_t, lam_s = jnp.array([-3.0, 0.5, 4.0]), jnp.array([-1.0, 2.0, 9.0])
    lam_ts = sampling.renoise_logsnr(lam_t, lam_s)
    a_ts2 = np.float64(jax.nn.sigmoid(lam_ts))
    a_t2, a_s2 = np_sigmoid(lam_t), np_sigmoid(lam_s)
    np.testing.assert_allclose(a_ts2 * a_s2, a_t2, rtol=1e-5)
    np.testing.assert_allclose(a_ts2 * (1 - a_s2) + np_sigmoid(-lam_ts), 1 - a_t2, rtol=1e-5)
    log_y0 = categorical.index_to_log_onehot(jnp.arange(3) % K, K)
    two_hops = categorical.q_probs(categorical.q_probs(log_y0, lam_s), lam_ts)
    np.testing.assert_allclose(
        jnp.exp(two_hops), jnp.exp(categorical.q_probs(log_y0, lam_t)), atol=1e-6
    )


def test_outpaint_fills_the_unknown_region_from_the_model():
    """Known: pair A (left half of the image, top half of the layout); model: the oracle of pair
    B. The unknown regions come from the model: B. (The known regions are A by construction, the
    sampler writes them back; ``test_outpaint_completes_consistently`` checks that the model sees
    them.)"""
    xa, ya = random_pair(6)
    xb, yb = random_pair(7)
    cols = np.arange(8)[None, None, :] < 4
    rows = np.arange(8)[None, :, None] < 4
    image_mask = np.broadcast_to(cols, ya.shape)
    label_mask = np.broadcast_to(rows, ya.shape)
    sampler = make_sampler(steps=5, resample=3)
    x, y = sampling.outpaint(
        sampler, oracle, (xb, yb), {}, jax.random.key(8), xa, image_mask, ya, label_mask
    )
    m = image_mask[..., None]
    np.testing.assert_allclose(np.where(m, 0, x), np.where(m, 0, xb), atol=1e-3)
    np.testing.assert_array_equal(np.where(label_mask, 0, y), np.where(label_mask, 0, yb))
    assert (np.asarray(ya) != np.asarray(yb))[~label_mask].any()  # B differs where it matters


def test_outpaint_completes_consistently():
    """Mixture model, one column of mode 0's image known, the rest of the image and the whole
    layout unknown: most completions (other column and layout) must be mode 0's, although the
    prior favours mode 1 (70 %): the model sees the known column. Measured at 10 steps, R = 3,
    64 samples: 56 whole mode-0 pairs; the other 8 are mode 1 outside the known column (their
    unknown half and layout committed to mode 1 while the known column was still noise)."""
    log_pi = jnp.log(jnp.array([0.3, 0.7]))
    b = 64
    known = jnp.broadcast_to(MODES_X[0], (b, 2, 2, 3))
    mask = np.broadcast_to(np.array([[True, False], [True, False]]), (b, 2, 2))
    sampler = make_sampler(steps=10, resample=3)
    x, y = sampling.outpaint(sampler, mixture, log_pi, {}, jax.random.key(16), known, mask)
    completed = np.asarray(x)[:, :, 1].mean(axis=(1, 2)) > 0  # the unknown column is mode 0's
    assert completed.mean() > 0.75
    assert np.mean(mode_of(x, y) == 0) > 0.75


def test_outpaint_cross_modal():
    """Mixture model with the minority mode 0 known in one modality (64 samples, 10 steps).

    Segmentation (image known): every layout is mode 0's. Semantic image synthesis (layout known):
    the image must follow the 4-pixel layout, whose evidence only becomes decisive late, so
    resampling matters: measured on 256 samples, mode 0 in 58 % of the images without resampling
    (R = 1) and 87 % with R = 5 (prior: 30 %)."""
    log_pi = jnp.log(jnp.array([0.3, 0.7]))
    b, key = 64, jax.random.key(9)
    x_known = jnp.broadcast_to(MODES_X[0], (b, 2, 2, 3))
    y_known = jnp.broadcast_to(MODES_Y[0], (b, 2, 2))
    full, none = np.ones((b, 2, 2), bool), np.zeros((b, 2, 2), bool)
    repaint = make_sampler(steps=10, resample=5)

    x, y = sampling.outpaint(repaint, mixture, log_pi, {}, key, x_known, full)
    np.testing.assert_array_equal(mode_of(x, y), 0)  # the generated layouts are mode 0's

    fractions = []
    for sampler in (make_sampler(steps=10, resample=1), repaint):
        args = (key, 0 * x_known, none, y_known, full)
        x, y = sampling.outpaint(sampler, mixture, log_pi, {}, *args)
        fractions.append(np.mean(mode_of(x, y) == 0))  # the generated images follow it
    assert fractions[1] > 0.75 and fractions[1] - fractions[0] > 0.15, fractions


# ------------------------------------------------------------------ guidance with the U-Net
def random_variables(model, args, seed=0):
    """Random parameters of the right shapes (``eval_shape``: no compiled init), drawn in NumPy;
    the zero-initialised heads would otherwise make every comparison trivial."""
    shapes = jax.eval_shape(model.init, jax.random.key(0), *args)
    r = np.random.default_rng(seed)

    def draw(path, leaf):
        if len(leaf.shape) > 1:
            fan_in = np.prod(leaf.shape[:-1])
            return jnp.asarray(r.normal(size=leaf.shape) / np.sqrt(fan_in), jnp.float32)
        centre = 1.0 if jax.tree_util.keystr(path).endswith("'scale']") else 0.0
        return jnp.asarray(centre + 0.1 * r.normal(size=leaf.shape), jnp.float32)

    return jax.tree_util.tree_map_with_path(draw, shapes)


def test_guidance_with_the_unet(tiny_config):
    """Guidance over the U-Net's batched cond + null forward: no scale (``w = 1``) is the
    conditional forward, ``w = 0`` the null one, ``w`` is null + w·(cond − null), per head when
    given as ``[w_image, w_layout]``; the scale is traced (changing it does not recompile)."""
    tiny_config.text.max_length = 4
    model = build_unet(tiny_config)
    b, h, w, k = 2, 8, 8, tiny_config.data.num_classes
    r = np.random.default_rng(0)
    x_t = jnp.asarray(r.normal(size=(b, h, w, 3)), jnp.float32)
    y_t = jnp.asarray(r.integers(0, k, (b, h, w)), jnp.int32)
    logsnr = jnp.array([-2.0, 3.0])
    cond = {
        "text": jnp.asarray(r.normal(size=(b, 4, 16)), jnp.float32),
        "text_mask": jnp.array([[True, True, False, False], [True, True, True, True]]),
    }
    args = (x_t, y_t, logsnr, cond["text"], cond["text_mask"], jnp.zeros((b,), bool))
    variables = random_variables(model, args)
    eps_c, log_c = jax.jit(model.apply)(variables, *args)

    apply, params = Apply(model), {"unet": variables["params"]}
    call = jax.jit(lambda w: sampling.guided(apply, params, w, x_t, y_t, logsnr, cond))
    out = {w: call(jnp.float32(w)) for w in (0, 1, 3)}
    assert call._cache_size() == 1
    unguided = jax.jit(lambda: sampling.guided(apply, params, None, x_t, y_t, logsnr, cond))()
    for single in (out[1], unguided):
        np.testing.assert_allclose(single[0], eps_c, atol=2e-5)
        np.testing.assert_allclose(single[1], log_c, atol=2e-5)
    (eps_n, log_n) = out[0]
    assert np.abs(np.asarray(eps_c - eps_n)).max() > 1e-2
    assert np.abs(np.asarray(log_c - log_n)).max() > 1e-2
    np.testing.assert_allclose(out[3][0], eps_n + 3 * (eps_c - eps_n), atol=2e-5)
    np.testing.assert_allclose(out[3][1], log_n + 3 * (log_c - log_n), atol=2e-5)
    # One w per head: ε guided at 3, the logits unguided (w = 0: the null forward's).
    eps_3, log_0 = jax.jit(
        lambda: sampling.guided(apply, params, jnp.array([3.0, 0.0]), x_t, y_t, logsnr, cond)
    )()
    np.testing.assert_allclose(eps_3, eps_n + 3 * (eps_c - eps_n), atol=2e-5)
    np.testing.assert_allclose(log_0, log_n, atol=2e-5)


# ------------------------------------------------------------------ SR cascade
def lowres_oracle(params, x_t, y_t, logsnr, cond):
    """SR denoiser whose data is its (clean) low-res condition: x0 = lowres_image / α_aug,
    y0 = lowres_label. With λ_aug = 30 the condition is clean to 3e-7."""
    alpha, sigma = alpha_sigma(logsnr)
    alpha_aug, _ = alpha_sigma(cond["lowres_logsnr"])
    x0 = cond["lowres_image"] / alpha_aug
    logits = jnp.where(jax.nn.one_hot(cond["lowres_label"], K) > 0, 0.0, LOG_EPS)
    return (x_t - alpha * x0) / sigma, logits


class OracleNets:
    """Stands in for ``Networks`` in an inference ``Model``: the given ``apply`` and an all-zero
    text condition (the oracles ignore the text)."""

    def __init__(self, apply):
        self.apply, self.text = apply, self

    def tokenize(self, prompts):
        return np.zeros((len(prompts), 1), np.int32), np.ones((len(prompts), 1), bool)

    def encode_text(self, params, frozen, tokens, mask):
        return jnp.zeros((*tokens.shape, 1))


def oracle_model(apply, params, size, sampler, sr=False):
    cfg = base.get_config()
    cfg.data.num_classes, cfg.data.image_size = K, size
    cfg.model.sr, cfg.model.lowres_size = sr, (4, 4)
    cfg.sample.guidance_scale, cfg.sample.batch_size = 1.0, 2
    return Model(cfg, OracleNets(apply), params, None, 0, sampler)


def test_cascade_upsamples_base_samples():
    """Base stage: oracle of a 4×4 pair; SR stage (8×8): the low-res-copying oracle. The SR output
    is the base pair upsampled (nearest here), so the conditioning plumbing is exact; through the
    inference cascade (``gcd_jax.inference.cascade``) the CLI, the page and evaluation use."""
    ONE = sharding.make_mesh(jax.devices()[:1])  # the oracles' data has the batch's size
    xa, ya = random_pair(10, h=4, w=4)
    sr_sampler = sampling.Sampler(
        **{
            **vars(make_sampler(steps=3)),
            "lowres_logsnr": lambda t: 30.0 + 0 * t,
            "lowres_resize": "nearest",
        }
    )
    base_model = oracle_model(oracle, (xa, ya), (4, 4), make_sampler(steps=3))
    sr_model = oracle_model(lowres_oracle, (), (8, 8), sr_sampler, sr=True)
    up = lambda a: np.repeat(np.repeat(np.asarray(a), 2, axis=1), 2, axis=2)
    prompts = ["", ""]
    (xb, yb), (x, y) = cascade.cascade(base_model, sr_model, prompts, jax.random.key(11), mesh=ONE)
    np.testing.assert_allclose(xb, xa, atol=1e-3)
    np.testing.assert_array_equal(yb, ya)
    assert x.shape == (2, 8, 8, 3) and y.shape == (2, 8, 8)
    np.testing.assert_allclose(x, up(xa), atol=2e-3)
    np.testing.assert_array_equal(y, up(ya))

    # Starting at the SR stage from a given pair (the CLI's --image/--layout).
    xc, yc = random_pair(12, h=4, w=4)
    x, y = generation.generate(sr_model, prompts, jax.random.key(13), lowres=(xc, yc), mesh=ONE)
    np.testing.assert_allclose(x, up(xc), atol=2e-3)
    np.testing.assert_array_equal(y, up(yc))

    # A known layout at the SR size: the base stage is given it downsized, both keep it.
    known = cascade.Known(
        np.zeros((2, 8, 8, 3), np.float32),
        np.zeros((2, 8, 8), bool),
        up(ya),
        np.ones((2, 8, 8), bool),
    )
    (xb, yb), (x, y) = cascade.cascade(
        base_model, sr_model, prompts, jax.random.key(14), known, mesh=ONE
    )
    np.testing.assert_array_equal(yb, ya)
    np.testing.assert_array_equal(y, up(ya))
    np.testing.assert_allclose(x, up(xa), atol=2e-3)


def test_upsampled_condition_noise_level():
    """The SR condition at the fixed augmentation time: λ = λ_lowres(lowres_aug_t), image noised
    with that α, σ (default bilinear upsampling of a constant image is the constant)."""
    sampler = make_sampler(lowres_aug_t=0.2)
    image = jnp.full((64, 4, 4, 3), 0.5)
    label = jnp.zeros((64, 4, 4), jnp.int32)
    condition = jax.jit(lambda k: sampling.upsampled_condition(sampler, image, label, (8, 8), k))
    out = condition(jax.random.key(14))
    lam = np_linear(0.2)
    np.testing.assert_allclose(out["lowres_logsnr"], np.full(64, lam), rtol=1e-5)
    x = np.asarray(out["lowres_image"])
    assert x.shape == (64, 8, 8, 3)
    assert abs(x.mean() - 0.5 * np.sqrt(np_sigmoid(lam))) < 0.01
    assert abs(x.std() - np.sqrt(np_sigmoid(-lam))) < 0.01
    keep = np_sigmoid(lam) + (1 - np_sigmoid(lam)) / K  # P(label kept)
    assert abs(np.mean(np.asarray(out["lowres_label"]) == 0) - keep) < 0.02


# ------------------------------------------------------------------ sharding
def test_sharded_sampling_equals_single_device():
    """8 fake CPU devices (tests/conftest.py), batch sharded over ``data``: the same samples and
    the same outpainting as on one device."""
    assert jax.device_count() == 8
    one_device, mesh = sharding.make_mesh(jax.devices()[:1]), sharding.make_mesh()
    params = net_params()
    cond = {"text": jnp.linspace(-1, 1, 16 * 4).reshape(16, 4)}
    sampler = make_sampler(steps=3)
    key = jax.random.key(15)
    one = sampling.sample_pairs(sampler, net, params, cond, key, (16, 4, 4), mesh=one_device)
    many = sampling.sample_pairs(sampler, net, params, cond, key, (16, 4, 4), mesh=mesh)
    assert len(many[0].sharding.device_set) == 8
    np.testing.assert_allclose(np.asarray(one[0]), np.asarray(many[0]), atol=1e-6)
    np.testing.assert_array_equal(np.asarray(one[1]), np.asarray(many[1]))
    # Outpainting: left half of the image and top half of the layout known, 2 resamplings.
    image, label = np.asarray(one[0])[::-1], np.asarray(one[1])[::-1]
    image_mask = np.broadcast_to(np.arange(4)[None, None, :] < 2, (16, 4, 4))
    label_mask = np.broadcast_to(np.arange(4)[None, :, None] < 2, (16, 4, 4))
    repaint = make_sampler(steps=3, resample=2)
    args = (repaint, net, params, cond, key, image, image_mask, label, label_mask)
    one = sampling.outpaint(*args, mesh=one_device)
    many = sampling.outpaint(*args, mesh=mesh)
    assert len(many[0].sharding.device_set) == 8
    np.testing.assert_allclose(np.asarray(one[0]), np.asarray(many[0]), atol=1e-6)
    np.testing.assert_array_equal(np.asarray(one[1]), np.asarray(many[1]))


def test_cityscapes_base_samples_as_test_base_sh():
    """The authors' scripts/cityscapes/test_base.sh passes no --noise_schedules, so test.py's
    defaults (cosine, cosine_p with p = 1) sample the model that trained linear/linear."""
    from experiments import cityscapes

    cfg = cityscapes.get_config()
    sampler = sampling.Sampler.from_config(cfg)
    assert (cfg.diffusion.noise_schedule, cfg.diffusion.noise_schedule_lbl) == ("linear", "linear")
    assert (sampler.image_logsnr.name, sampler.label_logsnr.name) == ("cosine", "cosine_p")
    assert sampler.label_logsnr.cosine_p == 1.0 and sampler.final_step == "reference"


FINAL_STEP_FIXTURE = os.path.join(os.path.dirname(__file__), "fixtures", "final_step_reference.npz")


@pytest.mark.parametrize("image, label", [("linear", "linear"), ("cosine", "cosine_p")])
def test_final_step_matches_the_reference(image, label):
    """The last step (t = 1/100 -> 0) against the authors' JointImagen.p_sample with t_next = 0
    and p_sample_loop's clamp (tests/fixtures/make_final_step_fixture.py): the image to float32
    rounding, the layout posterior to 5e-4 and the same Gumbel-max draw from it."""
    f = np.load(FINAL_STEP_FIXTURE)
    get = lambda name: f[f"{image}/{name}"]  # noqa: E731
    sampler = make_sampler(image, label, steps=100, threshold_p=0.95, final_step="reference")
    denoise = lambda *_: (jnp.asarray(get("eps")), jnp.asarray(get("logits")))  # noqa: E731
    key = jax.random.key(11)
    x, y = sampling.reverse_step(
        sampler, denoise, get("x_t"), get("y_t"), get("t"), jnp.float32(0.0), key, None
    )
    np.testing.assert_allclose(x, get("image"), atol=2e-5)
    x0_hat = gaussian.predict_x0(get("x_t"), get("eps"), sampler.image_logsnr(get("t")))
    assert (np.quantile(np.abs(x0_hat).reshape(2, -1), 0.95, axis=1) > 1).all()  # thresholded
    log_post = categorical.posterior_given_marginal(
        jax.nn.log_softmax(jnp.asarray(get("logits")), -1),
        categorical.index_to_log_onehot(jnp.asarray(get("y_t")), K),
        sampler.label_logsnr(get("t")),
        sampler.label_logsnr(jnp.float32(0.0)),
    )
    # The reference's keep table is a float32 cumulative sum of log ratios: measured 1.3e-4 apart.
    np.testing.assert_allclose(log_post, get("log_post"), atol=5e-4)
    k_label = jax.random.split(key)[1]
    np.testing.assert_array_equal(y, categorical.sample(k_label, jnp.asarray(get("log_post"))))
