"""Run settings: the persistent compilation cache (config.train.compile_cache) and which config
fields a checkpoint does not depend on."""

import os

import jax
import pytest

from experiments import demo
from gcd_jax.cli import runtime


@pytest.fixture
def no_env_cache(monkeypatch):
    before = jax.config.jax_compilation_cache_dir
    monkeypatch.delenv(runtime.ENV_VAR, raising=False)
    yield
    jax.config.update("jax_compilation_cache_dir", before)


def test_compile_cache_settings(no_env_cache, tmp_path):
    config = demo.get_config()
    workdir = str(tmp_path / "run")
    assert runtime.enable_compile_cache(config, workdir) == os.path.join(workdir, "xla_cache")
    assert jax.config.jax_compilation_cache_dir == os.path.join(workdir, "xla_cache")
    config.train.compile_cache = str(tmp_path / "shared")
    assert runtime.compile_cache_dir(config, workdir) == str(tmp_path / "shared")
    config.train.compile_cache = ""
    assert runtime.compile_cache_dir(config, workdir) is None


def test_environment_wins(monkeypatch, tmp_path):
    monkeypatch.setenv(runtime.ENV_VAR, str(tmp_path / "env"))
    assert runtime.compile_cache_dir(demo.get_config(), str(tmp_path)) == str(tmp_path / "env")


def test_execution_settings_are_not_structural():
    """A checkpoint restores under another compute dtype, remat policy or text dropout; a
    different width or class count is reported with both values."""
    from gcd_jax.training import checkpoint

    saved = {"model": {"dim": 32, "dtype": "float32"}, "text": {"drop_prob": 0.1}}
    current = {
        "model": {"dim": 32, "dtype": "bfloat16", "remat": "blocks"},
        "text": {"drop_prob": 0.0},
    }
    assert checkpoint.structural_differences(saved, current) == []
    current["model"]["dim"] = 64
    current["data"] = {"num_classes": 20}
    assert checkpoint.structural_differences(saved, current) == [
        "data.num_classes: checkpoint '<absent>', config 20",
        "model.dim: checkpoint 32, config 64",
    ]


def test_scan_blocks_is_structural_only_where_a_level_has_blocks_to_stack():
    """model.scan_blocks changes the parameter layout only when a level has two or more residual
    blocks; a checkpoint saved before the field existed counts as per-block (False)."""
    from gcd_jax.training import checkpoint

    saved = {"model": {"num_res_blocks": [1, 1, 1]}}  # no scan_blocks: an older checkpoint
    current = {"model": {"num_res_blocks": (1, 1, 1), "scan_blocks": True}}
    assert checkpoint.structural_differences(saved, current) == []
    saved["model"]["num_res_blocks"] = [2, 4]
    current["model"]["num_res_blocks"] = (2, 4)
    assert checkpoint.structural_differences(saved, current) == [
        "model.scan_blocks: checkpoint False, config True"
    ]
    current["model"]["scan_blocks"] = False
    assert checkpoint.structural_differences(saved, current) == []


def test_xla_flags_are_added_before_the_backends_start(monkeypatch):
    """``train.xla_flags`` go into $XLA_FLAGS unless the flag is already there (the user's value
    wins); once the backends have started adding one raises."""

    jax.devices()  # the backends start
    config = demo.get_config()
    config.train.xla_flags = "--xla_a=1 --xla_b=true"
    monkeypatch.setenv("XLA_FLAGS", "--xla_b=false --xla_c")
    with pytest.raises(RuntimeError, match=r"\['--xla_a=1'\] must be set before"):
        runtime.add_xla_flags(config)
    assert os.environ["XLA_FLAGS"] == "--xla_b=false --xla_c"
    monkeypatch.setattr(runtime, "_backends_started", lambda: False)
    assert runtime.add_xla_flags(config) == "--xla_b=false --xla_c --xla_a=1"
    assert os.environ["XLA_FLAGS"] == "--xla_b=false --xla_c --xla_a=1"
    assert runtime.add_xla_flags(config) == os.environ["XLA_FLAGS"]  # nothing added twice
