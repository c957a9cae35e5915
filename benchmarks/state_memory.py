"""Per-device memory of the compiled train step, train state replicated against FSDP-sharded.

Compiles (ahead of time, nothing runs) the train step of the Cityscapes base U-Net
(``experiments/cityscapes.py``; ``--dim 128`` is the reference's 697 M parameters, a smaller
``--dim`` scales it down; learned text encoder at T5-large's width instead of T5) on
``--devices`` fake CPU devices, global batch = one example per device, and prints XLA's
``memory_analysis()`` per device for ``train.shard_state`` False and True.

    python -m benchmarks.state_memory [--dim 128] [--devices 8]
"""

import argparse
import os
import sys


def _config(dim: int, devices: int, shard: bool):
    from experiments import cityscapes

    config = cityscapes.get_config()
    config.model.dim = dim
    config.text.encoder, config.text.embed_dim, config.text.depth = "learned", 1024, 1
    config.text.max_length = 256
    config.train.global_batch_size = devices
    config.train.shard_state = shard
    return config


def analyse(dim: int, devices: int, shard: bool) -> dict:
    import jax
    import numpy as np

    from gcd_jax import joint, sharding, train, train_state
    from gcd_jax.networks import build_networks

    config = _config(dim, devices, shard)
    mesh = sharding.make_mesh()
    nets, process = build_networks(config), joint.Process.from_config(config)
    optimizer = train_state.make_optimizer(config.optim)
    state = train.state_target(config, nets, optimizer, mesh)
    b, (h, w), n = devices, config.data.image_size, config.text.max_length
    data = sharding.batch_sharded(mesh)
    batch = {
        "image": jax.ShapeDtypeStruct((b, h, w, 3), np.float32, sharding=data),
        "label": jax.ShapeDtypeStruct((b, h, w), np.int32, sharding=data),
        "tokens": jax.ShapeDtypeStruct((b, n), np.int32, sharding=data),
        "mask": jax.ShapeDtypeStruct((b, n), np.bool_, sharding=data),
        "has_text": jax.ShapeDtypeStruct((b,), np.bool_, sharding=data),
    }
    step = train.compile_train_step(config, nets, process, optimizer, mesh)
    memory = step.lower(state, batch, {}).compile().memory_analysis()
    return {
        "arguments": memory.argument_size_in_bytes,
        "outputs": memory.output_size_in_bytes,
        "aliased": memory.alias_size_in_bytes,
        "temporaries": memory.temp_size_in_bytes,
        "state": sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(state)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--devices", type=int, default=8)
    args = parser.parse_args()
    flags = os.environ.get("XLA_FLAGS", "")
    os.environ["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={args.devices}"
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    rows = {shard: analyse(args.dim, args.devices, shard) for shard in (False, True)}
    gib = lambda b: b / 2**30  # noqa: E731
    print(
        f"Cityscapes base U-Net, dim {args.dim}, {args.devices} devices, one example each: "
        f"train state {gib(rows[False]['state']):.2f} GiB"
    )
    print(
        "| state | arguments GiB | temporaries GiB | arguments + temporaries GiB | vs replicated |"
    )
    print("|---|---|---|---|---|")
    base = rows[False]["arguments"] + rows[False]["temporaries"]
    for shard, title in ((False, "replicated"), (True, "FSDP (train.shard_state)")):
        r = rows[shard]
        total = r["arguments"] + r["temporaries"]
        print(
            f"| {title} | {gib(r['arguments']):.3f} | {gib(r['temporaries']):.3f} | "
            f"{gib(total):.3f} | {total / base:.2f} |"
        )


if __name__ == "__main__":
    main()
