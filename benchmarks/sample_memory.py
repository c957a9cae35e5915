"""Peak host memory of loading a checkpoint to sample: the whole train state (what ``--mode sample``
restored before) against the EMA parameters alone (``generation.load``, an Orbax partial restore).

    python -m benchmarks.sample_memory [--dim 128] [--out /tmp/gcd_sample_memory]

Builds the Cityscapes base U-Net (``experiments/cityscapes.py``; ``--dim 128`` is the reference's
697 M parameters, a smaller ``--dim`` scales it down), with the learned text encoder at T5-large's
width instead of T5 (no weights to download: the U-Net is the same), writes one checkpoint of a fresh
train state, then measures each restore in its own process (peak resident set size, ``ru_maxrss``).
"""

import argparse
import os
import subprocess
import sys

STAGES = ("save", "full", "ema")


def _config(dim: int):
    from experiments import cityscapes

    config = cityscapes.get_config()
    config.model.dim = dim
    config.text.encoder, config.text.embed_dim, config.text.depth = "learned", 1024, 1
    config.text.max_length = 256
    return config


def stage(name: str, dim: int, workdir: str) -> None:
    """One measurement, in this process: prints 'bytes=... peak=...'."""
    import resource

    import jax

    from gcd_jax.cli import runtime
    from gcd_jax.inference.model import load
    from gcd_jax.models.networks import build_networks
    from gcd_jax.training import checkpoint, train_state

    runtime.install_checkpoint_hooks()  # the Orbax settings run.py installs
    config = _config(dim)
    nets, optimizer = build_networks(config), train_state.make_optimizer(config.optim)
    nbytes = lambda tree: sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(tree))  # noqa: E731
    if name == "save":
        state = jax.jit(lambda k: train_state.init_state(k, nets, optimizer))(jax.random.key(0))
        ckpt = checkpoint.Checkpointer(workdir, config)
        ckpt.save(1, state, 0)
        ckpt.close()
        result = nbytes(state)
    elif name == "full":
        ckpt = checkpoint.Checkpointer(workdir, config)
        state, _ = ckpt.restore(train_state.abstract_state(nets, optimizer), 1)
        ckpt.close()
        result = nbytes(state)
    else:
        result = nbytes(load(config, workdir, 1).params)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(f"bytes={result} peak={peak}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--out", default="/tmp/gcd_sample_memory")
    args = parser.parse_args()
    workdir = os.path.join(args.out, f"dim{args.dim}")
    results = {}
    for name in STAGES:
        code = (
            "import sys; from benchmarks import sample_memory as m; "
            f"m.stage({name!r}, {args.dim}, {workdir!r})"
        )
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, env=dict(os.environ)
        )
        if out.returncode:
            raise SystemExit(f"{name} failed:\n{out.stderr[-3000:]}")
        line = [x for x in out.stdout.splitlines() if x.startswith("bytes=")][-1]
        results[name] = {k: int(v) for k, v in (kv.split("=") for kv in line.split())}
    gib = lambda b: b / 2**30  # noqa: E731
    state = results["save"]["bytes"]
    print(f"Cityscapes base U-Net, dim {args.dim}: train state {gib(state):.2f} GiB")
    print("| restore | bytes restored GiB | peak RSS GiB | peak / train state |")
    print("|---|---|---|---|")
    for name, title in (("full", "whole train state (before)"), ("ema", "EMA params only (after)")):
        r = results[name]
        print(
            f"| {title} | {gib(r['bytes']):.2f} | {gib(r['peak']):.2f} | {r['peak'] / state:.0%} |"
        )


if __name__ == "__main__":
    main()
