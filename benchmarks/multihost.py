"""Two JAX processes on localhost (4 fake CPU devices each, gloo collectives), as on a two-host pod:
a few train steps of the tiny demo model and one batched sampling call, then checks.

    python -m benchmarks.multihost [--steps 3] [--out /tmp/gcd_multihost]

Each host reads its own shard of every global batch: the (epoch, example) ids the two hosts read
must be disjoint and together equal the single-host run's. Both hosts must end with the same
parameters and the same (gathered) samples, and the parameters must equal those of the same run on
one process with 8 devices. Prints one row per run and the checks; exits non-zero if one fails.
"""

import argparse
import hashlib
import json
import os
import pathlib
import socket
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]


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
    import jax

    if count > 1:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(f"localhost:{port}", num_processes=count, process_id=rank)
    import numpy as np

    from gcd_jax.cli import runtime, train
    from gcd_jax.data import pipeline
    from gcd_jax.inference import generation
    from gcd_jax.inference.model import from_state
    from gcd_jax.models.networks import build_networks

    runtime.install_checkpoint_hooks()  # the Orbax settings run.py installs
    config = _config(os.path.join(out, "tfds"), steps)
    state = train.train_and_evaluate(config, os.path.join(out, f"workdir_{count}"))
    data = pipeline.create_train_iterator(config, lambda c: (None, None), start_step=0)
    read = [data.example_ids(step) for step in range(steps)]
    data.close()
    params = [np.asarray(x) for x in jax.tree.leaves(state.params)]
    digest = hashlib.sha256(b"".join(p.tobytes() for p in params)).hexdigest()
    np.savez(os.path.join(out, f"params_{count}_{rank}.npz"), *params)
    model = from_state(config, build_networks(config), state.ema_params, {}, steps)
    images, layouts = generation.generate(model, ["a red circle"] * 5, jax.random.key(0))
    samples = hashlib.sha256(images.tobytes() + layouts.tobytes()).hexdigest()
    record = {
        "rank": rank,
        "processes": jax.process_count(),
        "devices": jax.device_count(),
        "local_devices": jax.local_device_count(),
        "read": read,
        "params": digest,
        "samples": samples,
        "sample_shape": list(images.shape),
    }
    with open(os.path.join(out, f"host_{count}_{rank}.json"), "w") as f:
        json.dump(record, f)


def _launch(count: int, devices_per_host: int, out: str, steps: int) -> list[dict]:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        port = s.getsockname()[1]
    env = dict(
        os.environ,
        JAX_PLATFORMS="cpu",
        XLA_FLAGS=f"--xla_force_host_platform_device_count={devices_per_host}",
    )
    code = "import sys; from benchmarks import multihost; multihost.worker(*map(int, sys.argv[1:4]), sys.argv[4], int(sys.argv[5]))"
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


def _close(out: str) -> bool:
    import numpy as np

    one, two = (np.load(os.path.join(out, f"params_{c}_0.npz")) for c in (1, 2))
    diff = max(np.abs(one[k] - two[k]).max() for k in one.files)
    print(f"max |params 1 process - params 2 hosts| = {diff:.2e}")
    return bool(diff <= 1e-5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--out", default="/tmp/gcd_multihost")
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    single = _launch(1, 8, args.out, args.steps)[0]
    hosts = _launch(2, 4, args.out, args.steps)
    print(
        "| run | processes | devices | local devices | examples read | params sha256 | samples sha256 |"
    )
    print("|---|---|---|---|---|---|---|")
    for name, r in [("1 process", single)] + [(f"host {h['rank']}", h) for h in hosts]:
        n = sum(len(step) for step in r["read"])
        print(
            f"| {name} | {r['processes']} | {r['devices']} | {r['local_devices']} | {n} | "
            f"{r['params'][:12]} | {r['samples'][:12]} |"
        )
    checks = {
        "hosts read disjoint shards": all(
            not set(map(tuple, a)) & set(map(tuple, b))
            for a, b in zip(hosts[0]["read"], hosts[1]["read"], strict=True)
        ),
        "together the single run's batches": all(
            sorted(map(tuple, a + b)) == sorted(map(tuple, s))
            for a, b, s in zip(hosts[0]["read"], hosts[1]["read"], single["read"], strict=True)
        ),
        "both hosts: same parameters": hosts[0]["params"] == hosts[1]["params"],
        "both hosts: same gathered samples": hosts[0]["samples"] == hosts[1]["samples"],
        "2 hosts x 4 devices == 1 host x 8 devices (parameters, 1e-5)": _close(args.out),
    }
    for name, ok in checks.items():
        print(f"- {name}: {'yes' if ok else 'NO'}")
    if not all(checks.values()):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
