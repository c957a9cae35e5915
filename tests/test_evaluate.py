"""The evaluation driver: scoring of hand-made pairs, the report writer, and one real
``run.py --mode evaluate`` on a checkpoint of a tiny model."""

import json
import logging
import os
import pathlib

import ml_collections
import numpy as np
import pytest

from gcd_jax.cli import evaluate
from gcd_jax.data import classes, scenes

ROOT = pathlib.Path(__file__).resolve().parents[1]
DEMO = classes.dataset_info("demo")


def demo_pair(layout: np.ndarray) -> np.ndarray:
    """A float image in [-1, 1] whose pixels are the palette colours of ``layout`` [H, W]."""
    return DEMO.palette[layout].astype(np.float32) / 127.5 - 1.0


def test_score_pairs_by_hand():
    # Sample 0: prompt names red square (1) and green circle (2); the layout has 1 and 3, the image
    # shows 1 only (its class-3 pixels are painted background grey).
    # Sample 1: prompt names blue triangle (3); layout and image both have 3.
    layouts = np.zeros((2, 8, 8), np.int32)
    layouts[0, :4, :4], layouts[0, 4:, 4:] = 1, 3
    layouts[1, 2:6, 2:6] = 3
    image_labels = layouts.copy()
    image_labels[0, 4:, 4:] = 0
    images = demo_pair(image_labels)
    prompts = ["A red square and a green circle.", "There is a blue triangle on the left."]
    scores, arrays, skipped = evaluate.score_pairs(
        DEMO, prompts, images, layouts, scenes.segment_demo, min_fraction=0.05
    )
    assert skipped == []
    # vs image: named {1,2} | {3}; present (nameable) {1} | {3} -> recall 2/3, precision 2/2.
    assert scores["recall_image"] == pytest.approx(2 / 3)
    assert scores["precision_image"] == pytest.approx(1.0)
    # vs layout: present {1,3} | {3} -> recall 2/3, precision 2/3.
    assert scores["recall_layout"] == pytest.approx(2 / 3)
    assert scores["precision_layout"] == pytest.approx(2 / 3)
    np.testing.assert_allclose(arrays["recall_image"], [0.5, 1.0])
    # Split by the number of classes named: sample 1 names one (drawn), sample 0 two (one drawn).
    one, two = {"recall": 1.0, "samples": 1}, {"recall": 0.5, "samples": 1}
    by_count = {"image": {"1": one, "2": two}, "layout": {"1": one, "2": two}}
    assert evaluate.recall_by_count(arrays) == by_count
    # Alignment (layout = reference): class 0: TP 32 + 48, FP 16 -> 80/96; class 1: 1;
    # class 3: TP 16 (sample 1), FN 16 (sample 0) -> 1/2.
    iou = arrays["per_class_iou"]
    np.testing.assert_allclose(iou[[0, 1, 3]], [80 / 96, 1.0, 0.5])
    assert np.isnan(iou[[2, 4, 5, 6, 7]]).all()
    assert scores["alignment_miou"] == pytest.approx((80 / 96 + 1.0 + 0.5) / 3)
    assert scores["alignment_pixel_accuracy"] == pytest.approx(112 / 128)
    # Per sample: sample 0 has class 0 (32/48), class 1 (1), class 3 (0); sample 1 is exact.
    np.testing.assert_allclose(arrays["miou"], [(32 / 48 + 1 + 0) / 3, 1.0])


def test_examples_are_ranked_by_what_the_text_names_not_by_blank_agreement():
    """A blank image over a blank layout aligns perfectly (mIoU 1) but draws nothing the prompt
    names; the pair that draws the red square it names ranks best."""
    layouts = np.zeros((2, 8, 8), np.int32)
    layouts[1, 2:6, 2:6] = 1
    prompts = ["A red square."] * 2
    _, arrays, _ = evaluate.score_pairs(
        DEMO, prompts, demo_pair(layouts), layouts, scenes.segment_demo, min_fraction=0.05
    )
    np.testing.assert_allclose(arrays["miou"], [1.0, 1.0])
    _, score = evaluate.ranking_score(arrays)
    assert evaluate.best_and_worst(score, 1) == ([1], [0])


def test_score_pairs_skips_with_reasons_without_segmenter_or_layout(caplog):
    images = demo_pair(np.zeros((1, 4, 4), np.int32))
    with caplog.at_level(logging.WARNING):
        scores, arrays, skipped = evaluate.score_pairs(
            DEMO, ["a red square"], images, None, None, 0.1
        )
    assert "no segmenter for dataset 'demo'" in caplog.text
    assert scores == {}
    assert any("no segmenter" in s for s in skipped)
    assert any("image-only" in s for s in skipped)
    assert evaluate.ranking_score(arrays) is None


def test_best_and_worst_skip_nan():
    score = np.array([0.5, np.nan, 0.9, 0.1, 0.7])
    assert evaluate.best_and_worst(score, 2) == ([2, 4], [3, 0])
    assert evaluate.best_and_worst(score, 10) == ([2, 4, 0, 3], [3, 0, 4, 2])


def test_unknown_features_name_is_refused():
    with pytest.raises(ValueError, match="colour_pixels"):
        evaluate.feature_network("inception")


def test_write_report_json_and_markdown(tmp_path):
    report = {
        "checkpoint_step": 7,
        "seed": 0,
        "dataset": "demo",
        "joint": True,
        "num_samples": 2,
        "guidance_scale": 3.0,
        "sample_steps": 3,
        "min_class_fraction": 0.005,
        "metrics": {"recall_image": 0.75, "alignment_miou": None},
        "per_class_iou": {"background": 0.5, "red square": None},
        "recall_by_count": {
            "image": {"1": {"recall": 0.5, "samples": 4}, "2": {"recall": 0.25, "samples": 2}},
            "layout": {"1": {"recall": 1.0, "samples": 4}},
        },
        "skipped": ["because"],
    }
    evaluate.write_report(str(tmp_path), report)
    assert json.loads((tmp_path / "report.json").read_text()) == report
    md = (tmp_path / "report.md").read_text()
    assert "| recall_image | 0.7500 |" in md
    assert "| alignment_miou | n/a |" in md
    assert "| red square | n/a |" in md
    assert "- because" in md
    assert "| 1 | 4 | 0.5000 | 1.0000 |" in md and "| 2 | 2 | 0.2500 | n/a |" in md
    with pytest.raises(ValueError):  # a NaN must be converted to None before writing
        evaluate.write_report(str(tmp_path), {**report, "metrics": {"x": float("nan")}})


def test_evaluate_mode_end_to_end(trained_demo, caplog):
    """``--mode evaluate`` (``evaluate_main``, in-process) on the checkpoint of the session's
    4-step tiny training run; 12 samples in batches of 8 over the 8 fake devices."""
    config, workdir = trained_demo
    config = ml_collections.ConfigDict(config.to_dict())
    config.eval.num_samples = 12
    config.eval.num_examples_png = 2
    with caplog.at_level(logging.INFO):
        evaluate.evaluate_main(config, workdir)
    assert "sampled 8 / 12 pairs" in caplog.text and "sampled 12 / 12 pairs" in caplog.text
    workdir = pathlib.Path(workdir)
    outdir = workdir / "eval" / "step_4"
    report = json.loads((outdir / "report.json").read_text())
    assert report["checkpoint_step"] == 4 and report["num_samples"] == 12
    names = {
        "recall_image",
        "precision_image",
        "recall_layout",
        "precision_layout",
        "alignment_miou",
        "alignment_pixel_accuracy",
        "fid_colour_pixels",
    }
    assert set(report["metrics"]) == names
    for name in names - {"fid_colour_pixels"}:
        value = report["metrics"][name]
        assert value is None or 0.0 <= value <= 1.0, (name, value)
    assert report["metrics"]["fid_colour_pixels"] > 0.0
    assert len(report["samples"]) == 12 and report["samples"][0]["named"]
    assert len(report["best"]) == len(report["worst"]) == 2
    for source in ("image", "layout"):  # every sample counted once in the per-count split
        assert sum(c["samples"] for c in report["recall_by_count"][source].values()) == 12
    assert (outdir / "report.md").read_text().startswith("# Evaluation: step 4")
    assert os.path.getsize(outdir / "examples.png") > 0
