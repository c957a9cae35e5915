"""``--mode analyze`` end to end on the tests' tiny checkpoint, joint and image-only, and the
benchmark that tabulates it over runs."""

import json
import math
import pathlib

import jax
import ml_collections
import numpy as np
from PIL import Image

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
    assert {(r["block"], r["condition"]) for r in report["rows"]} == {
        (b, c) for b in settings.blocks for c in ("cond", "null")
    }
    table = (outdir / "table.md").read_text()
    assert "## K = class count" in table and "| up0_upsample | 0.3 | cond |" in table
    figure = np.asarray(Image.open(outdir / "figure.png"))
    # 2 rows of 96-pixel tiles (32x32 upscaled 3 times), 4 columns: image, layout, two blocks.
    assert figure.shape[1] == 4 * 96 + 5 * 2 and figure.shape[0] > 2 * 96


def test_analysis_of_an_image_only_model(trained_demo):
    """The image-only U-Net (``model.joint=False``: no layout input) through the same code, on
    parameters in memory; one condition, one K, no probe."""
    config, _ = trained_demo
    config = small_analysis(config, conditions=("null",), k=("present",), probe=False)
    config.model.joint = False
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
