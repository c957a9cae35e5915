"""Categorical kernels against brute-force Bayes' rule in float64 NumPy and sampling statistics."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gcd_jax.diffusion import categorical, schedules


def np_keep(t):
    """ᾱ_t = sigmoid(λ(t)) for the linear schedule, in float64."""
    logsnr = -np.log(np.expm1(1e-4 + 10.0 * t**2))
    return 1.0 / (1.0 + np.exp(-logsnr))


def transition_matrix(keep, k):
    """Q[i, j] = q(y' = j | y = i) = keep·[i = j] + (1 − keep)/K."""
    return keep * np.eye(k) + (1.0 - keep) / k


def f32_logsnr(t):
    return np.asarray(schedules.get_schedule("linear")(np.float32(t)))


def brute_force_posterior(y0, t, s):
    """q(y_s = i | y_t = j, y_0) for every (i, j): q(y_t|y_s) q(y_s|y_0) / q(y_t|y_0)."""
    k = len(y0)
    keep_t, keep_s = np_keep(t), np_keep(s)
    p_s = y0 @ transition_matrix(keep_s, k)  # q(y_s | y_0)
    q_ts = transition_matrix(keep_t / keep_s, k)  # q(y_t | y_s)
    p_t = p_s @ q_ts  # q(y_t | y_0)
    return p_s[:, None] * q_ts / p_t[None, :], p_s, p_t


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("soft", [False, True])
def test_posterior_is_bayes_rule(seed, soft):
    rng = np.random.default_rng(seed)
    k = int(rng.integers(2, 41))
    s, t = np.sort(rng.uniform(0.0, 1.0, 2))
    y0 = rng.dirichlet(np.ones(k)) if soft else np.eye(k)[rng.integers(k)]
    ref, _, _ = brute_force_posterior(y0, t, s)
    log_y0 = np.log(np.maximum(y0, 1e-30)).astype(np.float32)
    log_yt = categorical.index_to_log_onehot(jnp.arange(k), k)  # every observed y_t = j at once
    post = np.exp(
        categorical.q_posterior(
            jnp.broadcast_to(log_y0, (k, k)), log_yt, f32_logsnr(t), f32_logsnr(s)
        )
    )  # [j, i]
    np.testing.assert_allclose(post.T, ref, atol=2e-5)


@pytest.mark.parametrize("seed", range(4))
def test_marginal_composes_with_transition(seed):
    rng = np.random.default_rng(100 + seed)
    k = int(rng.integers(2, 41))
    s, t = np.sort(rng.uniform(0.0, 1.0, 2))
    y0 = rng.dirichlet(np.ones(k))
    _, p_s_ref, p_t_ref = brute_force_posterior(y0, t, s)
    log_y0 = np.log(y0).astype(np.float32)
    p_s = np.exp(categorical.q_probs(log_y0, f32_logsnr(s)))
    p_t = np.exp(categorical.q_probs(log_y0, f32_logsnr(t)))
    np.testing.assert_allclose(p_s, p_s_ref, atol=1e-5)
    np.testing.assert_allclose(p_t, p_t_ref, atol=1e-5)
    # The kernel's own q(y_s|y_0), moved on by the float64 transition, gives its q(y_t|y_0).
    composed = p_s.astype(np.float64) @ transition_matrix(np_keep(t) / np_keep(s), k)
    np.testing.assert_allclose(p_t, composed, atol=1e-5)


def test_gumbel_sample_frequencies():
    """Empirical class frequencies of 200k draws within 5 binomial standard errors."""
    n = 200_000
    probs = np.array([0.5, 0.25, 0.15, 0.07, 0.03, 0.0])
    log_probs = jnp.broadcast_to(jnp.log(jnp.maximum(probs, 1e-30)), (n, 6)).astype(jnp.float32)
    labels = np.asarray(categorical.sample(jax.random.key(0), log_probs))
    assert labels.dtype == np.int32 and labels.shape == (n,)
    freq = np.bincount(labels, minlength=6) / n
    se = np.sqrt(probs * (1 - probs) / n)
    np.testing.assert_array_less(np.abs(freq - probs), 5 * se + 1e-12)


def test_kl_matches_numpy():
    rng = np.random.default_rng(3)
    p, q = rng.dirichlet(np.ones(7), 5), rng.dirichlet(np.ones(7), 5)
    ref = np.sum(p * np.log(p / q), axis=-1)
    out = categorical.kl(np.log(p).astype(np.float32), np.log(q).astype(np.float32))
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("t", [1e-4, 0.5, 0.999])
def test_float32_stability_k20(t):
    k, shape = 20, (2, 4, 4)
    key = jax.random.key(4)
    logits = 30.0 * jax.random.normal(key, shape + (k,))
    labels = jax.random.randint(jax.random.key(5), shape, 0, k)
    logsnr_t, logsnr_s = f32_logsnr(t), f32_logsnr(t / 2 if t < 0.01 else t - 1e-3)
    log_y0 = categorical.index_to_log_onehot(labels, k)
    log_yt = categorical.index_to_log_onehot(jnp.roll(labels, 1), k)
    outs = [
        categorical.q_probs(log_y0, logsnr_t),
        categorical.q_probs(jax.nn.log_softmax(logits), logsnr_t),
        categorical.q_posterior(log_y0, log_yt, logsnr_t, logsnr_s),
        categorical.q_posterior(jax.nn.log_softmax(logits), log_yt, logsnr_t, logsnr_s),
    ]
    for out in outs:
        assert out.dtype == jnp.float32
        assert bool(jnp.all(jnp.isfinite(out)))
        np.testing.assert_allclose(jnp.exp(out).sum(-1), 1.0, atol=1e-5)
    sample = categorical.sample(key, outs[-1])
    assert bool(jnp.all((sample >= 0) & (sample < k)))


def test_log1mexp_accuracy():
    x = -np.logspace(-8, 2, 200).astype(np.float32)
    ref = np.log(-np.expm1(x.astype(np.float64)))
    np.testing.assert_allclose(categorical.log1mexp(x), ref, rtol=1e-5, atol=1e-12)


# ------------------------------------------------------------------------------- vb_loss

T = 1000
LINEAR = schedules.get_schedule("linear")


def vb_inputs(seed, b=3, h=2, w=3, k=5, first=(False, True, False)):
    rng = np.random.default_rng(seed)
    y0 = rng.integers(0, k, (b, h, w))
    yt = rng.integers(0, k, (b, h, w))
    logits = rng.normal(size=(b, h, w, k)).astype(np.float32) * 2
    i = np.where(first, 0, rng.integers(1, T, b))
    t, s = i / T, np.maximum(i - 1, 0) / T
    return y0, yt, logits, t, s, np.array(first)


def call_vb(y0, yt, log_y0_pred, t, s, first, k):
    return categorical.vb_loss(
        categorical.index_to_log_onehot(y0, k),
        categorical.index_to_log_onehot(yt, k),
        log_y0_pred,
        LINEAR(jnp.asarray(t, jnp.float32)),
        LINEAR(jnp.asarray(s, jnp.float32)),
        LINEAR(1.0),
        first,
        T,
    )


def test_vb_loss_matches_float64_reference():
    """The whole term recomputed with brute-force posteriors in float64."""
    k = 5
    y0, yt, logits, t, s, first = vb_inputs(0, k=k)
    pred = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    b, h, w = y0.shape
    ref = np.zeros(b)
    for n in range(b):
        total = 0.0
        for a in range(h):
            for c in range(w):
                onehot = np.eye(k)[y0[n, a, c]]
                if first[n]:
                    total += -np.log(pred[n, a, c, y0[n, a, c]]) * T
                else:
                    true, _, _ = brute_force_posterior(onehot, t[n], s[n])
                    model, _, _ = brute_force_posterior(pred[n, a, c], t[n], s[n])
                    p, q = true[:, yt[n, a, c]], model[:, yt[n, a, c]]
                    total += np.sum(p * (np.log(np.maximum(p, 1e-300)) - np.log(q))) * T
                p1 = onehot @ transition_matrix(np_keep(1.0), k)
                total += np.sum(p1 * np.log(p1 * k))
        ref[n] = total / (math.log(2) * k * h * w)
    out = call_vb(y0, yt, jax.nn.log_softmax(logits), t, s, first, k)
    assert out.shape == (b,)
    np.testing.assert_allclose(out, ref, rtol=2e-3, atol=1e-5)


def test_vb_loss_nonnegative_and_minimal_at_truth():
    k = 5
    y0, yt, logits, t, s, first = vb_inputs(1, k=k)
    at_truth = call_vb(y0, yt, categorical.index_to_log_onehot(y0, k), t, s, first, k)
    # At the truth only the prior KL(q(y_1|y_0) ‖ uniform) remains, the same for every pixel.
    p1 = transition_matrix(np_keep(1.0), k)[0]
    prior_only = np.sum(p1 * np.log(p1 * k)) / (math.log(2) * k)
    np.testing.assert_allclose(at_truth, prior_only, atol=1e-7)
    tol = 1e-6  # float32 rounding of KL terms that are exactly 0 in exact arithmetic
    rng = np.random.default_rng(2)
    for scale in [0.1, 1.0, 5.0]:
        noisy = np.eye(k)[y0] * 10 + scale * rng.normal(size=logits.shape)
        other = call_vb(y0, yt, jax.nn.log_softmax(noisy.astype(np.float32)), t, s, first, k)
        assert bool(jnp.all(other >= -tol))
        assert bool(jnp.all(other >= at_truth - tol))
    random_pred = call_vb(y0, yt, jax.nn.log_softmax(logits), t, s, first, k)
    assert bool(jnp.all(random_pred > at_truth))


def test_vb_loss_jit_vmap_grad():
    k = 5
    y0, yt, logits, t, s, first = vb_inputs(3, k=k)

    def loss(lg, y0, yt, t, s, first):
        return call_vb(y0, yt, jax.nn.log_softmax(lg), t, s, first, k).sum()

    eager = loss(logits, y0, yt, t, s, first)
    np.testing.assert_allclose(jax.jit(loss)(logits, y0, yt, t, s, first), eager, rtol=1e-5)
    stacked = [np.stack([a, a]) for a in (logits, y0, yt, t, s, first)]
    np.testing.assert_allclose(jax.vmap(loss)(*stacked), [eager, eager], rtol=1e-5)
    grad = jax.grad(loss)(logits, y0, yt, t, s, first)
    assert bool(jnp.all(jnp.isfinite(grad)))
    # Finite differences along a random direction.
    direction = np.random.default_rng(4).normal(size=logits.shape).astype(np.float32)
    eps = 1e-2
    fd = (
        loss(logits + eps * direction, y0, yt, t, s, first)
        - loss(logits - eps * direction, y0, yt, t, s, first)
    ) / (2 * eps)
    np.testing.assert_allclose(jnp.vdot(grad, direction), fd, rtol=2e-2)
