"""``--mode analyze`` end to end on the tests' tiny checkpoint, joint and image-only, and the
benchmark that tabulates it over runs."""

import json
import math
import pathlib

import jax
import ml_collections
import numpy as np
from PIL import Image

from benchmarks import analysis as bench
from gcd_jax.cli import analyze
from gcd_jax.evaluation import analysis
from gcd_jax.inference.model import from_state
from gcd_jax.models.networks import build_networks


def small_analysis(config: ml_collections.ConfigDict, **fields) -> ml_collections.ConfigDict:
    """A copy of ``config`` analysing 4 images at one t with two blocks."""
    config = ml_collections.ConfigDict(config.to_dict())
    a = config.analysis
    a.num_images, a.times, a.blocks, a.figure_images = 4, (0.3,), ("mid_block2", "up0_upsample"), 2
    for key, value in fields.items():
        setattr(a, key, value)
    return config


def check_rows(rows: list[dict], settings: analysis.Settings) -> None:
    assert len(rows) == len(settings.blocks) * len(settings.times) * len(settings.conditions)
    for row in rows:
        assert 0.0 <= row["probe_accuracy"] <= 1.0
        for k in settings.k:
            (nmi, nmi_std), (ari, _), (miou, _) = (row[k][s] for s in ("nmi", "ari", "miou"))
            assert 0.0 <= nmi <= 1.0 and -1.0 <= ari <= 1.0 and 0.0 <= miou <= 1.0, row
            assert math.isfinite(nmi_std) and nmi_std >= 0.0


def test_analyze_mode_end_to_end(trained_demo):
    """``analyze_main`` (what ``run.py --mode analyze`` calls) on the 4-step tiny joint run:
    report, table and figure written, every score finite and in its range."""
    config, workdir = trained_demo
    config = small_analysis(config)
    outdir = pathlib.Path(analyze.analyze_main(config, workdir))
    assert outdir == pathlib.Path(workdir) / "analysis" / "step_4"
    report = json.loads((outdir / "report.json").read_text())
    assert report["checkpoint_step"] == 4 and report["joint"] and report["num_images"] == 4
    settings = analysis.Settings.from_config(config)
    check_rows(report["rows"], settings)
    assert 0.0 < report["probe_majority_baseline"] < 1.0
    assert {(r["block"], r["condition"]) for r in report["rows"]} == {
        (b, c) for b in settings.blocks for c in ("cond", "null")
    }
    table = (outdir / "table.md").read_text()
    assert "## K = class count" in table and "| up0_upsample | 0.3 | cond |" in table
    figure = np.asarray(Image.open(outdir / "figure.png"))
    # 2 rows of 96-pixel tiles (32x32 upscaled 3 times), 4 columns: image, layout, two blocks.
    assert figure.shape[1] == 4 * 96 + 5 * 2 and figure.shape[0] > 2 * 96


def test_analysis_of_an_image_only_sr_model(trained_demo):
    """An image-only (``model.joint=False``: no layout input) super-resolution U-Net (its
    low-res condition made from the held-out images) through the same code, on random
    parameters in memory; one condition, one K, no probe."""
    config, _ = trained_demo
    config = small_analysis(config, conditions=("null",), k=("present",), probe=False)
    config.model.joint, config.model.sr, config.model.lowres_size = False, True, (16, 16)
    nets = build_networks(config)
    rng = np.random.default_rng(0)  # random parameters: no init to compile
    shapes = jax.eval_shape(nets.init, jax.random.key(0))
    params = jax.tree.map(lambda s: rng.normal(0, 0.1, s.shape).astype(s.dtype), shapes)
    model = from_state(config, nets, params, nets.load_frozen(), 0)
    examples = analyze.held_out(config, 4)
    settings = analysis.Settings.from_config(config)
    result = analysis.analyze(model, examples, settings)
    for row in result["rows"]:
        assert row["probe_accuracy"] is None and set(row) >= {"present"}
        assert 0.0 <= row["present"]["nmi"][0] <= 1.0


def fake_report(nmi: float, probe: float) -> dict:
    cell = {"nmi": (nmi, 0.1), "ari": (nmi / 2, 0.1), "miou": (nmi / 3, 0.1)}
    rows = [
        {"block": b, "t": 0.3, "condition": c, "probe_accuracy": probe, "classes": cell}
        for b in ("mid_block2", "up0_upsample")
        for c in ("cond", "null")
    ]
    return {"checkpoint_step": 4, "blocks": ["mid_block2", "up0_upsample"], "rows": rows}


def test_benchmark_table_compares_joint_and_image_only_over_seeds():
    results = [
        {"joint": joint, "caption_fraction": 0.25, "seed": seed, "report": fake_report(nmi, 0.5)}
        for joint, nmis in ((True, (0.6, 0.8)), (False, (0.2, 0.2)))
        for seed, nmi in enumerate(nmis)
    ]
    text = bench.table(results)
    assert "### captions 0.25 (seeds: joint [0, 1], image-only [0, 1])" in text
    # joint NMI 0.7 ± 0.141 (sample std), image-only 0.2 ± 0; Δ 0.5 > 0.141: starred.
    row = "| mid_block2 | 0.3 | 0.700 ± 0.141 | 0.200 ± 0.000 | 0.350 ± 0.071 |"
    assert row in text and text.count("| +0.500* |") == 2


def test_benchmark_on_the_tiny_checkpoint(trained_demo, tmp_path):
    """``benchmarks/analysis.py`` over a runs folder holding the tiny run: its report goes to
    ``{out}/{run}``, not into the run, and the combined table is written."""
    _, workdir = trained_demo
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "joint_c1_s0").symlink_to(workdir)
    out = tmp_path / "out"
    argv = ["--runs", str(tmp_path / "runs"), "--out", str(out), "--num_images", "4"]
    argv += ["--times", "0.3", "--blocks", "mid_block2,up0_upsample"]
    args = bench.parse(argv + ["--conditions", "cond", "--k", "classes"])
    before = sorted(p.name for p in pathlib.Path(workdir).iterdir())
    results = bench.analyze_runs(args.runs, args.out, args.step, bench.overrides_of(args))
    text = bench.write(results, args.out)
    assert sorted(p.name for p in pathlib.Path(workdir).iterdir()) == before
    assert (out / "joint_c1_s0" / "figure.png").exists()
    assert "| up0_upsample | 0.3 |" in text and (out / "analysis.md").read_text() == text
    summary = json.loads((out / "analysis.json").read_text())
    assert summary[0]["name"] == "joint_c1_s0" and summary[0]["step"] == 4
