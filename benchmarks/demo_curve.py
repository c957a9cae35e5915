"""Semantic recall, precision and alignment of demo models against training steps, per variant.

A variant is the demo config (`experiments/demo.py`) plus overrides. Each variant trains in its
own subprocess (`--jobs` at a time) with `train.train_and_evaluate`, keeping a checkpoint every
`--eval_every` steps, and each kept checkpoint is scored by `--mode evaluate`'s code
(`evaluate.evaluate_main`) at every `--guidance` scale (`W` on both heads, or `W/WL`: the layout
logits at `WL`). The table (`{out}/curve.md`, also printed) grows as results arrive; everything is
resumable (finished evaluations are cached in `{out}/results/`, a half-trained variant resumes
from its checkpoint).

    python -m benchmarks.demo_curve --out /tmp/curve --steps 3000 --eval_every 1000 \\
        --variant demo --variant lr2e-3:optim.learning_rate=2e-3 \\
        --variant xattn:model.attn_levels=(False,True,True);model.cross_attn_levels=(False,True,True)

`--variant NAME[:FIELD=VALUE;FIELD=VALUE...]`: values are Python literals (else strings).
`--no_tensorflow`: for machines without TensorFlow/TFDS (an accelerator image): the demo scenes
are drawn in memory (`config.data.source='memory'`), TensorBoard events are skipped.
"""

import argparse
import ast
import json
import math
import os
import shutil
import subprocess
import sys
import time

import ml_collections

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from experiments import demo  # noqa: E402

# (report key, column title)
COLUMNS = (
    ("recall_image", "recall (image)"),
    ("precision_image", "precision (image)"),
    ("recall_layout", "recall (layout)"),
    ("alignment_miou", "alignment mIoU"),
)


def parse_variant(text: str) -> tuple[str, dict]:
    """'name:a.b=1;c.d=(1,2)' -> ('name', {'a.b': 1, 'c.d': (1, 2)})."""
    name, _, rest = text.partition(":")
    overrides = {}
    for item in filter(None, rest.split(";")):
        field, _, value = item.partition("=")
        try:
            overrides[field.strip()] = ast.literal_eval(value.strip())
        except (ValueError, SyntaxError):
            overrides[field.strip()] = value.strip()
    return name, overrides


def variant_config(args, overrides: dict) -> ml_collections.ConfigDict:
    config = demo.get_config(args.demo)
    config.lock()  # an unknown field is a KeyError, as run.py's locked --config makes it
    config.update_from_flattened_dict(overrides)
    config.data.data_dir = os.path.join(args.out, "tfds")
    config.data.source = "memory" if args.no_tensorflow else "tfds"
    config.data.num_workers = 2
    config.train.num_steps = args.steps
    # Checkpoints at every evaluated step, and every --ckpt_every steps so that a killed run
    # resumes close to where it stopped; all kept.
    config.train.ckpt_every = math.gcd(args.eval_every, args.ckpt_every or args.eval_every)
    config.train.keep_checkpoints = args.steps // config.train.ckpt_every + 1
    config.train.log_every = min(50, args.eval_every)
    config.train.sample_every = 0
    config.eval.num_samples = args.num_samples
    config.sample.batch_size = args.num_samples
    return config


def eval_steps(args) -> list[int]:
    return list(range(args.eval_every, args.steps + 1, args.eval_every))


def parse_guidance(text: str) -> list[str]:
    """'3,8,8/1' -> ['3', '8', '8/1']: ``W`` guides both heads, ``W/WL`` the image with ``W`` and
    the layout logits with ``WL`` (``sample.label_guidance_scale``)."""
    out = []
    for item in filter(None, str(text).split(",")):
        out.append("/".join(f"{float(w):g}" for w in item.split("/")))
        if out[-1].count("/") > 1:
            raise ValueError(f"--guidance: W or W/WL, got {item!r}")
    return out


def set_guidance(config: ml_collections.ConfigDict, label: str) -> None:
    image, _, layout = label.partition("/")
    config.sample.guidance_scale = float(image)
    config.sample.label_guidance_scale = float(layout) if layout else None


def guidance_label(record: dict) -> str:
    """A result's guidance as ``parse_guidance`` writes it."""
    layout = record.get("label_guidance")
    return f"{record['guidance']:g}" + ("" if layout is None else f"/{layout:g}")


def result_path(args, name: str, step: int, guidance: str) -> str:
    tag = guidance.replace("/", "_l")  # '8' -> g8 (as before per-head guidance), '8/1' -> g8_l1
    return os.path.join(args.out, "results", name, f"step{step}_g{tag}.json")


def worker(args, name: str, overrides: dict) -> None:
    """Trains one variant (or resumes it) and evaluates every kept checkpoint."""
    import jax
    from absl import logging

    from gcd_jax.cli import evaluate, runtime, train
    from gcd_jax.training import checkpoint

    runtime.install_checkpoint_hooks()  # the Orbax settings run.py installs
    logging.set_verbosity(logging.INFO)
    config = variant_config(args, overrides)
    workdir = os.path.join(args.out, "runs", name)
    t0 = time.perf_counter()
    train.train_and_evaluate(config, workdir)
    train_seconds = time.perf_counter() - t0
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        rates = [json.loads(line).get("steps_per_sec") for line in f]
    rates = [r for r in rates[1:] if r]  # the first interval holds the compile
    ckpt = checkpoint.Checkpointer(workdir, config, create=False)
    kept = set(ckpt.steps())
    ckpt.close()
    for step in eval_steps(args):
        if step not in kept:  # e.g. a run seeded with a later checkpoint of another
            logging.warning(
                "demo_curve: %s has no checkpoint at step %d; not evaluated", name, step
            )
            continue
        for guidance in args.guidance:
            path = result_path(args, name, step, guidance)
            if os.path.exists(path):
                continue
            c = config.copy_and_resolve_references()
            set_guidance(c, guidance)
            t1 = time.perf_counter()
            outdir = evaluate.evaluate_main(c, workdir, seed=0, step=step)
            with open(os.path.join(outdir, "report.json")) as f:
                report = json.load(f)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            png = os.path.join(outdir, "examples.png")
            if os.path.exists(png):
                shutil.copy(png, path[: -len(".json")] + ".png")
            record = {
                "variant": name,
                "overrides": {k: repr(v) for k, v in overrides.items()},
                "step": step,
                "guidance": c.sample.guidance_scale,
                "label_guidance": c.sample.label_guidance_scale,
                "metrics": report["metrics"],
                "steps_per_sec": sorted(rates)[len(rates) // 2] if rates else None,
                "train_seconds_this_call": train_seconds,
                "eval_seconds": time.perf_counter() - t1,
                "platform": jax.devices()[0].platform,
            }
            with open(path, "w") as f:
                json.dump(record, f, indent=2)
            print(
                f"[demo_curve] {name} step {step} g {guidance}: {json.dumps(report['metrics'])}",
                flush=True,
            )


def load_results(args) -> list[dict]:
    results = []
    root = os.path.join(args.out, "results")
    for dirpath, _, files in os.walk(root):
        for name in files:
            if name.endswith(".json"):
                with open(os.path.join(dirpath, name)) as f:
                    results.append(json.load(f))
    return results


def table(results: list[dict], order: list[str]) -> str:
    lines = [
        "| variant | step | guidance | " + " | ".join(t for _, t in COLUMNS) + " | steps/s |",
        "|---" * (len(COLUMNS) + 4) + "|",
    ]
    rank = {name: i for i, name in enumerate(order)}
    results = sorted(
        results,
        key=lambda r: (
            rank.get(r["variant"], len(rank)),
            r["step"],
            r["guidance"],
            -1.0 if r.get("label_guidance") is None else r["label_guidance"],
        ),
    )
    for r in results:
        cells = [r["metrics"].get(k) for k, _ in COLUMNS]
        cells = ["—" if v is None else f"{v:.3f}" for v in cells]
        rate = r.get("steps_per_sec")
        lines.append(
            f"| {r['variant']} | {r['step']} | {guidance_label(r)} | "
            + " | ".join(cells)
            + f" | {'—' if rate is None else f'{rate:.2f}'} |"
        )
    return "\n".join(lines) + "\n"


def write_table(args, order: list[str], specs: list[str]) -> str:
    markdown = table(load_results(args), order)
    overrides = "\n".join(f"- `{v}`" for v in specs)
    text = (
        f"Demo variants, {args.num_samples} evaluated samples per cell (seed 0), "
        f"checkpoints every {args.eval_every} steps.\n\nVariants:\n{overrides}\n\n{markdown}"
    )
    with open(os.path.join(args.out, "curve.md"), "w") as f:
        f.write(text)
    return text


def done(args, name: str) -> bool:
    return all(
        os.path.exists(result_path(args, name, s, g))
        for s in eval_steps(args)
        for g in args.guidance
    )


def add_arguments(parser: argparse.ArgumentParser, steps: int, eval_every: int) -> None:
    """The options every variant run shares (also used by benchmarks/correspondence.py)."""
    parser.add_argument("--out", default="/tmp/demo_curve")
    parser.add_argument("--steps", type=int, default=steps)
    parser.add_argument("--eval_every", type=int, default=eval_every)
    parser.add_argument(
        "--ckpt_every", type=int, default=0, help="Checkpoint interval (0: --eval_every)."
    )
    parser.add_argument(
        "--guidance",
        default="3",
        help="Comma-separated guidance scales: W (both heads) or W/WL (image W, layout WL).",
    )
    parser.add_argument("--num_samples", type=int, default=64)
    parser.add_argument("--jobs", type=int, default=1, help="Variants trained at once.")
    parser.add_argument("--no_tensorflow", action="store_true")
    parser.add_argument(
        "--demo", default="", help="Demo config variant (experiments/demo.py:VARIANT), e.g. shapes."
    )


def run(args, specs: list[str]) -> list[str]:
    """Trains and evaluates every variant spec not done yet, `args.jobs` subprocesses at a time,
    rewriting `{out}/curve.md` as each ends; returns the names of failed variants."""
    os.makedirs(args.out, exist_ok=True)
    order = [parse_variant(spec)[0] for spec in specs]
    todo = [spec for spec in specs if not done(args, parse_variant(spec)[0])]
    if todo and not args.no_tensorflow:
        # Build the demo data once, before workers would race to build it.
        from gcd_jax.data import sources

        sources.ensure_built(variant_config(args, {}))
    env = dict(os.environ, XLA_PYTHON_CLIENT_PREALLOCATE="false")
    env.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(args.out, "xla_cache"))
    common = [
        f"--out={args.out}",
        f"--steps={args.steps}",
        f"--eval_every={args.eval_every}",
        f"--ckpt_every={args.ckpt_every}",
        f"--guidance={','.join(args.guidance)}",
        f"--num_samples={args.num_samples}",
        f"--demo={args.demo}",
    ] + (["--no_tensorflow"] if args.no_tensorflow else [])
    logs = os.path.join(args.out, "logs")
    os.makedirs(logs, exist_ok=True)
    running: dict[str, subprocess.Popen] = {}
    failed = []
    while todo or running:
        while todo and len(running) < max(args.jobs, 1):
            spec = todo.pop(0)
            name = parse_variant(spec)[0]
            command = [sys.executable, "-m", "benchmarks.demo_curve", "--worker", name]
            command += [f"--variant={spec}", *common]
            with open(os.path.join(logs, f"{name}.log"), "a") as log:
                running[name] = subprocess.Popen(
                    command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
                )
        time.sleep(2)
        for name, proc in list(running.items()):
            if proc.poll() is not None:
                del running[name]
                if proc.returncode:
                    failed.append(name)
                    print(f"[demo_curve] {name} failed ({proc.returncode}); see logs/{name}.log")
                write_table(args, order, specs)
    return failed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser, steps=3000, eval_every=1000)
    parser.add_argument("--variant", action="append", default=[], help="NAME[:FIELD=VALUE;...]")
    parser.add_argument("--table_only", action="store_true", help="Print the table, run nothing.")
    parser.add_argument("--worker", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.guidance = parse_guidance(args.guidance)
    specs = args.variant or ["demo"]
    if args.worker:
        worker(args, args.worker, dict(parse_variant(s) for s in specs)[args.worker])
        return
    failed = [] if args.table_only else run(args, specs)
    print(write_table(args, [parse_variant(s)[0] for s in specs], specs))
    if failed:
        sys.exit(f"failed variants: {failed}")


if __name__ == "__main__":
    main()
