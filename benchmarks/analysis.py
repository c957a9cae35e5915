"""The paper's representation claim on trained runs: does the joint model's U-Net group pixels by
class more than the image-only model's (``model.joint=False``), at the same budget and seeds?

    python -m benchmarks.analysis --runs /work/runs/claim/runs --out /tmp/analysis [--step 1200]

Each folder of ``--runs`` holding ``checkpoints/`` is one run (e.g. ``joint_c0.25_s0``, made by
``benchmarks/correspondence.py``); its experiment config is read from its checkpoint, so the
runs need no config file. ``--mode analyze``'s code (``gcd_jax.cli.analyze.analyze_main``) runs
on each, writing ``{out}/{run}/report.json``, ``table.md`` and ``figure.png`` (nothing is written
into the run folders; a run whose report for that step exists is not analysed again). The runs
are grouped by caption fraction (``data.caption_fraction``) and model (``model.joint``), the
seeds (``train.seed``) of a group averaged, and ``{out}/analysis.md`` (also printed) gets one table
per caption fraction: per block × t, for the condition 'cond' (the caption) and K = the class
count, NMI, ARI and mIoU (each run's mean over its images) and the probe accuracy, mean ± std
over seeds, joint | image-only, and Δ NMI = joint − image-only, starred where it exceeds the sum
of the two seed stds. ``{out}/analysis.json`` holds the per-run numbers.

``--num_images``, ``--times`` and ``--blocks`` override ``analysis.*`` for every run.
"""

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import ml_collections  # noqa: E402

from benchmarks.correspondence import stat, stat_text  # noqa: E402
from experiments import base  # noqa: E402
from gcd_jax.cli import analyze, runtime  # noqa: E402
from gcd_jax.training import checkpoint  # noqa: E402

MODELS = {True: "joint", False: "image-only"}  # model.joint -> column name
METRICS = (("nmi", "NMI"), ("ari", "ARI"), ("miou", "mIoU"), ("probe_accuracy", "probe"))
CONDITION, K = "cond", "classes"


def with_defaults(saved: ml_collections.ConfigDict, defaults: ml_collections.ConfigDict):
    """``saved`` (a run's config) with every field of ``defaults`` it lacks added (e.g. the
    ``analysis`` section, for runs trained before it existed)."""
    for name, value in defaults.items():
        is_section = isinstance(value, ml_collections.ConfigDict)
        if name not in saved:
            saved[name] = ml_collections.ConfigDict(value.to_dict()) if is_section else value
        elif is_section:
            with_defaults(saved[name], value)
    return saved


def run_config(run_dir: str, step: int | None, overrides: dict) -> ml_collections.ConfigDict:
    config = with_defaults(checkpoint.read_config(run_dir, step), base.get_config())
    for key, value in overrides.items():
        setattr(config.analysis, key, value)
    return config


def analyze_run(run_dir: str, outdir: str, step: int | None, overrides: dict) -> dict:
    """``{name, joint, caption_fraction, seed, report}`` of one run, analysed into ``outdir``
    unless its report for ``step`` is there."""
    config = run_config(run_dir, step, overrides)
    ckpt = checkpoint.Checkpointer(run_dir, config, create=False)
    try:
        step = ckpt.resolve_step(step)
    finally:
        ckpt.close()
    path = os.path.join(outdir, "report.json")
    report = None
    if os.path.exists(path):
        with open(path) as f:
            report = json.load(f)
        if report["checkpoint_step"] != step:
            report = None
    if report is None:
        analyze.analyze_main(config, run_dir, step, outdir)
        with open(path) as f:
            report = json.load(f)
    return {
        "name": os.path.basename(os.path.normpath(run_dir)),
        "joint": bool(config.model.joint),
        "caption_fraction": float(config.data.caption_fraction),
        "seed": int(config.train.seed),
        "report": report,
    }


def run_values(report: dict) -> dict[tuple[str, float], dict[str, float | None]]:
    """``{(block, t): {metric: value}}`` of one report, condition 'cond', K = class count."""
    values = {}
    for row in report["rows"]:
        if row["condition"] == CONDITION and K in row:
            cell = {name: row[K][name][0] for name in ("nmi", "ari", "miou")}
            cell["probe_accuracy"] = row["probe_accuracy"]
            values[(row["block"], row["t"])] = cell
    return values


def _delta(joint: tuple | None, image_only: tuple | None) -> str:
    """joint − image-only, starred beyond the sum of the seed stds (two seeds or more each)."""
    if joint is None or image_only is None:
        return "—"
    delta = joint[0] - image_only[0]
    spread = None if None in (joint[1], image_only[1]) else joint[1] + image_only[1]
    return f"{delta:+.3f}" + ("*" if spread is not None and abs(delta) > spread else "")


def table(results: list[dict]) -> str:
    """The combined Markdown tables (see the module docstring)."""
    lines = [
        "U-Net feature analysis (`--mode analyze`): condition 'cond' (the caption), K = class "
        "count; each run's mean over its images, then mean ± std over seeds. Δ NMI = joint − "
        "image-only, * where it exceeds the sum of the two seed stds.",
    ]
    baselines = {r["report"].get("probe_majority_baseline") for r in results} - {None}
    if baselines:
        lines[0] += (
            " Probe floor (most frequent class): "
            + ", ".join(f"{b:.3f}" for b in sorted(baselines))
            + "."
        )
    for fraction in sorted({r["caption_fraction"] for r in results}):
        group = {
            joint: [r for r in results if r["caption_fraction"] == fraction and r["joint"] == joint]
            for joint in MODELS
        }
        seeds = {joint: sorted(r["seed"] for r in runs) for joint, runs in group.items()}
        lines += [
            "",
            f"### captions {fraction:g} (seeds: joint {seeds[True]}, image-only {seeds[False]})",
            "",
            "| block | t | "
            + " | ".join(f"{title} {MODELS[j]}" for _, title in METRICS for j in MODELS)
            + " | Δ NMI |",
            "|---|---" + "|---" * (2 * len(METRICS) + 1) + "|",
        ]
        per_run = {j: [run_values(r["report"]) for r in runs] for j, runs in group.items()}
        keys = sorted({key for runs in per_run.values() for v in runs for key in v})
        order = {b: i for r in results for i, b in enumerate(r["report"]["blocks"])}
        for block, t in sorted(keys, key=lambda key: (order[key[0]], key[1])):
            cells = {
                (name, j): stat([v[(block, t)][name] for v in per_run[j] if (block, t) in v])
                for name, _ in METRICS
                for j in MODELS
            }
            row = [stat_text(cells[(name, j)]) for name, _ in METRICS for j in MODELS]
            delta = _delta(cells[("nmi", True)], cells[("nmi", False)])
            lines.append(f"| {block} | {t:g} | " + " | ".join(row) + f" | {delta} |")
    return "\n".join(lines) + "\n"


def analyze_runs(runs: str, out: str, step: int | None, overrides: dict) -> list[dict]:
    """``analyze_run`` of each run folder of ``runs`` (those holding ``checkpoints/``), sorted."""
    if not os.path.isdir(runs):
        raise SystemExit(f"--runs {runs} is not a folder.")
    names = sorted(
        name for name in os.listdir(runs) if os.path.isdir(os.path.join(runs, name, "checkpoints"))
    )
    if not names:
        raise SystemExit(f"No run folders (with checkpoints/) in {runs}.")
    results = []
    for name in names:
        print(f"analysis: {name}", flush=True)
        results.append(
            analyze_run(os.path.join(runs, name), os.path.join(out, name), step, overrides)
        )
    return results


def write(results: list[dict], out: str) -> str:
    text = table(results)
    with open(os.path.join(out, "analysis.md"), "w") as f:
        f.write(text)
    summary = [
        {k: r[k] for k in ("name", "joint", "caption_fraction", "seed")}
        | {"step": r["report"]["checkpoint_step"], "rows": r["report"]["rows"]}
        for r in results
    ]
    with open(os.path.join(out, "analysis.json"), "w") as f:
        json.dump(summary, f, indent=2)
    return text


def parse(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", required=True, help="folder of run folders (workdirs)")
    parser.add_argument("--out", required=True, help="reports and the combined table go here")
    parser.add_argument("--step", type=int, default=None, help="checkpoint step (default: latest)")
    parser.add_argument("--num_images", type=int, default=None, help="analysis.num_images")
    parser.add_argument("--times", default=None, help="analysis.times, e.g. 0.1,0.3,0.5")
    parser.add_argument(
        "--blocks", default=None, help="analysis.blocks, e.g. mid_block2,up0_upsample"
    )
    parser.add_argument("--conditions", default=None, help="analysis.conditions, e.g. cond")
    parser.add_argument("--k", default=None, help="analysis.k, e.g. classes")
    return parser.parse_args(argv)


def overrides_of(args: argparse.Namespace) -> dict:
    found = {}
    if args.num_images is not None:
        found["num_images"] = args.num_images
    if args.times:
        found["times"] = tuple(float(t) for t in args.times.split(","))
    for name in ("blocks", "conditions", "k"):
        if getattr(args, name):
            found[name] = tuple(getattr(args, name).split(","))
    return found


def main(argv=None) -> None:
    args = parse(argv)
    runtime.quiet_third_party()
    runtime.add_xla_flags(base.get_config())  # the runs' CPU flags; GPU and TPU ignore them
    os.makedirs(args.out, exist_ok=True)
    results = analyze_runs(args.runs, args.out, args.step, overrides_of(args))
    print(write(results, args.out))


if __name__ == "__main__":
    main()
