"""The measurements of ``benchmarks/device_check.py``, one function per part, each returning rows
(dicts of numbers and short strings) for the report. They call the library's own train step
(``training.train_step.compile_train_step``), loop (``training.loop.train``), sampler
(``inference.generation.generate``) and input pipeline (``data.pipeline``).

The text is T5-large's shape (256 tokens of width 1024, all positions real) from a learned
byte-level encoder of depth 0 (an embedding and a LayerNorm): no download, and the U-Net, whose
697 M parameters are the cost, is the reference's. A frozen T5 adds its forward to a step.
"""

import dataclasses
import functools
import os
import statistics
import tempfile
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from benchmarks.train_step import timed_steps
from gcd_jax import sharding
from gcd_jax.diffusion import joint
from gcd_jax.inference import generation
from gcd_jax.inference.model import from_state
from gcd_jax.models.networks import build_networks
from gcd_jax.models.unet import compute_dtype
from gcd_jax.training import train_state, train_step

MEMORY_HEADROOM = 0.92  # the batch search keeps XLA's plan under this share of device memory
GUIDANCE = 3.0  # base sampling *ref*


@dataclasses.dataclass(frozen=True)
class Sizes:
    """How big each part runs: the reference sizes on an accelerator, tiny ones in the tests.
    Batches are per device for the train step, global for sampling and the input pipeline."""

    batch: int  # the reference per-device batch of the train step
    max_batch: int  # the batch search's cap (0: until the device memory is full)
    steps: int  # timed train steps (median), after one warm-up step
    sample_batches: tuple[int, ...]
    sample_steps: int
    sr_sample_steps: int
    demo_steps: int
    pipeline_images: int  # generated full-size training pairs
    pipeline_batches: int  # timed batches
    full_size: tuple[int, int]  # (H, W) of the generated stand-in files


FULL = Sizes(8, 0, 5, (8, 32), 100, 4, 200, 24, 16, (1024, 2048))
# Tiny: no batch search (its fit is tested on its own; each CPU compile costs seconds).
TINY = Sizes(1, 1, 1, (8,), 2, 1, 2, 2, 1, (64, 128))


def cityscapes(sr: bool, tiny: bool, **model) -> ml_collections.ConfigDict:
    """experiments/cityscapes(_sr).py (``:tiny`` at the tiny size) with a learned byte text
    encoder in place of T5 (at full size T5-large's width and length, 1024 x 256, so that no
    weights are loaded), one step program."""
    from experiments import cityscapes as base
    from experiments import cityscapes_sr

    config = (cityscapes_sr if sr else base).get_config("tiny" if tiny else None)
    if not tiny:
        config.text.update(encoder="learned", depth=0, embed_dim=1024, max_length=256)
    config.train.step_programs = "one"  # what 'auto' gives on GPU/TPU, also on CPU here
    config.model.update(model)
    return config


def synthetic_batch(config, global_batch: int, mesh, seed: int = 0) -> dict:
    """A train batch of random images, layouts and byte tokens, all text positions real."""
    rng = np.random.default_rng(seed)
    h, w = config.data.image_size
    length = config.text.max_length
    batch = dict(
        image=rng.uniform(-1, 1, (global_batch, h, w, 3)).astype(np.float32),
        label=rng.integers(0, config.data.num_classes, (global_batch, h, w)).astype(np.int32),
        tokens=rng.integers(1, 256, (global_batch, length)).astype(np.int32),
        mask=np.ones((global_batch, length), bool),
        has_text=np.ones(global_batch, bool),
    )
    return sharding.shard_batch(batch, mesh)  # one process: the whole batch is this host's


def random_heads(params, key):
    """``params`` with every all-zero kernel (the zero-initialised output heads) drawn at
    N(0, 0.02²): at init no gradient passes through them to the layers below."""
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(key, len(leaves))
    leaves = [
        0.02 * jax.random.normal(k, x.shape, x.dtype) if x.ndim >= 2 and not np.any(x) else x
        for x, k in zip(leaves, keys, strict=True)
    ]
    return jax.tree.unflatten(tree, leaves)


def init(config, mesh, heads: bool = False):
    """(nets, optimizer, state, frozen): a fresh train state laid out as the step wants it."""
    nets = build_networks(config)
    optimizer = train_state.make_optimizer(config.optim)
    layout = train_step.state_shardings(config, nets, optimizer, mesh)
    make = functools.partial(train_state.init_state, nets=nets, optimizer=optimizer)
    state = jax.jit(make, out_shardings=layout)(jax.random.key(0))
    if heads:
        state = state.replace(params=random_heads(state.params, jax.random.key(1)))
    return nets, optimizer, state, nets.load_frozen()


def is_oom(error: Exception) -> bool:
    return "RESOURCE_EXHAUSTED" in str(error) or "out of memory" in str(error).lower()


def bytes_limit() -> int | None:
    """The first device's memory in bytes (GPU/TPU), None where JAX does not say (CPU)."""
    stats = jax.devices()[0].memory_stats()
    return None if not stats else stats.get("bytes_limit")


def time_step(config, mesh, per_device: int, steps: int, peak: float | None, made) -> dict:
    """Compiles the config's train step at ``per_device`` examples per device on ``made``'s
    state (``init``'s result; its state is replaced by the stepped one) and times it. Raises
    MemoryError when XLA's plan exceeds the device memory (without running it)."""
    nets, optimizer, state, frozen = made["init"]
    process = joint.Process.from_config(config)
    b = per_device * mesh.size
    batch = synthetic_batch(config, b, mesh)
    layout = jax.tree.map(lambda x: x.sharding, state)
    t0 = time.perf_counter()
    jitted = train_step.compile_train_step(config, nets, process, optimizer, mesh, layout)
    compiled = jitted.lower(state, batch, frozen).compile()
    compile_s = time.perf_counter() - t0
    plan = train_step.peak_bytes(compiled.memory_analysis())
    limit = bytes_limit()
    if limit and plan > limit:
        raise MemoryError(f"XLA plans {plan / 2**30:.1f} GiB > {limit / 2**30:.1f} GiB")
    flops = float(compiled.cost_analysis()["flops"])
    state, metrics, times = timed_steps(compiled, state, batch, frozen, steps)
    made["init"] = (nets, optimizer, state, frozen)
    step_s = statistics.median(times)
    stats = jax.devices()[0].memory_stats() or {}
    return {
        "batch per device": per_device,
        "global batch": b,
        "compile s": compile_s,
        "s/step": step_s,
        "images/s": b / step_s,
        "GFLOP/step (XLA)": flops / 1e9,
        "MFU": mfu(flops, step_s, peak),
        "XLA plan GiB": plan / 2**30,
        "device peak GiB": stats["peak_bytes_in_use"] / 2**30
        if "peak_bytes_in_use" in stats
        else None,
        "loss": float(metrics["loss"]),
    }


def mfu(flops: float, step_s: float, peak: float | None) -> float | None:
    """Model FLOPs utilisation: XLA's FLOPs of the (per-device) program / (seconds × the
    device's stated peak FLOP/s); None where the peak is unknown."""
    return None if not peak else flops / (step_s * peak)


def batch_candidates(sizes: Sizes, plans: dict[int, float], limit: int | None) -> list[int]:
    """The batch search past the two probes (``batch``, 2 × ``batch``): batch × 2^k, largest
    first, while XLA's plan, fitted linearly to the probes' ``plans``, stays under
    ``MEMORY_HEADROOM`` of ``limit`` (and within ``max_batch``); the caller runs the first that
    fits. Without a limit (CPU) only ``max_batch`` bounds it."""
    (b0, p0), (b1, p1) = sorted(plans.items())
    slope = (p1 - p0) / (b1 - b0)
    out, b = [], 2 * b1
    while (not sizes.max_batch or b <= sizes.max_batch) and (
        limit is None or p1 + slope * (b - b1) <= MEMORY_HEADROOM * limit
    ):
        out.append(b)
        b *= 2
        if limit is None and not sizes.max_batch:
            break  # no bound at all: one doubling
    return out[::-1]


def train_rows(
    variant: str, config, mesh, sizes: Sizes, peak, search: bool = True, profile_dir=None
) -> list[dict]:
    """Part (b) for one variant: the reference batch and, with ``search``, its double, then the
    largest batch that fits (``batch_candidates``, halving after an out-of-memory error)."""
    made = {"init": init(config, mesh)}
    dtype = jnp.dtype(compute_dtype(config.model.dtype)).name
    tag = {"variant": variant, "dtype": dtype}
    rows = [{**tag, **time_step(config, mesh, sizes.batch, sizes.steps, peak, made)}]
    if profile_dir:
        profile(config, mesh, sizes.batch, made, profile_dir)
    if not search or (sizes.max_batch and sizes.max_batch < 2 * sizes.batch):
        return rows
    plans = {sizes.batch: rows[0]["XLA plan GiB"] * 2**30}
    try:
        rows.append({**tag, **time_step(config, mesh, 2 * sizes.batch, sizes.steps, peak, made)})
    except (MemoryError, jax.errors.JaxRuntimeError) as error:
        if not isinstance(error, MemoryError) and not is_oom(error):
            raise
        rows[0]["largest"] = "yes"
        return rows
    plans[2 * sizes.batch] = rows[1]["XLA plan GiB"] * 2**30
    for b in batch_candidates(sizes, plans, bytes_limit()):
        try:
            rows.append({**tag, **time_step(config, mesh, b, sizes.steps, peak, made)})
            break
        except (MemoryError, jax.errors.JaxRuntimeError) as error:
            if not isinstance(error, MemoryError) and not is_oom(error):
                raise
            made["init"] = init(config, mesh)  # a failed run may have consumed the donated state
    rows[-1]["largest"] = "yes"
    return rows


def profile(config, mesh, per_device, made, out_dir) -> None:
    """A ``jax.profiler`` trace of three more steps at ``per_device`` (compiled earlier in this
    process, so no compile is in it) in ``out_dir``."""
    nets, optimizer, state, frozen = made["init"]
    process = joint.Process.from_config(config)
    batch = synthetic_batch(config, per_device * mesh.size, mesh)
    layout = jax.tree.map(lambda x: x.sharding, state)
    step = train_step.compile_train_step(config, nets, process, optimizer, mesh, layout)
    state, metrics = step(state, batch, frozen)
    jax.block_until_ready(metrics)
    with jax.profiler.trace(out_dir, create_perfetto_trace=True):
        for _ in range(3):
            state, metrics = step(state, batch, frozen)
        jax.block_until_ready(metrics)
    made["init"] = (nets, optimizer, state, frozen)


# ------------------------------------------------------------------ sampling
_COMPILE_EVENTS: list[tuple[str, float]] = []


def _record_compile(name: str, seconds: float, **kwargs) -> None:
    if name.startswith("/jax/core/compile/"):  # tracing, lowering, compiling or a cache read
        _COMPILE_EVENTS.append((name, seconds))


_LISTENING = []


def compile_seconds_during(fn):
    """(fn's result, wall seconds, seconds of it JAX spent tracing, lowering and compiling or
    reading compiled programs from the persistent cache: ``jax.monitoring``'s
    '/jax/core/compile/...' events)."""
    if not _LISTENING:
        jax.monitoring.register_event_duration_secs_listener(_record_compile)
        _LISTENING.append(True)
    start = len(_COMPILE_EVENTS)
    t0 = time.perf_counter()
    result = fn()
    wall = time.perf_counter() - t0
    return result, wall, sum(s for _, s in _COMPILE_EVENTS[start:])


def timed_generate(model, prompts, guidance, lowres, mesh) -> dict:
    """``generation.generate`` once: its compile seconds and the rest (sampling). When the
    rest is under 10 s, a second (compiled) call times it instead: the subtraction is then too
    coarse."""
    key = jax.random.key(0)
    run = lambda: generation.generate(model, prompts, key, guidance, lowres, mesh)
    (images, _), wall, compile_s = compile_seconds_during(run)
    sample_s, how = wall - compile_s, "first call - compile"
    if sample_s < 10.0:
        t0 = time.perf_counter()
        images, _ = run()
        sample_s, how = time.perf_counter() - t0, "second call"
    assert np.all(np.isfinite(images)), "non-finite samples"
    return {"first call s": wall, "compile s": compile_s, "sampling s": sample_s, "timed": how}


def sampling_rows(tiny: bool, mesh, sizes: Sizes) -> list[dict]:
    """Part (c): guided base sampling (``sample_steps`` steps, guidance 3) at each of
    ``sample_batches``, and SR sampling steps (guidance 1, *ref*) at the first batch."""
    rows = []
    config = cityscapes(False, tiny)
    config.sample.num_steps = sizes.sample_steps
    nets = build_networks(config)
    params = jax.jit(nets.init, out_shardings=sharding.replicated(mesh))(jax.random.key(0))
    for b in sizes.sample_batches:
        config.sample.batch_size = b
        model = from_state(config, nets, params, nets.load_frozen(), 0)
        r = timed_generate(model, ["Cars."] * b, GUIDANCE, None, mesh)
        rows.append({"model": "base", "batch": b, "steps": sizes.sample_steps, "guidance": 3.0})
        rows[-1].update(r, **{"pairs/s": b / r["sampling s"]})
        rows[-1]["s/step"] = r["sampling s"] / sizes.sample_steps
    sr = cityscapes(True, tiny)
    b = sr.sample.batch_size = sizes.sample_batches[0]
    sr.sample.num_steps = sizes.sr_sample_steps
    nets = build_networks(sr)
    params = jax.jit(nets.init, out_shardings=sharding.replicated(mesh))(jax.random.key(0))
    model = from_state(sr, nets, params, nets.load_frozen(), 0)
    h, w = sr.model.lowres_size
    rng = np.random.default_rng(0)
    lowres = (
        rng.uniform(-1, 1, (b, h, w, 3)).astype(np.float32),
        rng.integers(0, sr.data.num_classes, (b, h, w)).astype(np.int32),
    )
    r = timed_generate(model, ["Cars."] * b, sr.sample.guidance_scale, lowres, mesh)
    rows.append({"model": "SR", "batch": b, "steps": sizes.sr_sample_steps, "guidance": 1.0})
    rows[-1].update(r, **{"pairs/s": b / r["sampling s"]})
    rows[-1]["s/step"] = r["sampling s"] / sizes.sr_sample_steps
    return rows


# ------------------------------------------------------------------ bfloat16 vs float32
# bfloat16 keeps 8 significant bits (unit roundoff 2^-9); the loss and the gradient's norm of a
# bfloat16 step must agree with float32's to within 4 bfloat16 epsilons (2^-6), the gradient's
# direction to cosine 0.99.
LOSS_RTOL, COSINE_MIN = 2.0**-6, 0.99


@jax.jit
def _compare(a, b):
    """(|a|, |b|, cosine of a and b): two gradient trees as flat float32 vectors."""
    dot = sum(
        jnp.vdot(x.astype(jnp.float32), y.astype(jnp.float32))
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    )
    na, nb = train_step.global_norm(a), train_step.global_norm(b)
    return na, nb, dot / (na * nb)


def precision_rows(tiny: bool, mesh, sizes: Sizes) -> list[dict]:
    """Part (d): one gradient step (``train_step.gradient_step``) of the base model on the same
    state, batch and key, with bfloat16 and with float32 compute (float32 matmuls at 'highest'
    precision, not TF32). The zero-initialised heads are drawn at random (``random_heads``) so
    that every layer gets a gradient."""
    out = {}
    for dtype, precision in (("bfloat16", "default"), ("float32", "highest")):
        config = cityscapes(False, tiny, dtype=dtype)
        nets, _, state, frozen = init(config, mesh, heads=True)
        batch = synthetic_batch(config, sizes.batch * mesh.size, mesh)
        gradient = functools.partial(
            train_step.gradient_step,
            nets=nets,
            process=joint.Process.from_config(config),
            config=config,
        )
        with jax.default_matmul_precision(precision):
            grads, metrics = jax.jit(gradient)(state, batch, frozen)
        out[dtype] = (grads, float(metrics["loss"]))
        del state
    (g16, loss16), (g32, loss32) = out["bfloat16"], out["float32"]
    n16, n32, cosine = (float(x) for x in _compare(g16, g32))
    loss_rel, norm_rel = abs(loss16 - loss32) / abs(loss32), abs(n16 - n32) / n32
    agree = loss_rel <= LOSS_RTOL and norm_rel <= LOSS_RTOL and cosine >= COSINE_MIN
    return [
        {
            "global batch": sizes.batch * mesh.size,
            "loss bf16": loss16,
            "loss f32": loss32,
            "loss rel. error": loss_rel,
            "grad norm bf16": n16,
            "grad norm f32": n32,
            "grad norm rel. error": norm_rel,
            "grad cosine": cosine,
            "agree": "yes" if agree else "NO",
        }
    ]


# ------------------------------------------------------------------ input pipeline
def pipeline_rows(tiny: bool, sizes: Sizes, consumes: dict[str, float]) -> list[dict]:
    """Part (e): the training iterator (decode the full-size PNGs, resized crop, caption, byte
    tokens, batch; ``data.num_workers`` threads) on a generated Cityscapes stand-in of
    ``sizes.full_size`` files, for the base and SR shapes, against ``consumes[name]``, the
    examples/s one host's train step takes (from part (b); absent: not compared)."""
    from benchmarks import input_pipeline
    from gcd_jax.data import pipeline, sources
    from gcd_jax.models.text import build_text_encoder

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        raw, rng = os.path.join(tmp, "raw"), np.random.default_rng(0)
        t0 = time.perf_counter()
        input_pipeline.write_fake_cityscapes(raw, sizes.pipeline_images, rng, sizes.full_size)
        write_s = time.perf_counter() - t0
        for name, sr in (("base", False), ("SR", True)):
            config = cityscapes(sr, tiny)
            config.data.update(data_dir=os.path.join(tmp, "tfds"), manual_dir=raw)
            b = config.train.global_batch_size = sizes.batch * jax.local_device_count()
            t0 = time.perf_counter()
            sources.open_split(config, "train")  # builds the TFDS data set once
            build_s = time.perf_counter() - t0
            tokenize = build_text_encoder(config).tokenize
            data = pipeline.create_train_iterator(
                config, tokenize, process_index=0, process_count=1
            )
            next(data)
            wall, cpu = time.perf_counter(), time.process_time()
            for _ in range(sizes.pipeline_batches):
                next(data)
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            data.close()
            n = sizes.pipeline_batches * b
            rate, cpu_s = n / wall, cpu / n
            need = consumes.get(name)
            row = {
                "shape": name,
                "files": "x".join(map(str, sizes.full_size)),
                "to": "x".join(map(str, config.data.image_size)),
                "workers": config.data.num_workers,
                "host cores": os.cpu_count(),
                "write + build s": (write_s if name == "base" else 0.0) + build_s,
                "examples/s": rate,
                "CPU ms/example": 1e3 * cpu_s,
                "step consumes /s": need,
                "pipeline / step": None if need is None else rate / need,
                "cores to keep up": None if need is None else need * cpu_s,
            }
            rows.append(row)
    return rows


# ------------------------------------------------------------------ the demo
def demo_rows(tiny: bool, sizes: Sizes, out_dir: str) -> list[dict]:
    """Part (f): the first ``sizes.demo_steps`` steps of experiments/demo.py through the training
    loop (``training.loop.train``: data generation, init, compile, steps, checkpoint), as on a
    fresh machine; the loss as logged. Tiny: 64 scenes, ``experiments.base.shrink``'s U-Net."""
    import json
    import shutil

    from experiments import base, demo
    from gcd_jax.training import loop

    config = demo.get_config()
    config.data.data_dir = os.path.join(out_dir, "demo_tfds")
    steps = sizes.demo_steps
    log_every = max(1, steps // 4)
    config.train.update(num_steps=steps, log_every=log_every, ckpt_every=steps, sample_every=0)
    config.train.compile_cache = ""  # the process's cache is set already
    if tiny:
        config.data.num_demo_examples = 64
        config.train.global_batch_size = 8
        base.shrink(config, tuple(config.data.image_size))
    workdir = os.path.join(out_dir, "demo_workdir")
    shutil.rmtree(workdir, ignore_errors=True)  # from scratch, not resumed
    t0 = time.perf_counter()
    state = loop.train(config, workdir)
    wall = time.perf_counter() - t0
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        logged = [json.loads(line) for line in f if line.strip()]
    return [
        {
            "steps": int(state.step),
            "global batch": config.train.global_batch_size,
            "wall s (data, compile, steps)": wall,
            "first logged loss": logged[0]["loss"],
            "first logged step": logged[0]["step"],
            "loss at the last step": logged[-1]["loss"],
            "steps/s": logged[-1].get("steps_per_sec", float("nan")),
        }
    ]
