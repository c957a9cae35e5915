"""Process-wide JAX settings a run applies before it compiles anything."""

import os

import jax
import ml_collections
from jax._src import xla_bridge  # no public API says whether the backends have started

ENV_VAR = "JAX_COMPILATION_CACHE_DIR"


def add_xla_flags(config: ml_collections.ConfigDict) -> str:
    """Adds ``config.train.xla_flags`` to ``$XLA_FLAGS`` (a flag already set there keeps its
    value) and returns the result. XLA reads ``$XLA_FLAGS`` once, when the first device is used:
    call this before anything touches ``jax.devices()``; later it raises."""
    current = os.environ.get("XLA_FLAGS", "").split()
    present = {flag.split("=")[0] for flag in current}
    added = [f for f in config.train.xla_flags.split() if f.split("=")[0] not in present]
    if not added:
        return " ".join(current)
    if xla_bridge.backends_are_initialized():
        raise RuntimeError(
            f"train.xla_flags {added} must be set before JAX's first device use: set them in "
            "$XLA_FLAGS instead."
        )
    os.environ["XLA_FLAGS"] = " ".join(current + added)
    return os.environ["XLA_FLAGS"]


def compile_cache_dir(config: ml_collections.ConfigDict, workdir: str) -> str | None:
    """Where compiled programs persist: ``$JAX_COMPILATION_CACHE_DIR`` when set, else
    ``config.train.compile_cache`` ('workdir' = ``{workdir}/xla_cache``, '' = no cache, or a path)."""
    if os.environ.get(ENV_VAR):
        return os.environ[ENV_VAR]
    setting = config.train.compile_cache
    if setting == "":
        return None
    return os.path.join(workdir, "xla_cache") if setting == "workdir" else setting


def enable_compile_cache(config: ml_collections.ConfigDict, workdir: str) -> str | None:
    """Turns on JAX's persistent compilation cache at `compile_cache_dir` (a restart after a
    preemption then loads the train step instead of compiling it); returns the directory."""
    path = compile_cache_dir(config, workdir)
    if path is not None:
        jax.config.update("jax_compilation_cache_dir", path)
    return path
