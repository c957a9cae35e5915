"""Schedules against their closed forms, evaluated independently in float64 NumPy."""

import math

import numpy as np
import pytest

from gcd_jax.diffusion import schedules

S = 0.008


def np_linear(t):
    return -np.log(np.expm1(1e-4 + 10.0 * t**2))


def np_cosine_p(t, p):
    c = np.cos((t + S) / (1 + S) * math.pi / 2)
    return -np.log(np.maximum(np.abs(c) ** (-2 * p) - 1, 1e-5))


@pytest.mark.parametrize(
    "name,kwargs",
    [("linear", {}), ("cosine", {}), ("cosine_p", {"p": 2.0}), ("cosine_p", {"p": 0.7})],
)
def test_strictly_decreasing_on_open_interval(name, kwargs):
    t = np.linspace(1e-3, 1 - 1e-3, 999, dtype=np.float32)
    logsnr = np.asarray(schedules.get_schedule(name, **kwargs)(t))
    assert np.all(np.isfinite(logsnr))
    assert np.all(np.diff(logsnr) < 0)


def test_endpoints():
    linear = schedules.get_schedule("linear")
    assert float(linear(0.0)) == pytest.approx(-math.log(math.expm1(1e-4)), rel=1e-5)
    assert float(linear(1.0)) == pytest.approx(-math.log(math.expm1(10.0001)), rel=1e-5)
    cosine = schedules.get_schedule("cosine")
    tan0 = math.tan(S / (1 + S) * math.pi / 2)
    assert float(cosine(0.0)) == pytest.approx(-math.log(tan0**2), rel=1e-4)
    assert float(cosine(1.0)) < -30.0  # cos(π/2) = 0 up to float32 rounding: pure noise


@pytest.mark.parametrize("p", [0.5, 1.0, 2.0])
def test_match_float64_formula(p):
    t = np.linspace(0.0, 0.999, 101)
    np.testing.assert_allclose(
        schedules.get_schedule("linear")(t.astype(np.float32)), np_linear(t), rtol=2e-4, atol=2e-4
    )
    np.testing.assert_allclose(
        schedules.get_schedule("cosine_p", p=p)(t.astype(np.float32)),
        np_cosine_p(t, p),
        rtol=2e-4,
        atol=2e-4,
    )


def test_cosine_p_with_p_one_is_cosine():
    t = np.linspace(0.0, 1.0, 257, dtype=np.float32)
    np.testing.assert_array_equal(
        schedules.get_schedule("cosine_p", p=1.0)(t), schedules.get_schedule("cosine")(t)
    )


def test_alpha_sigma_variance_preserving():
    logsnr = np.linspace(-20, 20, 81, dtype=np.float32)
    alpha, sigma = schedules.alpha_sigma(logsnr)
    np.testing.assert_allclose(alpha**2 + sigma**2, 1.0, atol=1e-6)
    np.testing.assert_allclose(np.log(alpha**2 / sigma**2)[30:51], logsnr[30:51], atol=1e-4)


def test_unknown_schedule_names_the_choices():
    with pytest.raises(ValueError, match="cosine_p"):
        schedules.get_schedule("quadratic")
