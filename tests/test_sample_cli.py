"""``--mode sample`` and ``--mode outpaint`` (the functions run.py calls, in-process) on the
checkpoint of the session's tiny training run, and the SR cascade: a tiny base stage and a tiny
SR stage trained two steps, then the cascade through the real CLI (the suite's one run.py sampling
subprocess)."""

import json
import pathlib
import subprocess
import sys

import jax
import ml_collections
import numpy as np
import pytest
from PIL import Image

from gcd_jax import viz
from gcd_jax.cli import page as page_lib
from gcd_jax.cli import sample
from gcd_jax.data import classes
from gcd_jax.inference import cascade, files
from gcd_jax.inference.model import load

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_sample_writes_grid_pngs_and_manifest(trained_demo):
    config, workdir = trained_demo
    prompts = "A large red circle on the left.;There is a small blue square.;A green triangle."
    outdir = sample.sample_main(config, workdir, prompts, seed=3)
    out = pathlib.Path(workdir) / "samples" / "step_4_seed_3"
    assert pathlib.Path(outdir) == out
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["checkpoint_step"] == 4 and manifest["seed"] == 3
    assert manifest["prompts"] == prompts.split(";")
    images, labels = [], []
    for i in range(3):
        images.append(np.asarray(Image.open(out / f"{i:04d}_image.png")))
        labels.append(np.asarray(Image.open(out / f"{i:04d}_label.png")))
        assert images[-1].shape == (32, 32, 3)
        assert labels[-1].shape == (32, 32) and labels[-1].max() < config.data.num_classes
    # The grid: the per-sample files upscaled 3x (nearest) on top, prompts and legend below.
    grid = np.asarray(Image.open(out / "grid.png"))
    palette = classes.dataset_info("demo").palette
    up = np.ones((1, 3, 3), np.uint8)
    pairs = viz.make_grid(
        np.kron(np.stack(images), up[..., None]), np.kron(np.stack(labels), up), palette
    )
    np.testing.assert_array_equal(grid[: pairs.shape[0]], pairs)
    assert grid.shape[0] > pairs.shape[0] + 30  # three lines of caption + a legend


def test_outpaint_conditions_on_the_given_layout(trained_demo, tmp_path):
    """``--layout`` reaches the sampler as the known layout (a driver that dropped it would write
    a sampled, random layout), and the image is generated (not the zero placeholder)."""
    config, workdir = trained_demo
    layout = np.zeros((32, 32), np.uint8)
    layout[8:24, 4:20] = 3
    path = tmp_path / "layout.png"
    Image.fromarray(layout).save(path)
    sample.outpaint_main(config, workdir, "a circle", 0, layout_path=str(path))
    out = pathlib.Path(workdir) / "outpaint" / "step_4_seed_0"
    np.testing.assert_array_equal(np.asarray(Image.open(out / "0000_label.png")), layout)
    image = np.asarray(Image.open(out / "0000_image.png"))
    assert image.shape == (32, 32, 3) and image.std() > 1.0


def test_missing_checkpoint_is_a_clear_error(tmp_path):
    from conftest import small_demo_config

    with pytest.raises(FileNotFoundError, match="No checkpoint in"):
        load(small_demo_config(tmp_path), str(tmp_path / "empty"))


def test_bad_layout_values_are_named(tmp_path):

    path = tmp_path / "bad.png"
    Image.fromarray(np.full((32, 32), 9, np.uint8)).save(path)
    with pytest.raises(ValueError, match=r"bad.png: label values span \[9, 9\], need \[0, 8\)"):
        files.read_layout(str(path), classes.dataset_info("demo"))


# ------------------------------------------------------------------ the SR cascade
def sr_configs(data_dir):
    """experiments/demo_sr.py's two stages, shrunk: 16×16 base and 16 -> 32 SR, one level each
    (the cheapest U-Nets to compile)."""
    from experiments import demo_sr

    configs = {}
    for stage in ("base", "sr"):
        config = demo_sr.get_config(f"{stage},tiny")
        config.data.data_dir = str(data_dir)
        config.train.update(num_steps=2, ckpt_every=2)
        m = config.model
        m.dim_mults, m.num_res_blocks = (1,), (1,)
        m.attn_levels, m.cross_attn_levels = (False,), (True,)
        configs[stage] = config
    return configs["base"], configs["sr"]


@pytest.fixture(scope="module")
def trained_cascade(demo_data_dir, tmp_path_factory):
    """Both stages' workdirs at step 2. The base stage: its initial state, saved as step 2 (the
    driver's base-model training is the session's ``trained_demo``; here it would only add a
    compile). The SR stage: trained by the driver, 2 steps of 16 examples in 2 accumulation steps
    over the 8 devices, with sample grids of held-out low-res pairs."""
    from gcd_jax.cli import train
    from gcd_jax.models.networks import build_networks
    from gcd_jax.training import checkpoint, train_state

    base, sr = sr_configs(demo_data_dir)
    sr.train.sample_every, sr.train.num_sample_images = 2, 3
    sr.train.global_batch_size, sr.train.grad_accum_steps = 16, 2
    dirs = {name: str(tmp_path_factory.mktemp(name)) for name in ("base16", "sr")}
    nets, optimizer = build_networks(base), train_state.make_optimizer(base.optim)
    state = jax.jit(lambda key: train_state.init_state(key, nets, optimizer))(jax.random.key(0))
    ckpt = checkpoint.Checkpointer(dirs["base16"], base)
    ckpt.save(2, state, 2)
    ckpt.close()
    train.train_and_evaluate(sr, dirs["sr"])
    return base, sr, dirs


def test_sr_stage_trains_with_gradient_accumulation(trained_cascade):
    """The SR stage's two steps (2 micro-batches of 8 each, sharded over 8 devices) logged finite
    image and layout losses and left a checkpoint at step 2."""
    _, sr, dirs = trained_cascade
    lines = [json.loads(x) for x in open(pathlib.Path(dirs["sr"]) / "metrics.jsonl")]
    assert [x["step"] for x in lines] == [1, 2]
    assert all(np.isfinite(x["loss_img"]) and x["loss_lbl"] > 0 for x in lines)
    assert (pathlib.Path(dirs["sr"]) / "checkpoints" / "2").is_dir()


def test_sr_training_grid_and_start_at_the_sr_stage(trained_cascade, tmp_path):
    base, sr, dirs = trained_cascade
    grid = np.asarray(Image.open(pathlib.Path(dirs["sr"]) / "samples" / "step_0000002.png"))
    # Three pairs upscaled 3x (nearest) over their prompts and the legend.
    pairs_height = 2 * 96 + 3 * 2
    assert grid.shape[1] == 3 * 96 + 4 * 2 and grid.shape[0] > pairs_height + 30
    assert (grid[pairs_height:].min(axis=-1) < 100).any()  # caption and legend text
    # Start at the SR stage from a given pair (the reference's --start_at_unet_number 2): any
    # size, resized nearest to the low-res size.
    image = np.zeros((64, 64, 3), np.uint8)
    image[:, 32:] = 255
    layout = np.zeros((64, 64), np.uint8)
    layout[:, 32:] = 2
    Image.fromarray(image).save(tmp_path / "x.png")
    Image.fromarray(layout).save(tmp_path / "y.png")
    out = sample.sample_main(
        sr,
        dirs["sr"],
        "a;b",
        0,
        image_path=str(tmp_path / "x.png"),
        layout_path=str(tmp_path / "y.png"),
    )
    assert np.asarray(Image.open(pathlib.Path(out) / "0001_image.png")).shape == (32, 32, 3)
    with pytest.raises(ValueError, match="--base_workdir"):
        sample.sample_main(sr, dirs["sr"], "a", 0)


def test_cascade_mismatch_is_a_clear_error(trained_cascade):
    base, sr, dirs = trained_cascade
    other = ml_collections.ConfigDict(sr.to_dict())
    other.model.lowres_size = (8, 8)
    with pytest.raises(
        ValueError, match=r"size: base samples \(16, 16\), SR model.lowres_size \(8, 8\)"
    ):
        cascade.check_cascade(base, other)
    other = ml_collections.ConfigDict(sr.to_dict())
    other.data.num_classes = 5
    with pytest.raises(ValueError, match="classes: base 8, SR 5"):
        cascade.check_cascade(base, other)


def test_cascade_cli_end_to_end(trained_cascade):
    """``run.py --mode sample`` with an SR config and ``--base_workdir``, in a subprocess: base
    samples at 16×16 and SR samples at 32×32, both written."""
    _, sr, dirs = trained_cascade
    m = sr.model
    overrides = [
        f"--config.data.data_dir={sr.data.data_dir}",
        "--config.data.num_demo_examples=64",
        f"--config.model.dim={m.dim}",
        "--config.model.dim_mults=(1,)",
        "--config.model.num_res_blocks=(1,)",
        "--config.model.attn_levels=(False,)",
        "--config.model.cross_attn_levels=(True,)",
        f"--config.sample.num_steps={sr.sample.num_steps}",
        f"--config.sample.batch_size={sr.sample.batch_size}",
    ]
    cmd = [sys.executable, "run.py", "--mode=sample", "--config=experiments/demo_sr.py"]
    cmd += [f"--workdir={dirs['sr']}", f"--base_workdir={dirs['base16']}", "--prompts=a;b;c"]
    result = subprocess.run(cmd + overrides, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    out = pathlib.Path(dirs["sr"]) / "samples" / "step_2_seed_0"
    low = np.asarray(Image.open(out / "lowres" / "0002_image.png"))
    high = np.asarray(Image.open(out / "0002_image.png"))
    assert low.shape == (16, 16, 3) and high.shape == (32, 32, 3)
    assert np.asarray(Image.open(out / "0002_label.png")).shape == (32, 32)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["base_workdir"] == dirs["base16"] and manifest["checkpoint_step"] == 2


def test_the_page_runs_the_cascade(trained_cascade):
    """``--mode serve --sr_workdir``: the page's SR toggle gives 32x32 pairs from the 16x16 base,
    and keeps a given layout exactly at both resolutions (nearest-upscaled for the SR stage)."""

    base, sr, dirs = trained_cascade
    page = page_lib.Page(load(base, dirs["base16"]), load(sr, dirs["sr"]))
    scale = page_lib.display_scale((32, 32))
    result = page.text_to_image("A large red square.", 2, 4, 3.0, 0, cascade=True)
    assert [p.shape for p, _ in result.pictures] == [(32 * scale, (32 + 2 + 32) * scale, 3)] * 2
    assert result.status.startswith("Done: 2 sample(s) at (32, 32)")
    layout = np.zeros((16, 16), np.int32)
    layout[4:12, 2:9] = 3
    image, shown = (
        p for p, _ in page.layout_to_image(layout, "", 4, 3.0, 0, cascade=True).pictures
    )
    assert image.shape == shown.shape == (32 * scale, 32 * scale, 3)
    palette = classes.dataset_info("demo").palette
    np.testing.assert_array_equal(
        shown[::scale, ::scale], palette[layout.repeat(2, 0).repeat(2, 1)]
    )
    with pytest.raises(ValueError, match="base model; give the SR model as --sr_workdir"):
        page_lib.Page(load(sr, dirs["sr"]))
