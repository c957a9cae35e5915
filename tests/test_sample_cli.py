"""``run.py --mode sample`` and ``--mode outpaint`` on the checkpoint of a tiny training run."""

import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from gcd_jax import sample

ROOT = pathlib.Path(__file__).resolve().parents[1]


def run_cli(config, workdir, *args):
    overrides = [
        f"--config.data.data_dir={config.data.data_dir}",
        "--config.data.num_demo_examples=64",
        "--config.model.dim=16",
        "--config.sample.num_steps=4",
        "--config.sample.resample_steps=2",
        "--config.sample.batch_size=4",
    ]
    cmd = [sys.executable, "run.py", "--config", "experiments/demo.py", "--workdir", workdir]
    return subprocess.run(
        cmd + overrides + list(args), cwd=ROOT, capture_output=True, text=True, timeout=900
    )


def test_sample_writes_grid_pngs_and_manifest(trained_demo):
    config, workdir = trained_demo
    prompts = "A large red circle on the left.;There is a small blue square.;A green triangle."
    result = run_cli(config, workdir, "--mode", "sample", f"--prompts={prompts}", "--seed=3")
    assert result.returncode == 0, result.stderr[-3000:]
    out = pathlib.Path(workdir) / "samples" / "step_4_seed_3"
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["checkpoint_step"] == 4 and manifest["seed"] == 3
    assert manifest["prompts"] == prompts.split(";")
    grid = np.asarray(Image.open(out / "grid.png"))
    assert grid.shape == (2 * 32 + 3 * 2, 3 * 32 + 4 * 2, 3)
    for i in range(3):
        assert np.asarray(Image.open(out / f"{i:04d}_image.png")).shape == (32, 32, 3)
        label = np.asarray(Image.open(out / f"{i:04d}_label.png"))
        assert label.shape == (32, 32) and label.max() < config.data.num_classes


def test_outpaint_keeps_the_given_layout(trained_demo, tmp_path):
    config, workdir = trained_demo
    layout = np.zeros((32, 32), np.uint8)
    layout[8:24, 4:20] = 3
    path = tmp_path / "layout.png"
    Image.fromarray(layout).save(path)
    result = run_cli(
        config, workdir, "--mode", "outpaint", f"--layout={path}", "--prompts=a circle"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = pathlib.Path(workdir) / "outpaint" / "step_4_seed_0"
    np.testing.assert_array_equal(np.asarray(Image.open(out / "0000_label.png")), layout)
    assert np.asarray(Image.open(out / "0000_image.png")).shape == (32, 32, 3)


def test_missing_checkpoint_is_a_clear_error(tmp_path):
    from conftest import small_demo_config

    with pytest.raises(FileNotFoundError, match="No checkpoint in"):
        sample.load(small_demo_config(tmp_path), str(tmp_path / "empty"))


def test_bad_layout_values_are_named(tmp_path):
    from conftest import small_demo_config

    path = tmp_path / "bad.png"
    Image.fromarray(np.full((32, 32), 9, np.uint8)).save(path)
    with pytest.raises(ValueError, match=r"bad.png: label values span \[9, 9\], need \[0, 8\)"):
        sample.read_layout(str(path), small_demo_config(tmp_path))
