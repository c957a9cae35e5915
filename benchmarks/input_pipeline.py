"""Input-pipeline throughput at the reference Cityscapes resolution.

Builds a synthetic Cityscapes-layout data set (folders of PNGs at the stored 256x512, so the
`256x512` builder config stores them as they are) in a temporary directory, then times the
training iterator: decode, resized_crop to 128x256, caption choice, byte tokenisation, batching.

    python benchmarks/input_pipeline.py [--images 48] [--workers 1,2,4] [--steps 12]

The base model needs ~300 examples/s per host on an accelerator (batch 32 in ~0.1 s) and ~0.1
examples/s on a CPU (batch 1 in ~10 s).
"""

import argparse
import os
import sys
import tempfile
import time

import numpy as np
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from experiments.base import get_config  # noqa: E402
from gcd_jax.data import pipeline, sources  # noqa: E402
from gcd_jax.models import text  # noqa: E402

STORED = (256, 512)
NEEDED = 300.0  # examples/s per host to keep an accelerator busy


def write_fake_cityscapes(
    root: str, count: int, rng: np.random.Generator, size: tuple[int, int] = STORED
) -> None:
    """`count` train and 4 val image/label pairs of `size` (H, W; multiples of (8, 16)): layout
    blocks, photo-like noise on top."""
    ids = np.array([7, 8, 11, 17, 21, 23, 24, 26], np.uint8)
    block = np.ones((size[0] // 8, size[1] // 16), np.int64)
    for split, n in (("train", count), ("val", 4)):
        for folder in ("leftImg8bit", "gtFine"):
            os.makedirs(os.path.join(root, folder, split, "city"), exist_ok=True)
        for i in range(n):
            coarse = rng.integers(0, len(ids), (8, 16))
            label = ids[np.kron(coarse, block)]
            colours = rng.integers(0, 256, (len(ids), 3))
            base = colours[np.searchsorted(ids, label)]
            image = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
            stem = os.path.join(root, "{}", split, "city", f"city_{i:06d}_000019")
            Image.fromarray(image).save(stem.format("leftImg8bit") + "_leftImg8bit.png")
            Image.fromarray(label).save(stem.format("gtFine") + "_gtFine_labelIds.png")


def time_iterator(config, steps: int) -> tuple[float, float]:
    """(examples per second, CPU milliseconds per example) after one warm-up batch.

    CPU time per example does not depend on other load on the machine; 1000 / it is what one
    fully used core sustains.
    """
    tokenize = text.build_text_encoder(config).tokenize  # the config's: 256 bytes
    iterator = pipeline.create_train_iterator(config, tokenize, process_index=0, process_count=1)
    next(iterator)
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(steps):
        next(iterator)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    iterator.close()
    examples = steps * config.train.global_batch_size
    return examples / wall, 1e3 * cpu / examples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=48, help="synthetic training images")
    parser.add_argument("--workers", default="1,2,4", help="comma-separated thread counts")
    parser.add_argument("--steps", type=int, default=12, help="timed batches of 32")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        write_fake_cityscapes(os.path.join(tmp, "raw"), args.images, np.random.default_rng(0))
        config = get_config()
        config.data.name, config.data.num_classes = "cityscapes", 20
        config.data.builder_config, config.data.image_size = "256x512", (128, 256)
        config.data.augment = "resized_crop"
        config.data.data_dir = os.path.join(tmp, "tfds")
        config.data.manual_dir = os.path.join(tmp, "raw")
        source = sources.open_split(config, "train")
        print(f"built {len(source)} examples at 256x512 in {time.perf_counter() - start:.1f} s")
        print("\n| workers | examples/s | CPU ms / example | examples/s per busy core |")
        print("|---|---|---|---|")
        cpu_costs = []
        for workers in [int(w) for w in args.workers.split(",")]:
            config.data.num_workers = workers
            rate, cpu_ms = time_iterator(config, args.steps)
            cpu_costs.append(cpu_ms)
            print(f"| {workers} | {rate:.0f} | {cpu_ms:.1f} | {1e3 / cpu_ms:.0f} |")
        cores = NEEDED * min(cpu_costs) / 1e3
        print(
            f"\nThis machine: {os.cpu_count()} cores. Feeding {NEEDED:.0f} examples/s takes ~{cores:.1f} "
            "busy cores (data.num_workers threads); the CPU model (~0.1 examples/s) is never "
            "input-bound."
        )


if __name__ == "__main__":
    main()
