"""``--mode analyze``: does the U-Net's representation group pixels by their semantic class?

    python run.py --mode analyze --config experiments/demo.py --workdir /tmp/demo [--step S]

Noises ``analysis.num_images`` held-out images (and, for the joint model, their layouts) to each
of ``analysis.times``, runs the U-Net once per text condition, clusters the upsampled features of
``analysis.blocks`` per image with k-means and scores the clusters against the layouts
(``gcd_jax.evaluation.analysis``). Works on joint and image-only (``model.joint=False``)
checkpoints, base and SR. Runs on one device.

Writes ``{workdir}/analysis/step_{S}/`` (or ``outdir``): ``report.json`` (settings and, per
block × t × condition, NMI / ARI / mIoU mean and std over images for each K, and the probe
accuracy), ``table.md`` (the same as tables) and ``figure.png`` (image | layout | cluster maps).
"""

import json
import os

import jax
import ml_collections
from absl import logging

from gcd_jax import sharding, viz
from gcd_jax.data import classes, pipeline, sources
from gcd_jax.errors import InputError
from gcd_jax.evaluation import analysis
from gcd_jax.inference.model import load


def held_out(config: ml_collections.ConfigDict, num: int) -> dict:
    """The first ``num`` examples of the eval split; InputError when it has fewer."""
    examples = pipeline.load_eval_examples(config, num)
    if len(examples["image"]) < num:
        raise InputError(
            f"analysis.num_images={num} is larger than the eval split "
            f"{sources.eval_split(config)!r} of {config.data.name} ({len(examples['image'])} "
            "images); lower it."
        )
    return examples


def build_report(config, step: int, settings: analysis.Settings, result: dict) -> dict:
    return {
        "checkpoint_step": step,
        "dataset": config.data.name,
        "joint": bool(config.model.joint),
        "sr": bool(config.model.sr),
        "num_images": settings.num_images,
        "times": list(settings.times),
        "blocks": list(settings.blocks),
        "conditions": list(settings.conditions),
        "k": list(settings.k),
        "upsample": settings.upsample,
        "probe": settings.probe,
        "seed": settings.seed,
        "kmeans": "sklearn.cluster.KMeans, k-means++ initialisation, 4 restarts",
        "probe_majority_baseline": result["probe_baseline"],
        "rows": result["rows"],
    }


def _cell(pair) -> str:
    mean, std = pair
    return f"{mean:.3f} ± {std:.3f}"


def markdown_table(report: dict) -> str:
    """One table per K: a row per block × t × condition (NMI, ARI, mIoU, probe accuracy)."""
    lines = [
        f"# Feature analysis: step {report['checkpoint_step']}",
        "",
        f"dataset `{report['dataset']}`, joint={report['joint']}, {report['num_images']} held-out "
        f"images, features upsampled {report['upsample']}, k-means ({report['kmeans']}), seed "
        f"{report['seed']}. Mean ± std over images; probe: per-pixel logistic regression trained "
        "on the first half of the images, accuracy on the other half.",
    ]
    if report["probe_majority_baseline"] is not None:
        lines[-1] += (
            " The probe's floor, the training half's most frequent class predicted everywhere: "
            f"{report['probe_majority_baseline']:.3f}."
        )
    k_names = {"classes": "K = class count", "present": "K = classes present in the image"}
    for k in report["k"]:
        lines += [
            "",
            f"## {k_names[k]}",
            "",
            "| block | t | condition | NMI | ARI | mIoU | probe accuracy |",
            "|---|---|---|---|---|---|---|",
        ]
        for row in report["rows"]:
            s = row[k]
            probe = "n/a" if row["probe_accuracy"] is None else f"{row['probe_accuracy']:.3f}"
            lines.append(
                f"| {row['block']} | {row['t']:g} | {row['condition']} | {_cell(s['nmi'])} | "
                f"{_cell(s['ari'])} | {_cell(s['miou'])} | {probe} |"
            )
    return "\n".join(lines) + "\n"


def analyze_main(
    config: ml_collections.ConfigDict,
    workdir: str,
    step: int | None = None,
    outdir: str | None = None,
) -> str:
    """Runs the analysis of the checkpoint at ``step`` (default: latest) of ``workdir`` and
    writes its report, table and figure to ``outdir`` (default
    ``{workdir}/analysis/step_{S}``); returns that folder."""
    settings = analysis.Settings.from_config(config)
    info = classes.dataset_info(config.data.name)
    examples = held_out(config, settings.num_images)
    model = load(config, workdir, step, mesh=sharding.make_mesh(jax.local_devices()[:1]))
    logging.info(
        "analyze: step %d, %d images, blocks %s, times %s",
        model.step,
        settings.num_images,
        settings.blocks,
        settings.times,
    )
    result = analysis.analyze(model, examples, settings)
    report = build_report(config, model.step, settings, result)
    outdir = outdir or os.path.join(workdir, "analysis", f"step_{model.step}")
    os.makedirs(outdir, exist_ok=True)
    with open(os.path.join(outdir, "report.json"), "w") as f:
        json.dump(report, f, indent=2, allow_nan=False)
    with open(os.path.join(outdir, "table.md"), "w") as f:
        f.write(markdown_table(report))
    picture = analysis.figure(examples, result["maps"], settings, info.palette, info.class_names)
    viz.save_png(os.path.join(outdir, "figure.png"), picture)
    logging.info("analyze: report in %s", outdir)
    return outdir
