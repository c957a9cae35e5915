"""``--mode evaluate``: text–image correspondence and fidelity of a checkpoint's samples.

    python run.py --mode evaluate --config experiments/demo.py --workdir /tmp/demo

Samples ``eval.num_samples`` pairs for the captions of the held-out split (cycled if the split is
smaller), then scores them with the functions of ``metrics``:

* ``alignment_miou`` / ``alignment_pixel_accuracy``: generated layout vs the segmenter's
  prediction on the generated image (joint model and a segmenter only);
* ``recall_image`` / ``precision_image``: classes the prompt names vs classes in the segmentation
  of the generated image (segmenter only); ``recall_layout`` / ``precision_layout``: the same vs
  the generated layout (joint model only);
* ``fid_{eval.features}``: Fréchet distance between real held-out and generated images in a
  feature space (``colour_pixels``: the weight-free proxy ``metrics.colour_pixel_features``; pass
  ``features=`` an Inception callable to ``evaluate_main`` for the usual FID).

Writes ``{workdir}/eval/step_{S}/report.json``, ``report.md`` and ``examples.png`` (best pairs on
top, worst below, by per-sample recall of the named classes, see ``ranking_score``).
"""

import json
import math
import os
from collections.abc import Callable

import jax
import ml_collections
import numpy as np
from absl import logging

from gcd_jax import viz
from gcd_jax.data import classes, pipeline, scenes
from gcd_jax.diffusion import sampling
from gcd_jax.errors import ConfigError
from gcd_jax.evaluation import metrics
from gcd_jax.inference import generation
from gcd_jax.inference.model import load

Segmenter = Callable[[np.ndarray], np.ndarray]  # images [N, H, W, 3] in [-1, 1] -> int [N, H, W]

# Segmenters of generated images, by config.data.name; datasets without one skip those metrics.
SEGMENTERS: dict[str, Segmenter] = {
    "demo": scenes.segment_demo,
    "demo_shapes": scenes.segment_shapes,
}

# Weight-free feature networks for the fidelity metric, by config.eval.features.
FEATURES: dict[str, metrics.FeatureFn] = {"colour_pixels": metrics.colour_pixel_features}


def feature_network(name: str) -> metrics.FeatureFn:
    """The ``FEATURES`` entry ``name``; ValueError naming the known ones."""
    if name not in FEATURES:
        raise ConfigError(f"Unknown eval.features {name!r}; expected one of {sorted(FEATURES)}.")
    return FEATURES[name]


def held_out(config: ml_collections.ConfigDict, num: int) -> tuple[list[str], dict]:
    """``num`` prompts (held-out captions, cycled) and the held-out examples (``image`` float
    ``[n, H, W, 3]``, ``label`` ``[n, H, W]``, ...) of ``pipeline.load_eval_examples``."""
    examples = pipeline.load_eval_examples(config, num)
    captions = [str(c) for c in examples["captions"]]
    if len(captions) < num:
        logging.info("evaluate: %d held-out captions, cycling them to %d", len(captions), num)
    return [captions[i % len(captions)] for i in range(num)], examples


def held_out_lowres(config: ml_collections.ConfigDict, examples: dict, num: int):
    """SR models: the low-res condition of each prompt, the held-out pair it was captioned from
    (cycled like the prompts) resized down as in training. None for a base model."""
    if not config.model.sr:
        return None
    rows = np.arange(num) % len(examples["image"])
    return generation.lowres_from_data(config, examples["image"][rows], examples["label"][rows])


def score_pairs(
    info: classes.DatasetInfo,
    prompts: list[str],
    images: np.ndarray,
    layouts: np.ndarray | None,
    segmenter: Segmenter | None,
    min_fraction: float,
) -> tuple[dict[str, float], dict[str, np.ndarray], list[str]]:
    """Correspondence metrics of generated pairs.

    Args:
      images: float ``[N, H, W, 3]`` in [−1, 1]; layouts: int ``[N, H, W]`` or None (image-only).
      segmenter: labels images, or None (the segmenter-based metrics are skipped and logged).
      min_fraction: pixel fraction from which a class counts as present.

    Returns:
      (pooled metrics by name, per-sample arrays ``[N]`` / ``per_class_iou`` ``[K]`` /
      ``segmented`` ``[N, H, W]``, reasons for skipped metrics).
    """
    k = info.num_classes
    nameable = np.isin(np.arange(k), list(info.keywords)) & (np.arange(k) != info.ignore_class)
    named = metrics.named_classes(prompts, info.caption_classes, k)
    scores, arrays, skipped = {}, {"named": named, "num_named": (named & nameable).sum(1)}, []
    label_maps = {}
    if segmenter is None:
        skipped.append(f"no segmenter for dataset {info.name!r}: alignment and *_image skipped")
    else:
        label_maps["image"] = arrays["segmented"] = np.asarray(segmenter(images), np.int32)
    if layouts is None:
        skipped.append("image-only model (model.joint=False): alignment and *_layout skipped")
    else:
        label_maps["layout"] = layouts
    for skip in skipped:
        logging.warning("evaluate: %s", skip)
    for source, labels in label_maps.items():
        present = metrics.present_classes(labels, k, min_fraction)
        result = metrics.recall_precision(named, present, nameable)
        scores[f"recall_{source}"] = result["recall"]
        scores[f"precision_{source}"] = result["precision"]
        arrays[f"recall_{source}"], arrays[f"present_{source}"] = result["sample_recall"], present
    if len(label_maps) == 2:
        result = metrics.alignment(layouts, label_maps["image"], k, info.ignore_class)
        scores["alignment_miou"] = result["miou"]
        scores["alignment_pixel_accuracy"] = result["pixel_accuracy"]
        arrays["miou"], arrays["per_class_iou"] = result["sample_miou"], result["per_class_iou"]
    return scores, arrays, skipped


def recall_by_count(arrays: dict[str, np.ndarray]) -> dict[str, dict[str, dict]]:
    """Recall split by how many classes the prompt names: ``{source: {count: {'recall',
    'samples'}}}`` for each scored source ('image', 'layout'). Prompts naming the same number of
    classes weigh alike, so each cell's pooled recall is the mean of their per-sample recalls."""
    out = {}
    for source in ("image", "layout"):
        if f"recall_{source}" not in arrays:
            continue
        out[source] = {}
        for count in sorted(set(arrays["num_named"].tolist()) - {0}):
            rows = arrays[f"recall_{source}"][arrays["num_named"] == count]
            out[source][str(count)] = {"recall": float(rows.mean()), "samples": int(rows.size)}
    return out


def ranking_score(arrays: dict[str, np.ndarray]) -> tuple[str, np.ndarray] | None:
    """The per-sample score examples are ranked by: recall of the named classes in the image (the
    paper's text–image correspondence; the same ranking for joint and image-only models), else in
    the layout, else image–layout mIoU (an empty image over an empty layout aligns perfectly, so
    mIoU alone ranks blank samples best)."""
    for name in ("recall_image", "recall_layout", "miou"):
        if name in arrays:
            return name, arrays[name]
    return None


def best_and_worst(score: np.ndarray, num: int) -> tuple[list[int], list[int]]:
    """Indices of the ``num`` highest (best first) and ``num`` lowest (worst first) finite scores;
    samples without a score (NaN: e.g. nothing named) are in neither."""
    finite = np.flatnonzero(np.isfinite(score))
    order = finite[np.argsort(-score[finite], kind="stable")]
    return order[:num].tolist(), order[::-1][:num].tolist()


def _finite_or_none(value: float) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


def _names(info: classes.DatasetInfo, row: np.ndarray) -> list[str]:
    return [info.class_names[i] for i in np.flatnonzero(row)]


def per_class_iou(info: classes.DatasetInfo, arrays: dict) -> dict[str, float | None]:
    """{class name: IoU or None}, empty when alignment was skipped."""
    if "per_class_iou" not in arrays:
        return {}
    return {
        name: _finite_or_none(v)
        for name, v in zip(info.class_names, arrays["per_class_iou"], strict=True)
    }


def sample_records(info, prompts, arrays) -> list[dict]:
    """One JSON-ready record per sample: prompt, named/present classes and its scores."""
    records = []
    for i, prompt in enumerate(prompts):
        record = {"index": i, "prompt": prompt, "named": _names(info, arrays["named"][i])}
        for source in ("image", "layout"):
            if f"present_{source}" in arrays:
                record[f"{source}_classes"] = _names(info, arrays[f"present_{source}"][i])
                record[f"recall_{source}"] = _finite_or_none(arrays[f"recall_{source}"][i])
        if "miou" in arrays:
            record["miou"] = _finite_or_none(arrays["miou"][i])
        records.append(record)
    return records


def markdown_report(report: dict) -> str:
    """A Markdown summary: settings, a metric table and the per-class IoU table."""
    lines = [
        f"# Evaluation: step {report['checkpoint_step']}",
        "",
        f"dataset `{report['dataset']}`, joint={report['joint']}, {report['num_samples']} samples, "
        f"guidance {report['guidance_scale']}, {report['sample_steps']} sampling steps, "
        f"seed {report['seed']}, class present from {report['min_class_fraction']:.3g} of pixels.",
        "",
        "| metric | value |",
        "|---|---|",
    ]
    for name, value in report["metrics"].items():
        lines.append(f"| {name} | {'n/a' if value is None else f'{value:.4f}'} |")
    if report["per_class_iou"]:
        lines += ["", "| class | IoU |", "|---|---|"]
        for name, value in report["per_class_iou"].items():
            lines.append(f"| {name} | {'n/a' if value is None else f'{value:.4f}'} |")
    by_count = report["recall_by_count"]
    if by_count:
        sources = list(by_count)
        counts = sorted({n for table in by_count.values() for n in table}, key=int)
        lines += ["", "| classes named | samples | " + " | ".join(f"recall ({s})" for s in sources)]
        lines[-1] += " |"
        lines.append("|---" * (len(sources) + 2) + "|")
        for n in counts:
            cells = [by_count[s].get(n) for s in sources]
            samples = next(c["samples"] for c in cells if c)
            values = " | ".join("n/a" if c is None else f"{c['recall']:.4f}" for c in cells)
            lines.append(f"| {n} | {samples} | {values} |")
    if report["skipped"]:
        lines += ["", "Skipped:"] + [f"- {reason}" for reason in report["skipped"]]
    return "\n".join(lines) + "\n"


def write_report(outdir: str, report: dict) -> None:
    """``report.json`` (NaN written as null) and ``report.md`` under ``outdir``."""
    os.makedirs(outdir, exist_ok=True)
    with open(os.path.join(outdir, "report.json"), "w") as f:
        json.dump(report, f, indent=2, allow_nan=False)
    with open(os.path.join(outdir, "report.md"), "w") as f:
        f.write(markdown_report(report))


def examples_png(path, info, prompts, images, label_rows, best, worst) -> None:
    """Best pairs (image row, layout row, prompts) above the worst pairs, one PNG, with the
    legend of the layout colours at the bottom."""
    grids = [
        viz.pair_grid(images[idx], label_rows[idx], info.palette, [prompts[i] for i in idx])
        for idx in (best, worst)
        if idx
    ]
    if grids:
        width = max(g.shape[1] for g in grids)
        grids.append(viz.legend_band(info.class_names, info.palette, width))
        grids = [
            np.pad(g, ((0, 0), (0, width - g.shape[1]), (0, 0)), constant_values=255) for g in grids
        ]
        viz.save_png(path, np.concatenate(grids, axis=0))


def evaluate_main(
    config: ml_collections.ConfigDict,
    workdir: str,
    seed: int = 0,
    step: int | None = None,
    features: metrics.FeatureFn | None = None,
) -> str:
    """Samples, scores and writes the report; returns ``{workdir}/eval/step_{S}``.

    ``features``: an images -> ``[N, F]`` callable (e.g. Inception-v3 pool features from weights
    you have) replacing ``eval.features`` for the fidelity metric.
    """
    e = config.eval
    info = classes.dataset_info(config.data.name)
    feature_name = "user_features" if features is not None else e.features
    features = features if features is not None else feature_network(e.features)
    model = load(config, workdir, step)
    prompts, examples = held_out(config, e.num_samples)
    real = examples["image"]
    logging.info("evaluate: step %d, %d prompts", model.step, len(prompts))
    images, layouts = generation.generate(
        model,
        prompts,
        jax.random.key(seed),
        lowres=held_out_lowres(config, examples, len(prompts)),
        progress=generation.log_progress("evaluate"),
    )
    segmenter = SEGMENTERS.get(config.data.name)  # absent -> skipped, logged in score_pairs
    scores, arrays, skipped = score_pairs(
        info, prompts, images, layouts, segmenter, e.min_class_fraction
    )
    scores[f"fid_{feature_name}"] = metrics.fid(real, images, features)
    ranked = ranking_score(arrays)
    best, worst = best_and_worst(ranked[1], e.num_examples_png) if ranked else ([], [])
    report = {
        "checkpoint_step": model.step,
        "seed": seed,
        "dataset": config.data.name,
        "joint": config.model.joint,
        "num_samples": len(prompts),
        "num_real": len(real),
        "guidance_scale": sampling.config_guidance(config.sample),
        "sample_steps": config.sample.num_steps,
        "min_class_fraction": e.min_class_fraction,
        "metrics": {name: _finite_or_none(value) for name, value in scores.items()},
        "per_class_iou": per_class_iou(info, arrays),
        "recall_by_count": recall_by_count(arrays),
        "ranked_by": ranked[0] if ranked else None,
        "best": best,
        "worst": worst,
        "skipped": skipped,
        "samples": sample_records(info, prompts, arrays),
    }
    outdir = os.path.join(workdir, "eval", f"step_{model.step}")
    write_report(outdir, report)
    rows = layouts if layouts is not None else arrays.get("segmented")
    if rows is not None:
        path = os.path.join(outdir, "examples.png")
        examples_png(path, info, prompts, images, rows, best, worst)
    logging.info("evaluate: %s", json.dumps(report["metrics"]))
    logging.info("evaluate: report in %s", outdir)
    return outdir
