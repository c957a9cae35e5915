"""Two JAX processes on localhost (4 fake CPU devices each, gloo collectives), as on a two-host pod:
a few train steps of the tests' small demo model and one batched sampling call, then checks.

    python -m benchmarks.multihost [--steps 3] [--out /tmp/gcd_multihost]

First the same run on one process with 8 fake devices (it also generates the demo scenes, which the
two hosts then share), then the two hosts. Each host reads its own shard of every global batch: the
(epoch, example) ids the two hosts read must be disjoint and together equal the single process's.
Both hosts must end with the same parameters and the same (gathered) samples, and the parameters
must equal those of the single process within ``PARAM_TOL`` (the gradient all-reduce adds in
another order over gloo than within one process). Prints one row per run and the checks; exits
non-zero if one fails. Each run is a few minutes of CPU (compiles dominate).
"""

import argparse
import hashlib
import json
import os
import pathlib
import resource
import shutil
import socket
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
DEVICES = 8  # over all hosts
PARAM_TOL = 1e-5  # max |1 process - 2 hosts| over every parameter after --steps Adam steps
PROMPTS = ["A large red square on the left.", "A small green circle.", "", "a blue triangle"] * 2


def _config(data_dir: str, steps: int):
    """The tests' tiny demo run (``experiments/demo.py:tiny``: 64 scenes, a dim-16 U-Net, global
    batch 8) for ``steps`` steps, one checkpoint at the end."""
    from experiments import demo

    config = demo.get_config("tiny")
    config.data.data_dir = data_dir
    config.train.update(num_steps=steps, ckpt_every=steps)
    return config


def worker(rank: int, count: int, port: int, out: str, steps: int) -> None:
    """One host: train, sample, and write what it read and what it ended with."""
    from gcd_jax.cli import runtime

    runtime.quiet_third_party()
    import jax

    if count > 1:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(f"localhost:{port}", num_processes=count, process_id=rank)
    runtime.install_checkpoint_hooks()  # as run.py does, after distributed.initialize()
    import numpy as np

    from gcd_jax.cli import train
    from gcd_jax.data import pipeline
    from gcd_jax.inference import generation
    from gcd_jax.inference.model import from_state
    from gcd_jax.models.networks import build_networks

    config = _config(os.path.join(out, "tfds"), steps)
    t0 = time.perf_counter()
    state = train.train_and_evaluate(config, os.path.join(out, f"workdir_{count}"))
    train_s = time.perf_counter() - t0
    data = pipeline.create_train_iterator(config, lambda captions: (None, None))
    read = [data.example_ids(step) for step in range(steps)]
    data.close()
    params = [np.asarray(x) for x in jax.tree.leaves(state.params)]  # replicated: addressable
    digest = hashlib.sha256(b"".join(p.tobytes() for p in params)).hexdigest()
    np.savez(os.path.join(out, f"params_{count}_{rank}.npz"), *params)
    model = from_state(config, build_networks(config), state.ema_params, {}, steps)
    t0 = time.perf_counter()
    images, layouts = generation.generate(model, PROMPTS[:5], jax.random.key(0))
    sample_s = time.perf_counter() - t0
    np.savez(os.path.join(out, f"samples_{count}_{rank}.npz"), images=images, layouts=layouts)
    record = {
        "rank": rank,
        "processes": jax.process_count(),
        "devices": jax.device_count(),
        "local_devices": jax.local_device_count(),
        "read": read,
        "params": digest,
        "samples": hashlib.sha256(images.tobytes() + layouts.tobytes()).hexdigest(),
        "sample_shape": list(images.shape),
        "train_s": train_s,
        "sample_s": sample_s,
    }
    with open(os.path.join(out, f"host_{count}_{rank}.json"), "w") as f:
        json.dump(record, f)


def _launch(count: int, out: str, steps: int) -> list[dict]:
    """Runs ``count`` worker processes of ``DEVICES / count`` fake CPU devices each."""
    from experiments import base  # no JAX import

    with socket.socket() as s:
        s.bind(("localhost", 0))
        port = s.getsockname()[1]
    flags = f"--xla_force_host_platform_device_count={DEVICES // count}"
    env = dict(
        os.environ,
        JAX_PLATFORMS="cpu",
        # The runs' own flags, as run.py adds them (runtime.add_xla_flags).
        XLA_FLAGS=f"{flags} {base.get_config().train.xla_flags}",
    )
    shutil.rmtree(os.path.join(out, f"workdir_{count}"), ignore_errors=True)  # no resuming
    code = (
        "import sys; from benchmarks import multihost; "
        "multihost.worker(*map(int, sys.argv[1:4]), sys.argv[4], int(sys.argv[5]))"
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(r), str(count), str(port), out, str(steps)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for r in range(count)
    ]
    for rank, proc in enumerate(procs):
        log, _ = proc.communicate(timeout=3600)
        if proc.returncode:
            print(f"host {rank} of {count} failed:\n{log[-4000:]}")
            raise SystemExit(1)
    return [json.load(open(os.path.join(out, f"host_{count}_{r}.json"))) for r in range(count)]


def _max_diff(out: str, what: str, keys=None) -> float:
    import numpy as np

    one, two = (np.load(os.path.join(out, f"{what}_{c}_0.npz")) for c in (1, 2))
    keys = one.files if keys is None else keys
    return float(max(np.abs(one[k].astype(float) - two[k].astype(float)).max() for k in keys))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--out", default="/tmp/gcd_multihost")
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    t0 = time.perf_counter()
    single = _launch(1, args.out, args.steps)[0]  # first: it builds the demo scenes
    hosts = _launch(2, args.out, args.steps)
    wall = time.perf_counter() - t0
    print(
        "| run | processes | devices | local devices | examples read | train s | sample s "
        "| params sha256 | samples sha256 |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for name, r in [("1 process", single)] + [(f"host {h['rank']}", h) for h in hosts]:
        n = sum(len(step) for step in r["read"])
        print(
            f"| {name} | {r['processes']} | {r['devices']} | {r['local_devices']} | {n} "
            f"| {r['train_s']:.0f} | {r['sample_s']:.0f} | {r['params'][:12]} "
            f"| {r['samples'][:12]} |"
        )
    param_diff = _max_diff(args.out, "params")
    image_diff = _max_diff(args.out, "samples", ["images"])
    layout_diff = _max_diff(args.out, "samples", ["layouts"])
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    print(
        f"\n{args.steps} steps; both runs (compiles included): wall {wall:.0f} s, CPU "
        f"{children.ru_utime + children.ru_stime:.0f} s (user + system, all processes)"
    )
    print(f"max |params, 1 process - 2 hosts| = {param_diff:.2e}")
    print(
        f"samples, 1 process vs 2 hosts (information): max |image difference| {image_diff:.2e}, "
        f"layout pixels differing: {'none' if layout_diff == 0 else 'some'}"
    )
    checks = {
        "hosts read disjoint shards": all(
            not set(map(tuple, a)) & set(map(tuple, b))
            for a, b in zip(hosts[0]["read"], hosts[1]["read"], strict=True)
        ),
        "together the single process's batches": all(
            sorted(map(tuple, a + b)) == sorted(map(tuple, s))
            for a, b, s in zip(hosts[0]["read"], hosts[1]["read"], single["read"], strict=True)
        ),
        "both hosts: same parameters (bit for bit)": hosts[0]["params"] == hosts[1]["params"],
        "both hosts: same gathered samples (bit for bit, all 5)": (
            hosts[0]["samples"] == hosts[1]["samples"]
            and hosts[0]["sample_shape"] == hosts[1]["sample_shape"] == [5, 32, 32, 3]
        ),
        f"2 hosts x 4 devices == 1 process x 8 devices (parameters, {PARAM_TOL:g})": (
            param_diff <= PARAM_TOL
        ),
    }
    for name, ok in checks.items():
        print(f"- {name}: {'yes' if ok else 'NO'}")
    if not all(checks.values()):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
