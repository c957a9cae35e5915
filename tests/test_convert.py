"""Conversion of the authors' PyTorch checkpoints: the pickle reader refuses code, the converted
micro checkpoint restores for sampling (``generation.load``) and for training and reproduces the
reference U-Nets' outputs, and every way a file can fail to fit the config is a clear error.

The fixture ``gcdp_micro.pt`` is a checkpoint in the authors' trainer format of a two-stage micro
JointImagen (base + SR U-Net, raw and EMA weights); ``gcdp_micro_outputs.npz`` holds the
reference U-Nets' outputs on fixed inputs (both made by ``fixtures/make_gcdp_checkpoint.py``).
"""

import functools
import importlib.util
import json
import os
import pathlib
import pickle
import shutil
import subprocess
import sys
import zipfile

import jax
import numpy as np
import optax
import pytest

from gcd_jax import errors
from gcd_jax.convert import authors as convert
from gcd_jax.convert import reference_checkpoint, torch_checkpoint, torch_names
from gcd_jax.inference.model import load
from gcd_jax.training import checkpoint, train_state

ROOT = pathlib.Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures"
CHECKPOINT = str(FIXTURES / "gcdp_micro.pt")
OUTPUTS = np.load(FIXTURES / "gcdp_micro_outputs.npz")
META = json.loads(str(OUTPUTS["meta_json"]))
_spec = importlib.util.spec_from_file_location(
    "gcdp_micro_config", FIXTURES / "gcdp_micro_config.py"
)
micro_config_module = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(micro_config_module)
micro_config = micro_config_module.get_config


@functools.partial(jax.jit, static_argnums=0)
def apply(model, params, inputs):
    return model.apply({"params": params}, **inputs)


def fixture_inputs(case: str) -> dict:
    names = [k.split("/", 1)[1] for k in OUTPUTS.files if k.startswith(case + "/")]
    return {n: OUTPUTS[f"{case}/{n}"] for n in names if "/" not in n}


def restore(config, workdir: str) -> train_state.TrainState:
    """The whole TrainState of a workdir, restored as training restores it."""
    optimizer = train_state.make_optimizer(config.optim)
    abstract = train_state.abstract_state(convert.shape_networks(config), optimizer)
    ckpt = checkpoint.Checkpointer(workdir, config)
    try:
        return ckpt.restore(abstract)[0]
    finally:
        ckpt.close()


@pytest.mark.parametrize("case", ["base", "sr"])
def test_converted_unets_match_the_reference(tmp_path, case):
    """Raw weights → params, EMA weights → ema_params; our U-Net with either gives the reference
    outputs (text kept and dropped), and generation.load (sampling) picks the EMA weights."""
    config = micro_config(case)
    summary = convert.convert(CHECKPOINT, config, str(tmp_path))
    assert summary.unet == (2 if case == "sr" else 1)
    assert summary.step == META["steps"][summary.unet - 1]
    assert (summary.params_from, summary.ema_params_from) == ("raw weights", "EMA weights")
    state = restore(config, str(tmp_path))
    unet = convert.shape_networks(config).unet
    worst = {}
    for weights, params in (("raw", state.params), ("ema", state.ema_params)):
        for tag, drop in (("cond", False), ("null", True)):
            inputs = dict(fixture_inputs(case), drop_text=np.full(2, drop))
            eps, logits = apply(unet, params["unet"], inputs)
            for name, out in (("eps", eps), ("logits", logits)):
                want = OUTPUTS[f"{case}/{weights}/{name}_{tag}"]
                # float32 agreement: |out − want| ≤ 1e-5 · max(1, |want|) (outputs reach ~5)
                np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-5)
                worst[f"{weights}/{name}_{tag}"] = float(np.abs(np.asarray(out) - want).max())
    print(f"{case}: {summary.num_tensors} tensors mapped, max |difference| {worst}")
    if case == "base":  # the sampling driver restores the converted checkpoint like any other
        loaded = load(config, str(tmp_path))
        assert loaded.step == summary.step
        ema_leaves = jax.tree.leaves(state.ema_params)
        for a, b in zip(jax.tree.leaves(loaded.params), ema_leaves, strict=True):
            np.testing.assert_array_equal(a, b)


def test_cli_no_ema_and_settings_report(tmp_path):
    """``python -m gcd_jax.convert --no-ema`` on the SR U-Net; the report names the label schedule
    the SR U-Net was trained with (cosine_p, the config says linear)."""
    command = [
        sys.executable,
        "-m",
        "gcd_jax.convert",
        f"--checkpoint={CHECKPOINT}",
        f"--config={FIXTURES / 'gcdp_micro_config.py'}:sr",
        f"--workdir={tmp_path}",
        "--no-ema",
    ]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "U-Net 2" in result.stdout and "ema_params = raw weights" in result.stdout
    assert "noise_schedulers_lbl.1.log_cumprod_alpha" in result.stdout
    assert "cosine = cosine_p(p=1.0)" in result.stdout
    assert (tmp_path / "checkpoints" / str(META["steps"][1])).is_dir()


def test_cli_user_error_is_one_line(tmp_path):
    command = [
        sys.executable,
        "-m",
        "gcd_jax.convert",
        f"--checkpoint={tmp_path / 'nothing.pt'}",
        f"--config={FIXTURES / 'gcdp_micro_config.py'}",
        f"--workdir={tmp_path / 'w'}",
    ]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == errors.EXIT_USER_ERROR
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: Checkpoint {tmp_path / 'nothing.pt'} does not exist."
    )
    assert "Traceback" not in result.stderr


def test_base_unet_report_is_empty_and_steps_are_checked():
    config = micro_config("base")
    ckpt = reference_checkpoint.read(CHECKPOINT)
    assert reference_checkpoint.settings_report(ckpt, 0, config) == []
    config.train.num_steps = 1000
    config.sample.num_steps = 50
    report = reference_checkpoint.settings_report(ckpt, 0, config)
    assert any("noise_schedulers_lbl_sample.0" in line and "100 steps" in line for line in report)
    assert any("steps[0]" in line and "1234" in line for line in report)


# ----------------------------------------------------------------------------- errors


def rewrite_pickle(path: pathlib.Path, obj_bytes: bytes) -> str:
    """A copy of the fixture with ``data.pkl`` replaced by ``obj_bytes``."""
    with zipfile.ZipFile(CHECKPOINT) as src, zipfile.ZipFile(path, "w") as dst:
        for info in src.infolist():
            data = obj_bytes if info.filename.endswith("/data.pkl") else src.read(info)
            dst.writestr(info, data)
    return str(path)


class _Exploit:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_malicious_pickle_is_refused(tmp_path):
    path = rewrite_pickle(tmp_path / "evil.pt", pickle.dumps({"model": _Exploit()}, protocol=2))
    with pytest.raises(torch_checkpoint.UnsafeCheckpointError, match=r"system"):
        torch_checkpoint.load(path)
    with pytest.raises(torch_checkpoint.UnsafeCheckpointError, match="builtins.eval"):
        torch_checkpoint.load(rewrite_pickle(tmp_path / "e.pt", b"cbuiltins\neval\n."))
    assert not (tmp_path / "pwned").exists() and not (ROOT / "pwned").exists()


def test_files_that_are_not_trainer_checkpoints(tmp_path):
    legacy = tmp_path / "legacy.pt"
    legacy.write_bytes(pickle.dumps({"model": {}}, protocol=2))
    with pytest.raises(torch_checkpoint.NotATorchCheckpointError, match="legacy"):
        torch_checkpoint.load(str(legacy))
    state_dict_only = rewrite_pickle(tmp_path / "sd.pt", pickle.dumps({"weight": 1}, protocol=2))
    with pytest.raises(ValueError, match="not a checkpoint of the authors' trainer"):
        reference_checkpoint.read(state_dict_only)


@pytest.fixture(scope="module")
def fixture_states():
    ckpt = reference_checkpoint.read(CHECKPOINT)
    return ckpt.unet_state(0, ema=False), ckpt.unet_state(0, ema=True)


def base_table(config):
    nets = convert.shape_networks(config)
    shapes = jax.eval_shape(nets.init, jax.random.key(0))["unet"]
    return torch_names.unet_table(shapes, len(config.model.dim_mults), (3, 7, 15))


def test_missing_unexpected_and_misshapen_keys(fixture_states):
    raw, _ = fixture_states
    table = base_table(micro_config("base"))
    reference_checkpoint.check_state(raw, table, "raw", sr=False)  # the fixture fits
    broken = {k: v for k, v in raw.items() if k != "mid_attn.fn.fn.null_kv"}
    broken["mid_attn.fn.fn.extra"] = raw["mid_attn.fn.fn.null_kv"]
    with pytest.raises(ValueError, match=r"(?s)Missing keys: mid_attn.fn.fn.null_kv.*extra"):
        reference_checkpoint.check_state(broken, table, "raw", sr=False)
    config = micro_config("base")
    config.data.num_classes = 7
    with pytest.raises(ValueError, match=r"init_emb_seg.emb_layer.weight: .*data.num_classes"):
        reference_checkpoint.check_state(raw, base_table(config), "raw", sr=False)


def test_wrong_text_width_wrong_unet_and_learned_encoder(tmp_path):
    t5_dir = tmp_path / "t5"
    shutil.copytree(FIXTURES / "t5_tiny_gated", t5_dir)
    t5_config = json.loads((t5_dir / "config.json").read_text())
    (t5_dir / "config.json").write_text(json.dumps({**t5_config, "d_model": 24}))
    config = micro_config("base")
    config.text.t5_name = str(t5_dir)
    with pytest.raises(ValueError, match=r"text_to_cond.weight: checkpoint \(8, 16\), config"):
        convert.convert(CHECKPOINT, config, str(tmp_path / "a"))
    with pytest.raises(ValueError, match="super-resolution U-Net"):
        convert.convert(CHECKPOINT, micro_config("base"), str(tmp_path / "b"), unet=2)
    with pytest.raises(ValueError, match="has 2 U-Net"):
        convert.convert(CHECKPOINT, micro_config("base"), str(tmp_path / "c"), unet=3)
    config = micro_config("base")
    config.text.encoder = "learned"
    with pytest.raises(ValueError, match="frozen T5"):
        convert.convert(CHECKPOINT, config, str(tmp_path / "d"))


def test_no_ema_restores_as_a_train_state_and_workdirs_are_not_reused(tmp_path):
    """--no-ema: params and ema_params are both the raw weights; the checkpoint restores as the
    TrainState that training resumes (step from the file, fresh Adam moments)."""
    config = micro_config("base")
    convert.convert(CHECKPOINT, config, str(tmp_path), use_ema=False)
    state = restore(config, str(tmp_path))
    assert int(state.step) == META["steps"][0]
    for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(state.ema_params), strict=True):
        np.testing.assert_array_equal(a, b)
    assert not any(np.any(np.asarray(x)) for x in jax.tree.leaves(state.opt_state))
    raw = reference_checkpoint.read(CHECKPOINT).unet_state(0, ema=False)
    np.testing.assert_array_equal(
        state.params["unet"]["label_embed"]["embedding"],
        raw["init_emb_seg.emb_layer.weight"].numpy(),
    )
    with pytest.raises(ValueError, match="already holds checkpoints"):
        convert.convert(CHECKPOINT, config, str(tmp_path))


# ----------------------------------------------------------------------------- pieces


@pytest.mark.parametrize("layout", sorted(torch_names.LAYOUTS))
def test_layouts_round_trip(layout):
    shape = {"conv": (3, 3, 4, 6), "unshuffle": (2, 2, 4, 6), "shuffle_bias": (8,)}.get(
        layout, (4, 8) if layout in ("linear", "conv1x1", "shuffle") else (8,)
    )
    entry = torch_names.Entry(
        ("m", "p"), "m.p", layout, shape, torch_names.LAYOUTS[layout].torch_shape(shape)
    )
    value = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    torch_value = torch_names.to_torch(entry, value)
    assert torch_value.shape == entry.torch_shape
    np.testing.assert_array_equal(torch_names.from_torch(entry, torch_value), value)


def test_fresh_opt_state_equals_optimizer_init():
    params = {"a": np.ones((2, 3), np.float32), "b": {"c": np.ones((2, 3), np.float32)}}
    optimizer = optax.adam(1e-3)
    fresh, init = convert.fresh_opt_state(optimizer, params), optimizer.init(params)
    assert jax.tree.structure(fresh) == jax.tree.structure(init)
    for a, b in zip(jax.tree.leaves(fresh), jax.tree.leaves(init), strict=True):
        np.testing.assert_array_equal(a, b)
        assert a.dtype == b.dtype
