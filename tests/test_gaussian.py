"""Gaussian kernels against closed-form Gaussian algebra and sampling statistics."""

import jax
import numpy as np
import pytest

from gcd_jax.diffusion import gaussian


def np_sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


@pytest.mark.parametrize("logsnr_t,logsnr_s", [(-3.0, 1.0), (0.5, 0.6), (-9.0, 9.0), (2.0, 7.0)])
def test_posterior_is_gaussian_conditioning(logsnr_t, logsnr_s):
    """q(x_s|x_t,x_0) from the joint of (x_s, x_t) given x_0, conditioned in float64."""
    rng = np.random.default_rng(0)
    x0 = rng.uniform(-1, 1, (2, 4, 5, 3))
    x_t = rng.normal(size=x0.shape)
    a_s2, a_t2 = np_sigmoid(logsnr_s), np_sigmoid(logsnr_t)
    s_s2, s_t2 = 1 - a_s2, 1 - a_t2
    a_ts = np.sqrt(a_t2 / a_s2)  # x_t = a_ts x_s + noise
    cov_st = a_ts * s_s2  # Cov(x_s, x_t)
    mean_ref = np.sqrt(a_s2) * x0 + cov_st / s_t2 * (x_t - np.sqrt(a_t2) * x0)
    var_ref = s_s2 - cov_st**2 / s_t2
    mean, var = gaussian.q_posterior(
        x0.astype(np.float32),
        x_t.astype(np.float32),
        np.full(2, logsnr_t, np.float32),
        np.full(2, logsnr_s, np.float32),
    )
    np.testing.assert_allclose(mean, mean_ref, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(np.broadcast_to(var, mean.shape), var_ref, rtol=1e-4, atol=1e-7)


def test_q_sample_moments():
    """Empirical mean/variance of x_t over 200k draws; tolerance 5 standard errors."""
    n, logsnr = 200_000, np.float32(0.7)
    x0 = np.array([0.8, -0.3, 0.0], np.float32)
    noise = jax.random.normal(jax.random.key(0), (n, 3))
    x_t = np.asarray(gaussian.q_sample(np.broadcast_to(x0, (n, 3)), np.full(n, logsnr), noise))
    alpha2 = np_sigmoid(float(logsnr))
    sd = np.sqrt(1 - alpha2)
    np.testing.assert_array_less(np.abs(x_t.mean(0) - np.sqrt(alpha2) * x0), 5 * sd / np.sqrt(n))
    # Var of a sample variance of a Gaussian: 2 σ⁴ / (n − 1).
    np.testing.assert_array_less(np.abs(x_t.var(0) - sd**2), 5 * np.sqrt(2 / n) * sd**2)


def test_predict_x0_inverts_q_sample():
    key_x, key_e = jax.random.split(jax.random.key(1))
    x0 = jax.random.uniform(key_x, (3, 8, 6, 3), minval=-1, maxval=1)
    eps = jax.random.normal(key_e, x0.shape)
    logsnr = np.array([-4.0, 0.0, 6.0], np.float32)
    x_t = gaussian.q_sample(x0, logsnr, eps)
    np.testing.assert_allclose(gaussian.predict_x0(x_t, eps, logsnr), x0, atol=1e-4)


def test_dynamic_threshold_matches_numpy():
    rng = np.random.default_rng(2)
    x0 = (
        rng.normal(size=(4, 6, 5, 3)) * np.array([0.3, 1.0, 2.0, 5.0])[:, None, None, None]
    ).astype(np.float32)
    out = np.asarray(gaussian.dynamic_threshold(x0, 0.95))
    for b in range(4):
        s = max(1.0, np.quantile(np.abs(x0[b]), 0.95))
        np.testing.assert_allclose(out[b], np.clip(x0[b], -s, s) / s, rtol=1e-5, atol=1e-6)
    assert np.abs(out).max() <= 1.0
    # A 95% quantile below 1 gives s = 1: plain clipping to [−1, 1].
    np.testing.assert_array_equal(out[0], np.clip(x0[0], -1, 1))
