"""Seconds per guided denoising step of the sampler (guidance 3: cond + null in one forward).

Two ways of running ``N`` ancestral steps of the real U-Net, both timed after compilation:
the compiled loop (``sampling.sample_pairs``: one ``lax.scan`` program) and a Python loop of a
jitted ``sampling.reverse_step``; and the guided U-Net forward alone (batch doubled: cond + null),
the floor of a step. Per-step figures are medians over interleaved repeats; "first" columns
include compilation. Parameters are random (shapes from ``jax.eval_shape``, values drawn in NumPy:
no compiled init); the text is 256 tokens of T5-large width (1024). GFLOP per guided forward come
from XLA's cost analysis; "floor" is that divided by the stated peak of this CPU
(``--peak_gflops``, as in ``benchmarks/train_step.py``): no float32 implementation can take a step
in less.

Configs (``benchmarks/configs.py``): ``tiny`` (docs/design.md §4, 32×32, batch 8) and ``cityscapes`` (the
reference base U-Net, 128×256, batch 1; its compiles take minutes). ``--reference DIR`` (a checkout
of github.com/pmh9960/GCDP) also times the authors' guided step on the same config in its own
process (``benchmarks/reference_torch.py``) and prints the ratio gcd_jax / PyTorch.

    python -m benchmarks.sampling                  # both
    python -m benchmarks.sampling tiny --steps 10 --repeats 5 [--peak_gflops 156.8]
    python -m benchmarks.sampling tiny --reference /tmp/GCDP
"""

import argparse
import functools
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import configs
from gcd_jax.diffusion import sampling
from gcd_jax.models import build_unet, input_specs
from gcd_jax.models.networks import Apply

GUIDANCE = 3.0
NAMES = ("tiny", "cityscapes")  # benchmarks/configs.py's tiny and base


def random_variables(model, specs, seed=0):
    shapes = jax.eval_shape(lambda k: model.init(k, **specs), jax.random.key(0))
    rng = np.random.default_rng(seed)

    def draw(leaf):
        scale = 1 / np.sqrt(np.prod(leaf.shape[:-1])) if len(leaf.shape) > 1 else 0.02
        return jnp.asarray(rng.standard_normal(leaf.shape, np.float32) * scale)

    return jax.tree.map(draw, shapes)


def timed(fn):
    start = time.perf_counter()
    jax.block_until_ready(fn())
    return time.perf_counter() - start


def measure(name, steps, repeats):
    config = configs.get(name)
    batch = config.train.global_batch_size
    config.sample.num_steps = steps
    size = tuple(config.data.image_size)
    model = build_unet(config)
    text_len = configs.TEXT_LEN
    specs = input_specs(model, batch, size, text_len, configs.TEXT_DIM)
    specs = {k: None if v is None else jnp.zeros(v.shape, v.dtype) for k, v in specs.items()}
    variables = random_variables(model, specs)
    params = sum(x.size for x in jax.tree.leaves(variables))
    apply, unet_params = Apply(model), {"unet": variables["params"]}
    scale = jnp.float32(GUIDANCE)
    rng = np.random.default_rng(1)
    cond = {
        "text": jnp.asarray(rng.standard_normal((batch, text_len, configs.TEXT_DIM), np.float32)),
        "text_mask": jnp.ones((batch, text_len), bool),
    }
    sampler = sampling.Sampler.from_config(config)
    shape, key = (batch, *size), jax.random.key(0)

    loop = lambda: sampling.sample_pairs(sampler, apply, unet_params, cond, key, shape, GUIDANCE)
    # Parameters are arguments of every compiled program here, as in the sampler.
    step = jax.jit(
        lambda p, x, y, t, s, k: sampling.reverse_step(
            sampler, functools.partial(sampling.guided, apply, p, scale), x, y, t, s, k, cond
        )
    )
    state, times = sampling.initial_state(sampler, key, shape), sampling.time_grid(steps)
    forward = (
        jax.jit(
            lambda p, x, y, t: sampling.guided(apply, p, scale, x, y, jnp.full((batch,), t), cond)
        )
        .lower(unet_params, *state, times[0])
        .compile()
    )
    keys = jax.random.split(key, steps)

    def python_loop():
        x, y = state
        for n in range(steps):
            x, y = step(unet_params, x, y, times[n], times[n + 1], keys[n])
        return x, y

    def forwards():
        return [forward(unet_params, *state, times[n]) for n in range(steps)]

    flops = forward.cost_analysis()["flops"]
    first = {name: timed(fn) for name, fn in (("loop", loop), ("step", python_loop))}
    timed(forwards)
    # Interleaved rounds: the CPU is shared, so its load drifts during the run.
    rounds = [[timed(fn) / steps for fn in (loop, python_loop, forwards)] for _ in range(repeats)]
    per_step_loop, per_step_python, per_forward = (
        statistics.median(c) for c in zip(*rounds, strict=True)
    )
    return dict(
        name=name,
        forward=per_forward,
        flops=flops,
        shape="x".join(map(str, shape)),
        params=params,
        compile_loop=first["loop"],
        compile_step=first["step"],
        loop=per_step_loop,
        python=per_step_python,
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("names", nargs="*", default=list(NAMES), choices=list(NAMES))
    parser.add_argument("--steps", type=int, default=0, help="N; 0 = 10 (tiny), 2 (cityscapes)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--peak_gflops", type=float, default=156.8, help="float32 peak of this CPU")
    parser.add_argument("--reference", default="", help="checkout of github.com/pmh9960/GCDP")
    args = parser.parse_args()
    print(f"devices: {jax.devices()}")
    head = (
        "| config | B x H x W | params | first call loop s | first Python loop s | s/step compiled loop "
        "| s/step Python loop | s/guided forward alone | GFLOP/step | floor s/step |"
    )
    if args.reference:
        head += " PyTorch s/step | compiled loop / PyTorch |"
    print(head)
    print("|---" * head.count(" |") + "|")
    for name in args.names:
        steps = args.steps or {"tiny": 10, "cityscapes": 2}[name]
        r = measure(name, steps, args.repeats)
        line = (
            f"| {r['name']} | {r['shape']} | {r['params']:,} | {r['compile_loop']:.1f} "
            f"| {r['compile_step']:.1f} | {r['loop']:.4f} | {r['python']:.4f} | {r['forward']:.4f} "
            f"| {r['flops'] / 1e9:.1f} | {r['flops'] / (args.peak_gflops * 1e9):.4f} |"
        )
        if args.reference:  # after gcd_jax's run, in its own process: no threads shared
            from benchmarks import reference_torch

            ref = reference_torch.measure(args.reference, "sample", name, steps, args.repeats)
            line += f" {ref['step_s']:.4f} | {r['loop'] / ref['step_s']:.2f} |"
        print(line, flush=True)


if __name__ == "__main__":
    main()
