"""Seconds per compiled training step, images/s, peak memory and model FLOPs utilisation.

The configurations of ``benchmarks/configs.py`` (tiny: docs/design.md §4's, 32×32, batch 8; base: the
reference Cityscapes U-Net, 128×256, batch 1), each measured in a fresh subprocess (so that peak
memory is its own), in float32. Text: embeddings ``[B, 256, 1024]`` (frozen T5-large's shape)
computed beforehand, passed in the step's ``frozen`` argument (``configs.precomputed_text``), all
256 positions real, so the step is the U-Net's, as the authors' step timed beside it
(``--reference``) is given its text embeddings and all-ones masks.
MFU = XLA cost-analysis FLOPs / median step time / the stated peak of this CPU.

    python -m benchmarks.train_step [--configs tiny,base] [--steps 5] [--peak_gflops 156.8]
    python -m benchmarks.train_step --configs tiny --reference /tmp/GCDP
    python -m benchmarks.train_step --configs base --steps 2 --variant float32 \
        --variant "bf16 moments:optim.moment_dtype=bfloat16" --variant "remat:model.remat=blocks"

``--variant NAME:FIELD=VALUE;...`` (as in ``benchmarks/demo_curve.py``) measures each config
with those overrides, each in its own subprocess; peak GiB is the process's peak resident memory
(also as it stood once the step was compiled: on CPU XLA's compiler shares the process), "XLA
plan" the step's peak from ``memory_analysis()`` (arguments + outputs that do not reuse them +
temporaries; with two ``train_step.step_programs``, of the larger of its two programs): what an
accelerator holds.
``--cached`` gives every run a fresh persistent compilation cache and starts it a second time
(compile only): the second start's compile is what a restart after a preemption pays.
``--reference DIR`` (a checkout of github.com/pmh9960/GCDP) also times the authors' train step on
each config (``benchmarks/reference_torch.py``, its own subprocess, run between gcd_jax's
variants) and prints the ratios gcd_jax / PyTorch of seconds per step and of peak memory.

The default peak, 156.8 GFLOP/s, is 2 cores × 2.45 GHz × 32 float32 FLOP/cycle (two 256-bit FMA
units per core, AVX2); pass your machine's.
"""

import argparse
import json
import os
import pathlib
import resource
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def timed_steps(compiled, state, batch, frozen, steps: int) -> tuple:
    """``(state, metrics, seconds of each step)``: one warm-up step, then ``steps`` timed ones,
    each waited for."""
    import jax

    state, metrics = compiled(state, batch, frozen)
    jax.block_until_ready(metrics)
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        state, metrics = compiled(state, batch, frozen)
        jax.block_until_ready(metrics)
        times.append(time.perf_counter() - t0)
    return state, metrics, times


def measure(name: str, steps: int, variant: str = "default") -> dict:
    import jax
    import numpy as np

    from benchmarks import configs
    from benchmarks.demo_curve import parse_variant
    from gcd_jax import sharding
    from gcd_jax.cli import runtime
    from gcd_jax.diffusion import joint
    from gcd_jax.models.networks import build_networks
    from gcd_jax.training import train_state, train_step

    config = configs.get(name)
    # A learned encoder's fields give the embeddings' width and length; no encoder runs in the
    # step (configs.precomputed_text).
    config.text.encoder, config.text.depth = "learned", 0
    config.text.embed_dim, config.text.max_length = configs.TEXT_DIM, configs.TEXT_LEN

    variant_name, overrides = parse_variant(variant)
    config.update_from_flattened_dict(overrides)
    runtime.add_xla_flags(config)  # as run.py does (each variant is its own process)
    mesh = sharding.make_mesh()
    b, (h, w) = config.train.global_batch_size, config.data.image_size
    nets, frozen = configs.precomputed_text(build_networks(config), jax.random.key(1), b)
    process = joint.Process.from_config(config)
    optimizer = train_state.make_optimizer(config.optim)
    state = jax.jit(lambda k: train_state.init_state(k, nets, optimizer))(jax.random.key(0))
    rng = np.random.default_rng(0)
    # Every position a real token, as the authors' step is given all-ones text masks.
    tokens = np.zeros((b, configs.TEXT_LEN), np.int32)
    mask = np.ones((b, configs.TEXT_LEN), bool)
    batch = sharding.shard_batch(
        dict(
            image=rng.uniform(-1, 1, (b, h, w, 3)).astype(np.float32),
            label=rng.integers(0, config.data.num_classes, (b, h, w)).astype(np.int32),
            tokens=tokens,
            mask=mask,
            has_text=np.ones(b, bool),
        ),
        mesh,
    )
    t0 = time.perf_counter()
    step = train_step.compile_train_step(config, nets, process, optimizer, mesh)
    compiled = step.lower(state, batch, frozen).compile()
    compile_s = time.perf_counter() - t0
    compile_peak_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    memory = compiled.memory_analysis()  # XLA's plan: the device memory the step needs
    plan_gib = train_step.peak_bytes(memory) / 2**30
    flops = compiled.cost_analysis()["flops"]
    if steps == 0:  # compile only (the --cached second start)
        return {"compile_s": compile_s}
    state, metrics, times = timed_steps(compiled, state, batch, frozen, steps)
    return {
        "config": name,
        "variant": variant_name,
        "params": int(sum(x.size for x in jax.tree.leaves(state.params["unet"]))),
        "batch": b,
        "size": f"{h}x{w}",
        "compile_s": compile_s,
        "step_s": statistics.median(times),
        "flops": flops,
        "peak_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        "compile_peak_gib": compile_peak_gib,
        "plan_gib": plan_gib,
    }


def child(name: str, steps: int, variant: str, env: dict) -> dict:
    cmd = [sys.executable, "-m", "benchmarks.train_step", "--child", name]
    cmd += ["--steps", str(steps), "--variant", variant]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env)
    if done.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", default="tiny,base")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--peak_gflops", type=float, default=156.8)
    parser.add_argument("--variant", action="append", help="NAME[:FIELD=VALUE;...]")
    parser.add_argument("--reference", default="", help="checkout of github.com/pmh9960/GCDP")
    parser.add_argument(
        "--cached", action="store_true", help="Also time a second start's compile (cache hit)."
    )
    parser.add_argument("--child", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    variants = args.variant or ["default"]
    if args.child:
        print(json.dumps(measure(args.child, args.steps, variants[0])))
        return
    rows, reference = [], {}
    for name in args.configs.split(","):
        for i, variant in enumerate(variants):
            with tempfile.TemporaryDirectory() as cache:
                env = dict(os.environ)
                if args.cached:  # a fresh persistent cache: the first start misses, the second hits
                    env["JAX_COMPILATION_CACHE_DIR"] = cache
                rows.append(child(name, args.steps, variant, env))
                if args.cached:
                    rows[-1]["cached_compile_s"] = child(name, 0, variant, env)["compile_s"]
            print(json.dumps(rows[-1]), flush=True)  # each row as it comes: base rows take minutes
            if args.reference and i == 0:  # between gcd_jax's runs: drift shows in the variants
                from benchmarks import reference_torch

                reference[name] = reference_torch.measure(args.reference, "train", name, args.steps)
                print(json.dumps(reference[name]), flush=True)
    print(
        f"steps timed: {args.steps} (median, after one warm-up step); peak {args.peak_gflops} GFLOP/s"
    )
    head = (
        "| config | variant | U-Net params | batch | size | compile s | s/step | images/s | peak GiB "
        "| peak GiB by the end of compile | XLA plan GiB | GFLOP/step | MFU |"
    )
    if args.cached:
        head += " compile s, second start (cached) |"
    if reference:
        head += " PyTorch s/step | PyTorch peak GiB | s/step gcd_jax / PyTorch | peak gcd_jax / PyTorch |"
    print(head)
    print("|---" * head.count(" |") + "|")
    for r in rows:
        mfu = r["flops"] / r["step_s"] / (args.peak_gflops * 1e9)
        line = (
            f"| {r['config']} | {r['variant']} | {r['params']:,} | {r['batch']} | {r['size']} "
            f"| {r['compile_s']:.0f} | {r['step_s']:.3f} | {r['batch'] / r['step_s']:.2f} "
            f"| {r['peak_gib']:.2f} | {r['compile_peak_gib']:.2f} | {r['plan_gib']:.2f} "
            f"| {r['flops'] / 1e9:.1f} | {mfu:.1%} |"
        )
        if args.cached:
            line += f" {r['cached_compile_s']:.1f} |"
        if reference:
            ref = reference[r["config"]]
            if ref["params"] != r["params"]:
                print(f"warning: {r['config']}: PyTorch has {ref['params']:,} parameters")
            line += (
                f" {ref['step_s']:.3f} | {ref['peak_gib']:.2f} | {r['step_s'] / ref['step_s']:.2f} "
                f"| {r['peak_gib'] / ref['peak_gib']:.2f} |"
            )
        print(line)


if __name__ == "__main__":
    main()
