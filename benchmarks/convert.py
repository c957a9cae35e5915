"""Time and peak memory of ``python -m gcd_jax.convert`` on a full-size authors' checkpoint.

Writes a trainer-format file (``JointImagenTrainer.save`` layout, see
``gcd_jax.convert.reference_checkpoint``) for the U-Net of an experiment with random weights: raw and EMA
weights (two float32 copies, 2.8 GB each for the 697 M-parameter Cityscapes base U-Net), the
online-model entries sharing the raw storages as ``torch.save`` does, the label-schedule buffers
and the step counters. The optimizer moments of a real file are left out: conversion never reads
them. The file is written tensor by tensor in PyTorch's zip format by the small writer below (no
PyTorch needed, nothing large held in memory). Then the conversion runs as a child process and the
script reports its wall time, its peak resident memory (``ru_maxrss``) and the checkpoint's size.

    python -m benchmarks.convert                        # Cityscapes base, 697 M parameters
    python -m benchmarks.convert --experiment cityscapes_sr --dir /big/disk

The T5 is named by a stand-in folder holding only T5-large's ``config.json`` (its width, 1024, is
all conversion needs). Disk: about 2 × 4 bytes × parameters for the file, as much again for the
converted checkpoint; both are deleted at the end unless ``--keep``.
"""

import argparse
import dataclasses
import importlib
import json
import os
import pathlib
import resource
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import zipfile

import jax
import numpy as np

from gcd_jax.convert import authors as convert
from gcd_jax.convert import reference_checkpoint, torch_names
from gcd_jax.training import train_state

# Hugging Face's t5-large config.json, the fields gcd_jax.models.t5 reads.
T5_LARGE = dict(
    d_model=1024, d_kv=64, d_ff=4096, num_layers=24, num_heads=16, vocab_size=32128,
    relative_attention_num_buckets=32, relative_attention_max_distance=128,
    feed_forward_proj="relu", layer_norm_epsilon=1e-6,
)  # fmt: skip
STEP = 300_000
ROOT = pathlib.Path(__file__).resolve().parents[1]


@dataclasses.dataclass(frozen=True)
class Placeholder:
    """A tensor in the pickle whose bytes ``write_storage(key, ...)`` writes later."""

    key: str
    shape: tuple[int, ...]
    dtype: np.dtype


class TorchZipWriter:
    """Writes ``{str: tensor | int | str | dict}`` trees as a ``torch.save`` zip archive
    (pickle protocol 2, tensors as ``_rebuild_tensor_v2`` of float32/int64 storages), streaming
    each storage's bytes into the archive as it is produced.

    Usage: describe the object with ``tensor(key, shape, dtype)`` placeholders, ``write_pickle``
    it, then ``write_storage(key, array)`` for each key.
    """

    _STORAGE = {np.dtype(np.float32): "FloatStorage", np.dtype(np.int64): "LongStorage"}

    def __init__(self, path: str):
        self._zip = zipfile.ZipFile(path, "w", zipfile.ZIP_STORED, allowZip64=True)
        self._pickle = bytearray()

    @staticmethod
    def tensor(key: str, shape: tuple[int, ...], dtype) -> "Placeholder":
        return Placeholder(key, tuple(shape), np.dtype(dtype))

    def _str(self, s: str) -> None:
        data = s.encode()
        self._pickle += b"X" + struct.pack("<I", len(data)) + data

    def _int(self, i: int) -> None:
        self._pickle += b"J" + struct.pack("<i", i)

    def _ints(self, values) -> None:
        self._pickle += b"("
        for v in values:
            self._int(v)
        self._pickle += b"t"

    def _value(self, obj) -> None:
        if isinstance(obj, dict):
            self._pickle += b"}("
            for k, v in obj.items():
                self._str(k)
                self._value(v)
            self._pickle += b"u"
        elif isinstance(obj, Placeholder):
            key, shape, dtype = obj.key, obj.shape, obj.dtype
            strides = [int(np.prod(shape[i + 1 :])) for i in range(len(shape))]
            self._pickle += b"ctorch._utils\n_rebuild_tensor_v2\n(("
            self._str("storage")
            self._pickle += f"ctorch\n{self._STORAGE[dtype]}\n".encode()
            self._str(key)
            self._str("cpu")
            self._int(int(np.prod(shape)))
            self._pickle += b"tQ"  # the persistent storage reference
            self._int(0)
            self._ints(shape)
            self._ints(strides)
            self._pickle += b"\x89ccollections\nOrderedDict\n)RtR"
        elif isinstance(obj, str):
            self._str(obj)
        else:
            self._int(int(obj))

    def write_pickle(self, obj: dict) -> None:
        self._pickle = bytearray(b"\x80\x02")
        self._value(obj)
        self._pickle += b"."
        self._zip.writestr("archive/data.pkl", bytes(self._pickle))
        self._zip.writestr("archive/byteorder", "little")
        self._zip.writestr("archive/version", "3\n")

    def write_storage(self, key: str, array: np.ndarray) -> None:
        with self._zip.open(f"archive/data/{key}", "w", force_zip64=True) as f:
            f.write(np.ascontiguousarray(array).data)

    def close(self) -> None:
        self._zip.close()


def _draw(rng: np.random.Generator, entry: torch_names.Entry) -> np.ndarray:
    fan_in = int(np.prod(entry.torch_shape[1:])) if len(entry.torch_shape) > 1 else 1
    z = rng.standard_normal(entry.torch_shape, dtype=np.float32)
    return z / np.float32(np.sqrt(fan_in))


def write_checkpoint(path: str, config, table: list[torch_names.Entry], seed: int = 0) -> None:
    """A trainer-format file of U-Net 1 with random raw and EMA weights (see the docstring)."""
    w = TorchZipWriter(path)
    raw = {e.name: w.tensor(f"raw{i}", e.torch_shape, np.float32) for i, e in enumerate(table)}
    ema = {e.name: w.tensor(f"ema{i}", e.torch_shape, np.float32) for i, e in enumerate(table)}
    d = config.diffusion
    buffers = {
        "noise_schedulers_lbl.0.log_cumprod_alpha": (d.noise_schedule_lbl, d.num_timesteps),
        "noise_schedulers_lbl_sample.0.log_cumprod_alpha": (
            d.noise_schedule_lbl,
            config.sample.num_steps,
        ),
    }
    model = {f"unets.0.{k}": v for k, v in raw.items()}
    model.update({k: w.tensor(k, (n,), np.float32) for k, (_, n) in buffers.items()})
    ema_dict = {f"0.ema_model.{k}": v for k, v in ema.items()}
    ema_dict.update({f"0.online_model.{k}": v for k, v in raw.items()})
    ema_dict["0.initted"] = w.tensor("initted", (1,), np.float32)
    ema_dict["0.step"] = w.tensor("ema_step", (1,), np.int64)
    steps = w.tensor("steps", (1,), np.int64)
    w.write_pickle(dict(model=model, version="1.11.14", steps=steps, ema=ema_dict))
    rng = np.random.default_rng(seed)
    for i, e in enumerate(table):
        w.write_storage(f"raw{i}", _draw(rng, e))
        w.write_storage(f"ema{i}", _draw(rng, e))
    for key, (name, n) in buffers.items():
        buffer = reference_checkpoint.label_buffer(name, d.cosine_p, n)
        w.write_storage(key, buffer.astype(np.float32))
    w.write_storage("initted", np.ones(1, np.float32))
    w.write_storage("ema_step", np.full(1, STEP, np.int64))
    w.write_storage("steps", np.full(1, STEP, np.int64))
    w.close()


def _size_gb(path: pathlib.Path) -> float:
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    return sum(p.stat().st_size for p in files) / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--experiment", default="cityscapes", help="module in experiments/")
    parser.add_argument("--dir", default=None, help="scratch folder (default: a temporary one)")
    parser.add_argument("--keep", action="store_true", help="keep the file and the checkpoint")
    args = parser.parse_args()
    scratch = pathlib.Path(args.dir or tempfile.mkdtemp(prefix="convert_bench_"))
    scratch.mkdir(parents=True, exist_ok=True)
    (scratch / "t5").mkdir(exist_ok=True)
    (scratch / "t5" / "config.json").write_text(json.dumps(T5_LARGE))
    config = importlib.import_module(f"experiments.{args.experiment}").get_config()
    config.text.t5_name = str(scratch / "t5")
    nets = convert.shape_networks(config)
    abstract = train_state.abstract_state(nets, train_state.make_optimizer(config.optim))
    table = torch_names.unet_table(
        abstract.params["unet"], len(config.model.dim_mults), config.model.cross_embed_kernels
    )
    del nets, abstract
    ckpt_path, workdir = scratch / "model.pt", scratch / "workdir"
    start = time.perf_counter()
    write_checkpoint(str(ckpt_path), config, table)
    write_s = time.perf_counter() - start
    print(f"wrote {ckpt_path} ({_size_gb(ckpt_path):.2f} GB) in {write_s:.0f} s", flush=True)

    command = [
        sys.executable, "-m", "gcd_jax.convert", f"--checkpoint={ckpt_path}",
        f"--config=experiments/{args.experiment}.py", f"--config.text.t5_name={scratch / 't5'}",
        f"--workdir={workdir}",
    ]  # fmt: skip
    start = time.perf_counter()
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if result.returncode:
        sys.exit(f"conversion failed:\n{result.stderr[-4000:]}")
    peak_gb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024 / 1e9
    print(result.stdout.strip())
    print(f"{'experiment':<14} {'params':>13} {'file GB':>8} {'convert s':>10} {'peak RSS GB':>12} "
          f"{'ckpt GB':>8}")  # fmt: skip
    print(
        f"{args.experiment:<14} {torch_names.num_params(table):>13,} {_size_gb(ckpt_path):>8.2f} "
        f"{wall:>10.1f} {peak_gb:>12.2f} {_size_gb(workdir):>8.2f}"
    )
    print(f"(JAX {jax.__version__}, {os.cpu_count()} CPUs)")
    if not args.keep:
        shutil.rmtree(scratch)


if __name__ == "__main__":
    main()
