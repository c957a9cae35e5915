"""The paper's claim on the demo scenes: does generating the layout with the image (GCDP) raise
text–image correspondence, with few or all captions?

Trains the joint model and the image-only ablation (``model.joint=False``) on the demo config with
the same steps and seeds, at each caption fraction, through `benchmarks/demo_curve.py` (one
subprocess per run, resumable, a checkpoint scored every `--eval_every` steps by `--mode
evaluate`'s code), and writes the mean ± std over seeds at every evaluated step:

    python -m benchmarks.correspondence --out /tmp/correspondence --steps 3000 --eval_every 1000

`--demo shapes` runs the demo variant whose classes are shapes sharing colours
(``experiments/demo.py:shapes``, docs/claim.md). `--guidance 8,16,8/32` scores each checkpoint at several guidances (`W/WL`: the layout logits at
`WL`, `sample.label_guidance_scale`); `--models joint` runs (or scores) the joint model only.

Writes ``{out}/correspondence.md`` (also printed); each run's evaluation reports and example grids
(best and worst samples, images above their layouts or, for image-only, above the segmentation of
the image) are in ``{out}/results/{model}_c{fraction}_s{seed}/``.
"""

import argparse
import math
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import demo_curve  # noqa: E402

MODELS = {"joint": True, "image_only": False}  # run name -> model.joint
# (report key, column title); fid_colour_pixels is the weight-free proxy of evaluate.FEATURES.
COLUMNS = (
    ("recall_image", "recall (image) ↑"),
    ("precision_image", "precision (image) ↑"),
    ("recall_layout", "recall (layout) ↑"),
    ("alignment_miou", "image–layout mIoU ↑"),
    ("fid_colour_pixels", "FID-CP ↓"),
)


def specs(seeds: list[int], fractions: list[float], models=tuple(MODELS)) -> list[str]:
    """demo_curve variant specs, seed-major (a partial run still compares every cell)."""
    out = []
    for seed in seeds:
        for fraction in fractions:
            for name in models:
                joint = MODELS[name]
                out.append(
                    f"{name}_c{fraction:g}_s{seed}:model.joint={joint};"
                    f"data.caption_fraction={fraction};data.seed={seed};train.seed={seed}"
                )
    return out


def stat(values: list) -> tuple[float, float | None] | None:
    """(mean, sample std; None for one value) of the finite values; None when there are none."""
    values = [v for v in values if v is not None and math.isfinite(v)]
    if not values:
        return None
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else None


def stat_text(cell: tuple[float, float | None] | None) -> str:
    """``stat``'s result as a table cell: '—', '0.123' or '0.123 ± 0.045'."""
    if cell is None:
        return "—"
    return f"{cell[0]:.3f}" if cell[1] is None else f"{cell[0]:.3f} ± {cell[1]:.3f}"


def mean_std(values: list) -> str:
    return stat_text(stat(values))


def table(results: list[dict], fractions: list[float], args) -> str:
    lines = [
        f"Demo scenes (experiments/demo.py{':' + args.demo if args.demo else ''}), "
        f"{args.num_samples} evaluated samples per run, mean ± "
        "std over seeds; guidance W on both heads, or W/WL (image W, layout logits WL). FID-CP: "
        "Fréchet distance of 4x4 RGB thumbnails + 4x4x4 RGB histograms, a weight-free fidelity "
        "proxy, not Inception FID.",
        "",
        "| steps | captions | model | guidance | seeds | "
        + " | ".join(t for _, t in COLUMNS)
        + " |",
        "|---" * (len(COLUMNS) + 5) + "|",
    ]
    cells = [
        (step, fraction, name, guidance)
        for step in sorted({r["step"] for r in results})
        for fraction in fractions
        for name in MODELS
        for guidance in args.guidance
    ]
    for step, fraction, name, guidance in cells:
        prefix = f"{name}_c{fraction:g}_s"
        rows = [
            r
            for r in results
            if r["step"] == step
            and r["variant"].startswith(prefix)
            and demo_curve.guidance_label(r) == guidance
        ]
        if not rows:
            continue
        values = [mean_std([r["metrics"].get(k) for r in rows]) for k, _ in COLUMNS]
        seeds = ",".join(sorted(r["variant"][len(prefix) :] for r in rows))
        lines.append(
            f"| {step} | {fraction:g} | {name} | {guidance} | {seeds} | "
            + " | ".join(values)
            + " |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    demo_curve.add_arguments(parser, steps=3000, eval_every=1000)
    parser.add_argument("--seeds", default="0,1,2", help="Comma-separated seeds (data + model).")
    parser.add_argument("--caption_fractions", default="0.25,1.0")
    parser.add_argument(
        "--models", default=",".join(MODELS), help="Comma-separated, of: " + ", ".join(MODELS)
    )
    parser.set_defaults(out="/tmp/correspondence")
    args = parser.parse_args()
    args.guidance = demo_curve.parse_guidance(args.guidance)
    seeds = [int(s) for s in args.seeds.split(",")]
    fractions = [float(f) for f in args.caption_fractions.split(",")]
    models = args.models.split(",")
    if unknown := set(models) - set(MODELS):
        parser.error(f"--models: unknown {sorted(unknown)}; known: {', '.join(MODELS)}")
    failed = demo_curve.run(args, specs(seeds, fractions, models))
    markdown = table(demo_curve.load_results(args), fractions, args)
    with open(os.path.join(args.out, "correspondence.md"), "w") as f:
        f.write(markdown)
    print(markdown)
    if failed:
        sys.exit(f"failed runs: {failed}")


if __name__ == "__main__":
    main()
