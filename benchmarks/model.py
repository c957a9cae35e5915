"""Size and cost of the reference U-Nets: parameters and forward FLOPs per example.

Parameters are counted with ``jax.eval_shape`` and FLOPs come from XLA's cost analysis of the
jitted forward at batch 1; every input is abstract, so nothing large is allocated. Text is T5-large
width (1024) at the full 256 tokens.

    python -m benchmarks.model                    # all three models (compiles take minutes)
    python -m benchmarks.model cityscapes_sr      # a subset
"""

import argparse
import importlib
import time

import jax

from gcd_jax.models import build_unet, input_specs

MODELS = {
    "cityscapes": "Cityscapes base",
    "celeba": "CelebA base",
    "cityscapes_sr": "Cityscapes SR",
}
TEXT_LEN, TEXT_DIM = 256, 1024


def measure(name: str) -> dict:
    config = importlib.import_module(f"experiments.{name}").get_config()
    image_size = tuple(config.data.image_size)
    model = build_unet(config)
    specs = input_specs(model, 1, image_size, TEXT_LEN, TEXT_DIM)
    variables = jax.eval_shape(lambda k, s: model.init(k, **s), jax.random.key(0), specs)
    params = sum(x.size for x in jax.tree.leaves(variables))
    start = time.perf_counter()
    compiled = jax.jit(lambda v, s: model.apply(v, **s)).lower(variables, specs).compile()
    compile_s = time.perf_counter() - start
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    return dict(
        model=MODELS[name],
        size="x".join(map(str, image_size)),
        params=params,
        gflops=cost["flops"] / 1e9,
        compile_s=compile_s,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("names", nargs="*", help=f"some of {list(MODELS)}; default: all")
    args = parser.parse_args()
    if unknown := set(args.names) - set(MODELS):
        parser.error(f"unknown models {sorted(unknown)}")
    print(f"{'model':<16} {'H x W':>8} {'params':>13} {'fwd GFLOP/ex':>13} {'compile s':>10}")
    for name in args.names or MODELS:
        r = measure(name)
        print(
            f"{r['model']:<16} {r['size']:>8} {r['params']:>13,} {r['gflops']:>13.1f} "
            f"{r['compile_s']:>10.1f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
