"""Seconds per compiled training step, images/s, peak memory and model FLOPs utilisation.

Two configurations, each measured in a fresh subprocess (so that peak memory is its own):
  tiny  DESIGN §4's side-by-side config: dim 32, mults (1, 2, 4), 1 block/level, attention at
        level 3, 2 heads of 32, K = 8, 32×32, batch 8;
  base  the reference Cityscapes base U-Net (experiments/cityscapes.py), 128×256, batch 1.
Both run in float32. Text: 256 tokens of width 1024 from a learned encoder of depth 0 (embedding +
layer norm), standing in for precomputed frozen-T5 embeddings, so the step is the U-Net's.
MFU = XLA cost-analysis FLOPs / median step time / the stated peak of this CPU.

    python benchmarks/train_step.py [--configs tiny,base] [--steps 5] [--peak_gflops 156.8]
    python -m benchmarks.train_step --configs base --steps 2 --variant float32 \
        --variant "bf16 moments:optim.moment_dtype=bfloat16" --variant "remat:model.remat=blocks"

``--variant NAME:FIELD=VALUE;...`` (as in ``benchmarks/demo_curve.py``) measures each config
with those overrides, each in its own subprocess; peak GiB is the process's peak resident memory.

The default peak, 156.8 GFLOP/s, is 2 cores × 2.45 GHz × 32 float32 FLOP/cycle (two 256-bit FMA
units per core, AVX2); pass your machine's.
"""

import argparse
import json
import pathlib
import resource
import statistics
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def tiny_config():
    from experiments import base

    c = base.get_config()
    c.data.image_size, c.data.num_classes = (32, 32), 8
    m = c.model
    m.dim, m.dim_mults, m.num_res_blocks = 32, (1, 2, 4), (1, 1, 1)
    m.attn_levels = m.cross_attn_levels = (False, False, True)
    m.attn_heads, m.attn_dim_head = 2, 32
    c.train.global_batch_size = 8
    return c


def base_config():
    from experiments import cityscapes

    c = cityscapes.get_config()
    c.train.global_batch_size = 1
    return c


CONFIGS = {"tiny": tiny_config, "base": base_config}


def measure(name: str, steps: int, variant: str = "default") -> dict:
    import jax
    import numpy as np

    from gcd_jax import joint, sharding, train, train_state
    from gcd_jax.networks import build_networks

    config = CONFIGS[name]()
    config.text.encoder, config.text.embed_dim, config.text.depth = "learned", 1024, 0
    config.text.max_length = 256
    config.model.dtype = "float32"
    from benchmarks.demo_curve import parse_variant

    variant_name, overrides = parse_variant(variant)
    config.update_from_flattened_dict(overrides)
    mesh = sharding.make_mesh()
    nets, process = build_networks(config), joint.Process.from_config(config)
    optimizer = train_state.make_optimizer(config.optim)
    state = jax.jit(lambda k: train_state.init_state(k, nets, optimizer))(jax.random.key(0))
    b, (h, w) = config.train.global_batch_size, config.data.image_size
    rng = np.random.default_rng(0)
    tokens, mask = nets.text.tokenize(["An image of an urban street view with Roads."] * b)
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
    step = train.compile_train_step(config, nets, process, optimizer, mesh)
    compiled = step.lower(state, batch, {}).compile()
    compile_s = time.perf_counter() - t0
    flops = compiled.cost_analysis()["flops"]
    state, metrics = compiled(state, batch, {})  # warm-up
    jax.block_until_ready(metrics)
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        state, metrics = compiled(state, batch, {})
        jax.block_until_ready(metrics)
        times.append(time.perf_counter() - t0)
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
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", default="tiny,base")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--peak_gflops", type=float, default=156.8)
    parser.add_argument("--variant", action="append", help="NAME[:FIELD=VALUE;...]")
    parser.add_argument("--child", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    variants = args.variant or ["default"]
    if args.child:
        print(json.dumps(measure(args.child, args.steps, variants[0])))
        return
    rows = []
    for name in args.configs.split(","):
        for variant in variants:
            cmd = [sys.executable, __file__, "--child", name, "--steps", str(args.steps)]
            cmd += ["--variant", variant]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
            rows.append(json.loads(out.strip().splitlines()[-1]))
    print(
        f"steps timed: {args.steps} (median, after one warm-up step); peak {args.peak_gflops} GFLOP/s"
    )
    print(
        "| config | variant | U-Net params | batch | size | compile s | s/step | images/s | peak GiB "
        "| GFLOP/step | MFU |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        mfu = r["flops"] / r["step_s"] / (args.peak_gflops * 1e9)
        print(
            f"| {r['config']} | {r['variant']} | {r['params']:,} | {r['batch']} | {r['size']} | {r['compile_s']:.0f} "
            f"| {r['step_s']:.3f} | {r['batch'] / r['step_s']:.2f} | {r['peak_gib']:.2f} "
            f"| {r['flops'] / 1e9:.1f} | {mfu:.1%} |"
        )


if __name__ == "__main__":
    main()
