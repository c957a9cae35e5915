"""The EMA rules of ``train_state`` against independent float64 recomputations."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import base
from gcd_jax.training import train_state


class EmaPytorchRule:
    """A float64 re-statement of ema-pytorch 0.2.3's ``EMA`` as the reference trainer drives it:
    ``update()`` once after every optimizer step, with its own step counter and ``initted`` flag
    (defaults beta 0.9999, update_after_step 100, update_every 10, inv_gamma 1, power 2/3)."""

    def __init__(self, initial, beta=0.9999, after=100, every=10, power=2 / 3):
        self.ema, self.counter, self.initted = np.array(initial, np.float64), 0, False
        self.beta, self.after, self.every, self.power = beta, after, every, power

    def update(self, online):
        step = self.counter
        self.counter += 1
        if step % self.every:
            return
        if step <= self.after:
            self.ema = np.array(online, np.float64)
            return
        if not self.initted:
            self.ema, self.initted = np.array(online, np.float64), True
        epoch = max(self.counter - self.after - 1, 0)
        decay = 0.0 if epoch <= 0 else min(max(1 - (1 + epoch) ** -self.power, 0.0), self.beta)
        self.ema = self.ema + (1 - decay) * (online - self.ema)  # torch's lerp_


def _run(optim, num_steps, online):
    """Our EMA over a sequence of parameter vectors, one jitted update per optimizer step."""
    update = jax.jit(lambda s, e, p: train_state.ema_update(optim, s, e, p))
    ema, out = jnp.asarray(online[0]), []
    for step in range(num_steps):
        ema = update(jnp.int32(step), ema, jnp.asarray(online[step + 1]))
        out.append(np.asarray(ema))
    return np.stack(out)


@pytest.mark.parametrize("after,every", [(100, 10), (25, 4)])
def test_ema_pytorch_matches_reference_rule(after, every):
    optim = base.get_config().optim
    optim.ema_update_after, optim.ema_update_every = after, every
    num_steps = 400
    rng = np.random.default_rng(0)
    # A random walk of "parameters" (index 0: at init), as an optimizer would produce.
    online = np.cumsum(rng.normal(size=(num_steps + 1, 16)), axis=0).astype(np.float32)
    ours = _run(optim, num_steps, online)
    rule = EmaPytorchRule(online[0], after=after, every=every)
    for step in range(num_steps):
        rule.update(np.float64(online[step + 1]))
        np.testing.assert_allclose(ours[step], rule.ema, rtol=1e-5, atol=1e-4, err_msg=f"{step}")
    # Between updates the EMA stands still; after the warm-up it lags the parameters.
    assert np.array_equal(ours[after + every + 1], ours[after + every + 2])
    assert not np.allclose(ours[-1], online[-1])


def test_warmup_and_constant_rules():
    optim = base.get_config().optim
    optim.ema_decay = 0.99
    rng = np.random.default_rng(1)
    online = rng.normal(size=(61, 4)).astype(np.float32)
    for name, decay_at in (
        ("warmup", lambda s: min(0.99, (1 + s) / (10 + s))),
        ("constant", lambda s: 0.99),
    ):
        optim.ema_schedule = name
        ours, ema = _run(optim, 60, online), np.float64(online[0])
        for s in range(60):
            d = decay_at(s)
            ema = d * ema + (1 - d) * np.float64(online[s + 1])
            np.testing.assert_allclose(ours[s], ema, rtol=1e-5, atol=1e-6)


def test_unknown_schedule():
    optim = base.get_config().optim
    optim.ema_schedule = "polyak"
    with pytest.raises(ValueError, match="optim.ema_schedule"):
        train_state.ema_decay(optim, 0)
