"""Per-device memory of the compiled train step, train state replicated against FSDP-sharded.

Compiles (ahead of time, nothing runs) the train step of the Cityscapes base U-Net
(``experiments/cityscapes.py``; ``--dim 128`` is the reference's 697 M parameters, a smaller
``--dim`` scales it down; learned text encoder at T5-large's width instead of T5) on
``--devices`` fake CPU devices, global batch = one example per device, and prints XLA's
``memory_analysis()`` per device for each variant: by default ``train.shard_state`` False and
True; ``--variant NAME:FIELD=VALUE;...`` (as in ``benchmarks/demo_curve.py``) for others, e.g.
the single-device peak with remat and bfloat16 Adam moments:

    python -m benchmarks.state_memory [--dim 128] [--devices 8]
    python -m benchmarks.state_memory --devices 1 --variant float32 \
        --variant "remat:model.remat=blocks" \
        --variant "remat, bf16 moments:model.remat=blocks;optim.moment_dtype=bfloat16"

"peak" is the step's peak per device: the state and batch it is given (donated, so the new
state reuses their buffers), the outputs that do not reuse them, and XLA's scratch (activations,
gradients). With two ``train_step.step_programs`` (the CPU's default) the figures are those of the
program, gradient or update, whose peak is larger (``train_step.SplitTrainStep.memory_analysis``): the
gradients are the first's output, not scratch.
"""

import argparse
import os
import sys
import time


def _config(dim: int, devices: int, overrides: dict):
    from experiments import cityscapes

    config = cityscapes.get_config()
    config.model.dim = dim
    config.text.encoder, config.text.embed_dim, config.text.depth = "learned", 1024, 1
    config.text.max_length = 256
    config.train.global_batch_size = devices
    config.model.dtype = "float32"
    config.update_from_flattened_dict(overrides)
    return config


def analyse(dim: int, devices: int, overrides: dict) -> dict:
    import jax
    import numpy as np

    from gcd_jax import sharding
    from gcd_jax.cli import runtime
    from gcd_jax.diffusion import joint
    from gcd_jax.models.networks import build_networks
    from gcd_jax.training import train_state, train_step

    config = _config(dim, devices, overrides)
    runtime.add_xla_flags(config)  # the first variant's, for the whole process (as run.py)
    mesh = sharding.make_mesh()
    nets, process = build_networks(config), joint.Process.from_config(config)
    optimizer = train_state.make_optimizer(config.optim)
    state = train_step.state_target(config, nets, optimizer, mesh)
    b, (h, w), n = devices, config.data.image_size, config.text.max_length
    data = sharding.batch_sharded(mesh)
    batch = {
        "image": jax.ShapeDtypeStruct((b, h, w, 3), np.float32, sharding=data),
        "label": jax.ShapeDtypeStruct((b, h, w), np.int32, sharding=data),
        "tokens": jax.ShapeDtypeStruct((b, n), np.int32, sharding=data),
        "mask": jax.ShapeDtypeStruct((b, n), np.bool_, sharding=data),
        "has_text": jax.ShapeDtypeStruct((b,), np.bool_, sharding=data),
    }
    step = train_step.compile_train_step(config, nets, process, optimizer, mesh)
    memory = step.lower(state, batch, {}).compile().memory_analysis()
    return {
        "arguments": memory.argument_size_in_bytes,
        "outputs": memory.output_size_in_bytes,
        "aliased": memory.alias_size_in_bytes,
        "temporaries": memory.temp_size_in_bytes,
        "peak": train_step.peak_bytes(memory),
        "state": sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(state)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--devices", type=int, default=8)
    parser.add_argument("--variant", action="append", help="NAME[:FIELD=VALUE;...]")
    args = parser.parse_args()
    flags = os.environ.get("XLA_FLAGS", "")
    os.environ["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={args.devices}"
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from benchmarks.demo_curve import parse_variant

    variants = args.variant or [
        "replicated:train.shard_state=False",
        "FSDP (train.shard_state):train.shard_state=True",
    ]
    gib = lambda b: b / 2**30  # noqa: E731
    print(f"Cityscapes base U-Net, dim {args.dim}, {args.devices} device(s), one example each")
    print(
        "| variant | train state GiB | arguments GiB | outputs (not aliased) GiB | "
        "temporaries GiB | peak GiB | vs first | compile s |"
    )
    print("|---|---|---|---|---|---|---|---|")
    first = None
    for text in variants:
        name, overrides = parse_variant(text)
        t0 = time.perf_counter()
        r = analyse(args.dim, args.devices, overrides)
        seconds = time.perf_counter() - t0
        outputs = r["outputs"] - r["aliased"]
        total = r["peak"]
        first = first or total
        print(
            f"| {name} | {gib(r['state']):.2f} | {gib(r['arguments']):.3f} | {gib(outputs):.3f} | "
            f"{gib(r['temporaries']):.3f} | {gib(total):.3f} | {total / first:.2f} | "
            f"{seconds:.0f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
