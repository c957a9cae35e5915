"""The training driver: one real run on the demo data, resume equality, multi-device equality,
overfitting, and config errors through the CLI."""

import functools
import json
import os
import pathlib
import signal
import subprocess
import sys

import jax
import numpy as np
import pytest
from conftest import small_demo_config

from gcd_jax.cli import train
from gcd_jax.inference.model import load
from gcd_jax.training import loop, train_state, train_step

ROOT = pathlib.Path(__file__).resolve().parents[1]


def leaves(state):
    return [np.asarray(x) for x in jax.tree.leaves(jax.device_get(state))]


def float64_norm(tree):
    """The 2-norm of all of ``tree``'s entries, summed in float64 on the host."""
    return np.sqrt(sum(np.sum(np.square(np.asarray(x, np.float64))) for x in jax.tree.leaves(tree)))


def test_resume_after_sigterm_continues_bit_for_bit(trained_demo, tmp_path, monkeypatch):
    """4 steps in one go (the session's trained demo) == the same command stopped by a SIGTERM
    (a preemption) after step 2, then run again."""
    from gcd_jax.training.metric_log import MetricLog

    config, straight_dir = trained_demo
    straight = load(config, straight_dir)
    resumed_dir = str(tmp_path / "resumed")
    write = MetricLog.write

    def write_then_preempt(log, step, metrics):
        write(log, step, metrics)
        if step == 2:
            os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(MetricLog, "write", write_then_preempt)
    handler = signal.getsignal(signal.SIGTERM)
    preempted = train.train_and_evaluate(config, resumed_dir)
    monkeypatch.undo()
    assert int(preempted.step) == 2
    assert sorted(os.listdir(os.path.join(resumed_dir, "checkpoints"))) == ["2"]
    assert signal.getsignal(signal.SIGTERM) is handler  # the loop puts the handler back
    resumed_state = train.train_and_evaluate(config, resumed_dir)
    resumed = load(config, resumed_dir)
    assert int(resumed_state.step) == straight.step == resumed.step == 4
    for a, b in zip(leaves(straight.params), leaves(resumed_state.ema_params), strict=True):
        np.testing.assert_array_equal(a, b)
    raw = config.copy_and_resolve_references()
    raw.sample.use_ema = False
    straight_raw = load(raw, straight_dir).params
    for a, b in zip(leaves(straight_raw), leaves(resumed_state.params), strict=True):
        np.testing.assert_array_equal(a, b)
    lines = [json.loads(x) for x in open(os.path.join(resumed_dir, "metrics.jsonl"))]
    straight_lines = [json.loads(x) for x in open(os.path.join(straight_dir, "metrics.jsonl"))]
    assert [x["step"] for x in lines] == [1, 2, 3, 4]
    assert [x["loss"] for x in lines] == [x["loss"] for x in straight_lines]
    assert os.listdir(os.path.join(straight_dir, "tensorboard"))


def test_incompatible_checkpoint_is_refused(trained_demo, demo_data_dir):
    _, workdir = trained_demo
    other = small_demo_config(demo_data_dir, num_steps=5)
    other.model.dim = 8
    with pytest.raises(ValueError, match="model.dim: checkpoint 16, config 8"):
        train.train_and_evaluate(other, workdir)


@functools.cache
def initial_state():
    """The tests' demo model's initial train state on the host (one init program for every test
    here, laid out on each mesh by ``jax.device_put``)."""
    _, nets, optimizer, _, _, _ = compiled(1)
    state = jax.jit(lambda k: train_state.init_state(k, nets, optimizer))(jax.random.key(0))
    return jax.device_get(state)


@functools.cache
def compiled(num_devices: int, shard: bool = False):
    """(config, nets, optimizer, mesh, state layout, jitted train step) of the tests' demo model
    (``small_demo_config``: dim 16, batch 8) on the first ``num_devices`` devices; ``shard``:
    FSDP state, arrays of 16 KiB or more split (284 of its 1 552). On 8 devices the step is two
    programs (``train_step.step_programs``, the CPU's default), on one device one program, so that the
    1- and 8-device comparison also compares the two forms. Shared by the tests: each program is
    traced once (8 devices, replicated, is also the session run's XLA program)."""
    from gcd_jax import sharding
    from gcd_jax.diffusion import joint
    from gcd_jax.models.networks import build_networks

    config = small_demo_config("unused")
    config.train.update(
        shard_state=shard, shard_min_bytes=16384, step_programs="two" if num_devices > 1 else "one"
    )
    mesh = sharding.make_mesh(jax.devices()[:num_devices])
    nets, process = build_networks(config), joint.Process.from_config(config)
    optimizer = train_state.make_optimizer(config.optim)
    layout = train_step.state_shardings(config, nets, optimizer, mesh)
    step = train_step.compile_train_step(config, nets, process, optimizer, mesh, layout)
    return config, nets, optimizer, mesh, layout, step


def one_step(num_devices, shard=False, keep=None):
    """One train step of ``compiled(num_devices, shard)`` from ``initial_state`` on a
    fixed batch; ``keep``: a dict that receives the config and the state."""
    from gcd_jax import sharding

    config, nets, optimizer, mesh, layout, step = compiled(num_devices, shard)
    state = jax.device_put(initial_state(), layout)
    rng = np.random.default_rng(0)
    tokens, mask = nets.text.tokenize(["a red circle"] * 4 + ["two blue squares"] * 4)
    batch = dict(
        image=rng.uniform(-1, 1, (8, 32, 32, 3)).astype(np.float32),
        label=rng.integers(0, 8, (8, 32, 32)).astype(np.int32),
        tokens=tokens,
        mask=mask,
        has_text=np.array([True] * 6 + [False] * 2),
    )
    state, metrics = step(state, sharding.shard_batch(batch, mesh), {})
    if keep is not None:
        keep.update(config=config, state=state, nets=nets, optimizer=optimizer, metrics=metrics)
    return float(metrics["loss"]), leaves(state.params)


@pytest.fixture(scope="module")
def steps():
    """one_step on 1 device, on 8 (replicated state) and on 8 with the FSDP state, each once:
    name -> (loss, params, kept config and state)."""
    out = {}
    for name, num_devices, shard in (("1", 1, False), ("8", 8, False), ("8fsdp", 8, True)):
        keep = {}
        out[name] = (*one_step(num_devices, shard=shard, keep=keep), keep)
    return out


def test_one_step_same_on_1_and_8_devices(steps):
    """The same step, data-parallel over the 8 fake devices as two programs (gradient, update)
    and on one device as one program (in-process)."""
    assert jax.device_count() == 8
    (loss_1, params_1, _), (loss_8, params_8, _) = steps["1"], steps["8"]
    np.testing.assert_allclose(loss_1, loss_8, rtol=1e-5)
    assert len(params_1) == len(params_8) > 10
    for a, b in zip(params_1, params_8, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_norm_metrics_are_the_norms_and_optional(steps):
    """``param_norm`` is the 2-norm of the updated parameters (computed here in float64 from the
    returned state); ``train.norm_metrics=False`` leaves both norms out of the step (traced only)
    and nothing else of it changes."""
    from gcd_jax.diffusion import joint
    from gcd_jax.models.networks import build_networks

    # Replicated, the arrays in groups under 1 MiB; FSDP, the split arrays (16 KiB or more)
    # alone, the smaller replicated ones grouped.
    for name in ("1", "8", "8fsdp"):
        _, params, kept = steps[name]
        np.testing.assert_allclose(
            float(kept["metrics"]["param_norm"]), float64_norm(params), rtol=1e-5
        )
    grad_norms = [float(steps[name][2]["metrics"]["grad_norm"]) for name in ("1", "8", "8fsdp")]
    np.testing.assert_allclose(grad_norms, grad_norms[0], rtol=1e-4)
    assert np.isfinite(grad_norms[0]) and grad_norms[0] > 0
    _, _, kept = steps["1"]

    shapes = {}
    for on in (True, False):
        config = kept["config"].copy_and_resolve_references()
        config.train.norm_metrics = on
        nets, process = build_networks(config), joint.Process.from_config(config)
        step = functools.partial(
            train_step.train_step,
            nets=nets,
            process=process,
            optimizer=kept["optimizer"],
            config=config,
        )
        batch = {
            "image": jax.ShapeDtypeStruct((8, 32, 32, 3), np.float32),
            "label": jax.ShapeDtypeStruct((8, 32, 32), np.int32),
            "tokens": jax.ShapeDtypeStruct((8, config.text.max_length), np.int32),
            "mask": jax.ShapeDtypeStruct((8, config.text.max_length), bool),
            "has_text": jax.ShapeDtypeStruct((8,), bool),
        }
        shapes[on] = jax.eval_shape(step, kept["state"], batch, {})
    (state_on, metrics_on), (state_off, metrics_off) = shapes[True], shapes[False]
    assert set(metrics_on) - set(metrics_off) == {"grad_norm", "param_norm"}
    assert set(metrics_off) <= set(metrics_on)
    assert jax.tree.structure(state_on) == jax.tree.structure(state_off)
    assert jax.tree.leaves(state_on) == jax.tree.leaves(state_off)


def test_global_norm_is_the_norm_for_any_grouping():
    """``train_step.global_norm`` against a float64 norm, jitted, on arrays of odd sizes, a bfloat16 one
    and a scalar: each leaf alone, in groups, all in one; and with the leaves over 8 devices, the
    large ones split (alone) and the small ones replicated (grouped), as ``update_step`` groups
    them under ``train.shard_state``."""
    from gcd_jax import sharding

    rng = np.random.default_rng(3)
    tree = {
        "a": rng.normal(size=(3, 5, 7)).astype(np.float32),
        "b": [rng.normal(size=(16, 4)).astype(np.float32), np.float32(-2.5)],
        "c": rng.normal(size=(8, 3)).astype(jax.numpy.bfloat16),
        "d": rng.normal(size=(5,)).astype(np.float32),
    }

    for group_bytes, group_arrays in ((1, 10), (64, 10), (300, 10), (10**9, 10), (10**9, 2)):
        grouped = functools.partial(
            train_step.global_norm, group_bytes=group_bytes, group_arrays=group_arrays
        )
        norm = jax.jit(grouped)(tree)
        assert norm.dtype == np.float32
        np.testing.assert_allclose(float(norm), float64_norm(tree), rtol=1e-6)
    mesh = sharding.make_mesh(jax.devices())
    split = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
    placed = jax.device_put(tree, sharding.replicated(mesh))
    placed["b"][0], placed["c"] = jax.device_put((tree["b"][0], tree["c"]), split)
    norm = jax.jit(functools.partial(train_step.global_norm, group_bytes=48))(placed)
    np.testing.assert_allclose(float(norm), float64_norm(tree), rtol=1e-6)


def test_sharded_state_trains_and_restores_like_replicated(steps, tmp_path):
    """FSDP over the 8 fake devices gives the replicated step's loss and parameters; its checkpoint
    restores replicated on 1 device, and a 1-device checkpoint restores sharded on 8."""
    from gcd_jax import sharding
    from gcd_jax.training import checkpoint

    loss_s, params_s, sharded = steps["8fsdp"]
    loss_r, params_r, _ = steps["8"]
    single = steps["1"][2]
    np.testing.assert_allclose(loss_s, loss_r, rtol=1e-6)
    for a, b in zip(params_s, params_r, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    split = [x for x in jax.tree.leaves(sharded["state"]) if sharding.DATA_AXIS in x.sharding.spec]
    assert len(split) > 100  # the arrays of 16 KiB or more with a dimension divisible by 8
    assert all(x.addressable_shards[0].data.size * 8 == x.size for x in split)

    for source, mesh, shard in (
        (sharded, sharding.make_mesh(jax.devices()[:1]), False),
        (single, sharding.make_mesh(), True),
    ):
        config = source["config"]
        workdir = str(tmp_path / f"written_sharded_{config.train.shard_state}")
        ckpt = checkpoint.Checkpointer(workdir, config)
        ckpt.save(1, source["state"], 1)
        ckpt.close()
        config.train.shard_state = shard
        target = train_step.state_target(config, source["nets"], source["optimizer"], mesh)
        restored, _ = checkpoint.Checkpointer(workdir, config).restore(target, 1)
        for a, b in zip(leaves(restored), leaves(source["state"]), strict=True):
            np.testing.assert_array_equal(a, b)
        assert all(
            x.sharding == t.sharding
            for x, t in zip(jax.tree.leaves(restored), jax.tree.leaves(target), strict=True)
        )


def run_cli(*args, cwd=ROOT):
    return subprocess.run(
        [sys.executable, "run.py", *args], cwd=cwd, capture_output=True, text=True, timeout=600
    )


def test_demo_cli_end_to_end(demo_data_dir, tmp_path):
    """The README's main command, shortened to a few steps, in a subprocess."""
    workdir = tmp_path / "demo"
    result = run_cli(
        "--config",
        "experiments/demo.py",
        "--workdir",
        str(workdir),
        f"--config.data.data_dir={demo_data_dir}",
        "--config.data.num_demo_examples=64",
        "--config.model.dim=16",
        "--config.train.num_steps=3",
        "--config.train.global_batch_size=8",
        "--config.train.log_every=1",
        "--config.train.sample_every=3",
        "--config.sample.num_steps=4",
        "--config.train.num_sample_images=2",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert (workdir / "checkpoints" / "3").is_dir()
    assert len(open(workdir / "metrics.jsonl").readlines()) == 3
    assert list(workdir.glob("samples/*.png"))


def test_loss_decreases_overfitting_a_tiny_batch():
    """50 Adam steps (the demo's warm-up schedule) on one batch of 8, on one device (the step that
    ``test_one_step_same_on_1_and_8_devices`` checks against the data-parallel one; on the 8 fake
    devices each step takes about twice as long): the loss at the same noise draws falls by at
    least 10 % (0.83 of it in one run; without learning the ratio is exactly 1). The loss at fixed
    draws is the one the step reports for a copy of the state at step 0 with each of 8 fixed keys
    (its RNG is ``fold_in(state.key, state.step)``; it reports the loss before its update)."""
    from gcd_jax import sharding

    _, nets, _, mesh, layout, step = compiled(1)
    state = jax.device_put(initial_state(), layout)
    rng = np.random.default_rng(0)
    label = np.zeros((8, 32, 32), np.int32)
    label[:, 8:24, 8:24] = rng.integers(1, 8, (8, 1, 1))
    image = np.where(label[..., None] > 0, 0.8, -0.5).astype(np.float32) * np.ones(3, np.float32)
    tokens, mask = nets.text.tokenize(["a square"] * 8)
    batch = sharding.shard_batch(
        dict(image=image, label=label, tokens=tokens, mask=mask, has_text=np.ones(8, bool)), mesh
    )
    keys = [jax.random.key_data(jax.random.key(123 + i)) for i in range(8)]

    def fixed_loss(state):
        host = jax.device_get(state)
        probes = [host.replace(step=np.int32(0), key=np.asarray(key)) for key in keys]
        return np.mean(
            [float(step(jax.device_put(p, layout), batch, {})[1]["loss"]) for p in probes]
        )

    before = fixed_loss(state)
    for _ in range(50):
        state, _ = step(state, batch, {})
    after = fixed_loss(state)
    assert after < 0.9 * before, (before, after)


def test_compiled_programs_are_reused_only_for_the_same_config_and_mesh(monkeypatch):
    """``loop._compiled`` (what a second ``train_and_evaluate`` in one process reuses): the same
    program for the same (what, config, mesh); any other model field, mesh or program compiles."""
    import collections
    import types

    from gcd_jax import sharding

    lowered = []

    class Jitted:
        def lower(self, *args):
            lowered.append(args)
            return types.SimpleNamespace(compile=object)

    monkeypatch.setattr(loop, "_PROGRAMS", collections.OrderedDict())
    config, mesh = small_demo_config("unused"), sharding.make_mesh()
    first, _ = loop._compiled("train_step", config, mesh, Jitted(), 1)
    again, seconds = loop._compiled(
        "train_step", config.copy_and_resolve_references(), mesh, Jitted(), 1
    )
    assert again is first and seconds == 0.0 and len(lowered) == 1
    other = small_demo_config("unused")
    other.model.dim = 8
    for args in (
        ("train_step", other, mesh),
        ("train_step", config, sharding.make_mesh(jax.devices()[:1])),
        ("init", config, mesh),
    ):
        assert loop._compiled(*args, Jitted(), 1)[0] is not first
    assert len(lowered) == 4


def test_gradient_step_takes_given_text_embeddings():
    """A batch carrying ``text`` (embeddings computed beforehand) instead of ``tokens``: the
    same loss and U-Net gradient as encoding the tokens in the step, and no gradient for the text
    encoder it did not run; a batch with both, or neither, is refused."""
    from gcd_jax.diffusion import joint
    from gcd_jax.models.networks import build_networks

    config = small_demo_config("unused")
    nets, process = build_networks(config), joint.Process.from_config(config)
    rng = np.random.default_rng(0)
    state = initial_state()
    # The zero-initialised output heads drawn at random, so that every layer gets a gradient.
    params = jax.tree.map(
        lambda x: rng.normal(0, 0.02, x.shape).astype(x.dtype) if x.ndim > 1 and not x.any() else x,
        state.params,
    )
    state = state.replace(params=params)
    tokens, mask = nets.text.tokenize(["a red square", "two green circles"])
    batch = dict(
        image=rng.uniform(-1, 1, (2, 32, 32, 3)).astype(np.float32),
        label=rng.integers(0, 8, (2, 32, 32)).astype(np.int32),
        mask=mask,
        has_text=np.array([True, False]),
    )
    gradient = jax.jit(
        functools.partial(train_step.gradient_step, nets=nets, process=process, config=config)
    )
    grads, metrics = gradient(state, dict(batch, tokens=tokens), {})
    text = nets.encode_text(state.params, {}, tokens, mask)
    given_grads, given_metrics = gradient(state, dict(batch, text=text), {})
    np.testing.assert_allclose(given_metrics["loss"], metrics["loss"], rtol=1e-6)
    for a, b in zip(leaves(given_grads["unet"]), leaves(grads["unet"]), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-7)
    assert all(not np.any(g) for g in leaves(given_grads["text"]))
    assert any(np.any(g) for g in leaves(grads["text"]))
    for bad in (dict(batch, tokens=tokens, text=text), batch):
        with pytest.raises(ValueError, match="'tokens' or 'text'"):
            gradient(state, bad, {})
