"""Process-wide JAX settings a run applies before it compiles anything."""

import os

import jax
import ml_collections

ENV_VAR = "JAX_COMPILATION_CACHE_DIR"


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
