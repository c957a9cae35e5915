"""One prepared check of an accelerator (GPU or TPU VM), in one process, for a short window.

    python -m benchmarks.device_check [--out DIR] [--skip PART,...] [--profile] [--peak FLOPS]
    python -m benchmarks.device_check --tiny --out /tmp/dc     # every part, tiny, on CPU (minutes)

Parts (each skippable by its name; a failing part records its error and the others still run):

  env        device kind and count, JAX/jaxlib/CUDA versions, the device's stated dense bf16 peak
  train      the Cityscapes base train step (experiments/cityscapes.py, 697 M parameters, 128x256),
             accelerator defaults (one step program, model.dtype='auto' = bf16): s/step, images/s,
             MFU (XLA's cost-analysis FLOPs / (s/step x peak)), XLA's planned and the device's
             peak memory, at per-device batch 8 and the largest that fits; the same with
             model.remat='blocks'; the SR step (experiments/cityscapes_sr.py, 256x512) at batch 8
  sampling   guided sampling of the base model (100 steps, guidance 3), pairs/s at batch 8 and 32;
             seconds per SR sampling step
  precision  one gradient step in bf16 and in float32: loss and gradient agree within bf16
  pipeline   the input pipeline on this host's CPUs, from generated full-size (1024x2048)
             Cityscapes files, base and SR shapes, against what the train step consumes
  demo       the first 200 steps of experiments/demo.py (the fresh-machine check) and its loss

``DIR`` (default /tmp/device_check) gets ``device_check.json`` and ``device_check.md`` (rewritten
after every part: a timeout loses only the part it cut), the persistent compile cache
(``DIR/xla_cache``, or ``$JAX_COMPILATION_CACHE_DIR``: a second run loads instead of compiling),
and with ``--profile`` a ``jax.profiler`` trace of three base steps with its top kernels. The
batch search: batch 8, then 16, then the largest 8 x 2^k whose XLA plan, fitted linearly to those
two, stays under 92 % of the device memory; halved after an out-of-memory error. Method and
results: docs/accelerators.md.
"""

import argparse
import dataclasses
import datetime
import gzip
import importlib.metadata
import json
import math
import os
import subprocess
import sys
import traceback

from benchmarks import device_parts
from gcd_jax.cli import runtime

PARTS = ("env", "train", "sampling", "precision", "pipeline", "demo")
# Dense bfloat16 peak FLOP/s per device as the vendors state it, by a fragment of JAX's
# device_kind ('NVIDIA H100 80GB HBM3' is the SXM H100); the first fragment found wins.
PEAK_BF16 = (
    ("H100 PCIe", 756e12),
    ("H100 NVL", 835e12),
    ("H100", 989.4e12),
    ("H200", 989.4e12),
    ("A100", 312e12),
    ("TPU v4", 275e12),
    ("TPU v5 lite", 197e12),
    ("TPU v5e", 197e12),
    ("TPU v5p", 459e12),
    ("TPU v5", 459e12),
    ("TPU v6 lite", 918e12),
    ("TPU v6e", 918e12),
)
VERSIONED = (
    "jax",
    "jaxlib",
    "jax-cuda12-plugin",
    "jax-cuda12-pjrt",
    "jax-cuda13-plugin",
    "jax-cuda13-pjrt",
    "libtpu",
    "nvidia-cudnn-cu12",
    "nvidia-cuda-runtime-cu12",
    "flax",
    "optax",
)


def peak_flops(device_kind: str) -> float | None:
    """The stated dense bf16 peak of ``device_kind`` (``PEAK_BF16``); None if unknown."""
    return next((peak for name, peak in PEAK_BF16 if name in device_kind), None)


def environment(peak_override: float | None) -> list[dict]:
    import jax
    import jax.extend.backend

    device = jax.devices()[0]
    versions = {}
    for name in VERSIONED:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    peak = peak_override or peak_flops(device.device_kind)
    return [
        {
            "platform": device.platform,
            "device kind": device.device_kind,
            "devices": jax.device_count(),
            "processes": jax.process_count(),
            "host cores": os.cpu_count(),
            "platform version": jax.extend.backend.get_backend().platform_version.strip(),
            "packages": " ".join(f"{k}={v}" for k, v in versions.items()),
            "peak bf16 TFLOP/s": None if peak is None else peak / 1e12,
            "peak from": "--peak" if peak_override else ("table" if peak else "unknown"),
            "device memory GiB": _gib(device_parts.bytes_limit()),
        }
    ]


def _gib(nbytes: int | None) -> float | None:
    return None if nbytes is None else nbytes / 2**30


def top_kernels(trace_dir: str, top: int = 12) -> list[dict]:
    """The ``top`` event names by total duration in the perfetto trace under ``trace_dir``:
    device events (processes named '/device:...') where there are any, else all."""
    paths = [
        os.path.join(d, f)
        for d, _, files in os.walk(trace_dir)
        for f in files
        if f == "perfetto_trace.json.gz"
    ]
    if not paths:
        return []
    with gzip.open(paths[0], "rt") as f:
        events = json.load(f)
    events = events["traceEvents"] if isinstance(events, dict) else events
    names = {
        e["pid"]: e["args"]["name"]
        for e in events
        if e.get("ph") == "M" and e.get("name") == "process_name"
    }
    devices = {pid for pid, name in names.items() if "device:" in name.lower()}
    totals: dict[str, float] = {}
    for e in events:
        if e.get("ph") == "X" and (not devices or e.get("pid") in devices):
            totals[e["name"]] = totals.get(e["name"], 0.0) + float(e.get("dur", 0.0))
    whole = sum(totals.values()) or 1.0
    ranked = sorted(totals.items(), key=lambda kv: -kv[1])[:top]
    return [{"kernel": k[:80], "ms (3 steps)": v / 1e3, "share": v / whole} for k, v in ranked]


def _run_parts(args, sizes, report, save) -> None:
    import jax

    from gcd_jax import sharding

    mesh = sharding.make_mesh()
    peak = args.peak or peak_flops(jax.devices()[0].device_kind)
    consumes: dict[str, float] = {}

    def train():
        rows = []
        profile_dir = os.path.join(args.out, "profile") if args.profile else None
        base = device_parts.cityscapes(False, args.tiny)
        rows += device_parts.train_rows("base", base, mesh, sizes, peak, True, profile_dir)
        # What the input pipeline must feed: the fastest base row (usually the largest batch).
        consumes["base"] = max(r["images/s"] for r in rows) / jax.process_count()
        if profile_dir:
            report["profile"] = {"trace": profile_dir, "top": top_kernels(profile_dir)}
        remat = device_parts.cityscapes(False, args.tiny, remat="blocks")
        rows += device_parts.train_rows("base, remat=blocks", remat, mesh, sizes, peak)
        sr = device_parts.cityscapes(True, args.tiny)
        rows += device_parts.train_rows("SR", sr, mesh, sizes, peak, search=False)
        consumes["SR"] = rows[-1]["images/s"] / jax.process_count()
        return rows

    run = {
        "env": lambda: environment(args.peak),
        "train": train,
        "sampling": lambda: device_parts.sampling_rows(args.tiny, mesh, sizes),
        "precision": lambda: device_parts.precision_rows(args.tiny, mesh, sizes),
        "pipeline": lambda: device_parts.pipeline_rows(args.tiny, sizes, consumes),
        "demo": lambda: device_parts.demo_rows(args.tiny, sizes, args.out),
    }
    for name in PARTS:
        if name in args.skip:
            report["parts"][name] = {"status": "skipped"}
            save()
            continue
        print(f"device_check: {name} ...", flush=True)
        t0 = datetime.datetime.now()
        try:
            entry = {"status": "ok", "rows": run[name]()}
        except Exception as error:  # one part's failure must not lose the others
            entry = {"status": "error", "error": f"{type(error).__name__}: {error}"[:2000]}
            entry["traceback"] = traceback.format_exc()[-4000:]
        entry["seconds"] = (datetime.datetime.now() - t0).total_seconds()
        report["parts"][name] = entry
        save()
        print(f"device_check: {name} {entry['status']} in {entry['seconds']:.0f} s", flush=True)


def _cell(value) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        if math.isnan(value):
            return "–"
        if value != 0 and (abs(value) >= 1e5 or abs(value) < 1e-3):
            return f"{value:.3g}"
        return f"{value:.4g}"
    return " ".join(str(value).split()).replace("|", "/")  # one line, no column breaks


def markdown(report: dict) -> str:
    """The report as Markdown: a header line, then one table per part."""
    lines = [
        f"# Device check, {report['started']}",
        "",
        f"Commit {report['commit']}; command `{report['command']}`.",
    ]
    for name, entry in report["parts"].items():
        lines += ["", f"## {name}: {entry['status']}" + _seconds(entry), ""]
        if entry["status"] == "error":
            lines.append(f"`{entry['error'].splitlines()[0][:300]}`")
        rows = entry.get("rows") or []
        lines += _table(rows)
    if report.get("profile"):
        lines += ["", f"## profile: top kernels ({report['profile']['trace']})", ""]
        lines += _table(report["profile"]["top"])
    return "\n".join(lines) + "\n"


def _seconds(entry: dict) -> str:
    return f" ({entry['seconds']:.0f} s)" if "seconds" in entry else ""


def _table(rows: list[dict]) -> list[str]:
    if not rows:
        return []
    keys = list(dict.fromkeys(k for r in rows for k in r))
    out = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    out += ["| " + " | ".join(_cell(r.get(k)) for k in keys) + " |" for r in rows]
    return out


def _commit() -> str:
    try:
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        done = subprocess.run(
            ["git", "-C", root, "rev-parse", "--short", "HEAD"], capture_output=True, text=True
        )
        return done.stdout.strip() or "unknown"
    except OSError:
        return "unknown"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="/tmp/device_check")
    parser.add_argument("--tiny", action="store_true", help="every part at a tiny size (CPU)")
    parser.add_argument("--skip", default="", help=f"comma-separated parts of {','.join(PARTS)}")
    parser.add_argument("--profile", action="store_true", help="trace 3 base train steps")
    parser.add_argument("--peak", type=float, default=0.0, help="peak FLOP/s (default: table)")
    parser.add_argument("--max_batch", type=int, default=-1, help="cap of the batch search")
    args = parser.parse_args(argv)
    args.skip = {s for s in args.skip.split(",") if s}
    unknown = args.skip - set(PARTS)
    if unknown:
        parser.error(f"unknown parts {sorted(unknown)}; parts: {', '.join(PARTS)}")
    sizes = device_parts.TINY if args.tiny else device_parts.FULL
    if args.max_batch >= 0:
        sizes = dataclasses.replace(sizes, max_batch=args.max_batch)
    os.makedirs(args.out, exist_ok=True)
    # As run.py: quiet libraries, the config's XLA flags before the first device use, the
    # checkpoint hooks, and the persistent compile cache, here in DIR/xla_cache.
    config = device_parts.cityscapes(False, args.tiny)
    config.train.compile_cache = "workdir"
    runtime.install(config, args.out)
    report = {
        "started": datetime.datetime.now().isoformat(timespec="seconds"),
        "commit": _commit(),
        "command": " ".join(["python -m benchmarks.device_check", *(argv or sys.argv[1:])]),
        "sizes": dataclasses.asdict(sizes),
        "parts": {},
    }

    def save():
        with open(os.path.join(args.out, "device_check.json"), "w") as f:
            json.dump(report, f, indent=1, default=str)
        with open(os.path.join(args.out, "device_check.md"), "w") as f:
            f.write(markdown(report))

    _run_parts(args, sizes, report, save)
    print(markdown(report))
    return report


if __name__ == "__main__":
    main()
