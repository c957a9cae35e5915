"""Throughput of the categorical reverse step: posterior + Gumbel-max sample.

Times the jitted ``q_posterior(log_softmax(logits), onehot(y_t)) -> sample`` on ``[B, H, W, K]``
float32 (default: the reference Cityscapes batch, ``[32, 128, 256, 20]``) and compares the achieved
bandwidth with this machine's copy bandwidth, measured in the same run (the kernel is memory-bound:
it reads the logits and the labels and writes labels).

    python benchmarks/kernels.py [--shape 32,128,256,20] [--repeats 5]
"""

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from gcd_jax.diffusion import categorical, schedules


def reverse_step(key, logits, y_t, logsnr_t, logsnr_s):
    """One categorical reverse step of the sampler: ``[B, H, W, K]`` logits -> ``[B, H, W]`` labels."""
    num_classes = logits.shape[-1]
    log_post = categorical.q_posterior(
        jax.nn.log_softmax(logits),
        categorical.index_to_log_onehot(y_t, num_classes),
        logsnr_t,
        logsnr_s,
    )
    return categorical.sample(key, log_post)


def median_seconds(fn, repeats):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def copy_bandwidth(nbytes, repeats):
    """GB/s of a NumPy array copy (read + write counted), the machine's memory-bound reference."""
    src = np.ones(nbytes // 4, np.float32)
    dst = np.empty_like(src)
    seconds = median_seconds(lambda: np.copyto(dst, src), repeats)
    return 2 * nbytes / seconds / 1e9


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="32,128,256,20")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    b, h, w, k = (int(v) for v in args.shape.split(","))
    key = jax.random.key(0)
    logits = jax.random.normal(key, (b, h, w, k), jnp.float32)
    y_t = jax.random.randint(key, (b, h, w), 0, k)
    linear = schedules.get_schedule("linear")
    logsnr_t = jnp.full((b,), linear(0.5))
    logsnr_s = jnp.full((b,), linear(0.49))
    step = jax.jit(reverse_step)
    jax.block_until_ready(step(key, logits, y_t, logsnr_t, logsnr_s))  # compile
    seconds = median_seconds(lambda: step(key, logits, y_t, logsnr_t, logsnr_s), args.repeats)
    moved = logits.nbytes + y_t.nbytes + b * h * w * 4  # read logits and y_t, write labels
    reference = copy_bandwidth(logits.nbytes, args.repeats)
    print(f"devices: {jax.devices()}")
    print("| kernel | shape | median s | bytes moved | GB/s | copy GB/s | fraction of copy |")
    print("|---|---|---|---|---|---|---|")
    gbs = moved / seconds / 1e9
    print(
        f"| posterior + Gumbel sample | {b}x{h}x{w}x{k} | {seconds:.4f} | {moved / 1e6:.1f} MB "
        f"| {gbs:.2f} | {reference:.2f} | {gbs / reference:.2f} |"
    )


if __name__ == "__main__":
    main()
