"""The process-wide settings of a gcd_jax run, in one place.

Library modules change no global state on import or call; the entry points call ``install``
(``run.py``, ``python -m gcd_jax.convert``, ``tests/conftest.py`` and the benchmarks that train in
their own process) before they touch a device. It sets:

- third-party chatter off, where the user has not asked for it (their own environment wins):
  TensorFlow's C++ log lines and oneDNN notice (TF only runs the input pipeline's CPU ops) and
  transformers' "PyTorch was not found" notice, JAX's probing of absent platforms
  (``quiet_third_party``; it acts on libraries not
  imported yet, so ``run.py`` calls it first);
- ``config.train.xla_flags`` added to ``$XLA_FLAGS`` before the first device use (``add_xla_flags``;
  the defaults are XLA:CPU-only flags, which GPU and TPU ignore);
- the persistent compilation cache (``enable_compile_cache``);
- Orbax: failed-I/O noise dropped (``checkpoint.quiet_orbax_failures``) and, on CPU, replicated
  arrays written from one replica (``checkpoint.save_replicated_arrays_whole``).
"""

import logging
import os

import jax
import jax.extend.backend
import ml_collections

from gcd_jax.training import checkpoint

ENV_VAR = "JAX_COMPILATION_CACHE_DIR"
QUIET_ENVIRONMENT = {
    "TF_CPP_MIN_LOG_LEVEL": "3",  # TF's C++ logs (and absl's "before InitializeLog" line)
    "TF_ENABLE_ONEDNN_OPTS": "0",  # its oneDNN notice; the pipeline's ops are resizes and casts
    "TRANSFORMERS_VERBOSITY": "error",  # "PyTorch was not found" (only the tokenizer is used)
}


def quiet_third_party() -> None:
    """Sets ``QUIET_ENVIRONMENT`` where the variables are unset (call before TF is imported), and
    JAX's log of the platforms it probes ("Unable to initialize backend 'tpu'") to warnings."""
    for name, value in QUIET_ENVIRONMENT.items():
        os.environ.setdefault(name, value)
    logging.getLogger("jax._src.xla_bridge").setLevel(logging.WARNING)


def _backends_started() -> bool:
    """Whether JAX has created its backends (XLA reads ``$XLA_FLAGS`` then): the public
    ``jax.extend.backend.get_backend`` caches the backends it made."""
    cache_info = getattr(jax.extend.backend.get_backend, "cache_info", None)
    return cache_info is not None and cache_info().currsize > 0


def add_xla_flags(config: ml_collections.ConfigDict) -> str:
    """Adds ``config.train.xla_flags`` to ``$XLA_FLAGS`` (a flag already set there keeps its
    value) and returns the result. XLA reads ``$XLA_FLAGS`` once, when the first device is used:
    call this before anything touches ``jax.devices()``; later it raises."""
    current = os.environ.get("XLA_FLAGS", "").split()
    present = {flag.split("=")[0] for flag in current}
    added = [f for f in config.train.xla_flags.split() if f.split("=")[0] not in present]
    if not added:
        return " ".join(current)
    if _backends_started():
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


def install_checkpoint_hooks() -> None:
    """The Orbax settings of the module docstring (idempotent)."""
    checkpoint.quiet_orbax_failures()
    checkpoint.save_replicated_arrays_whole()


def install(config: ml_collections.ConfigDict | None = None, workdir: str | None = None) -> None:
    """Everything above, in order: the quiet environment and ``config``'s XLA flags (before the
    first device use), the checkpoint hooks (which start the backends: a multi-host run calls
    ``jax.distributed.initialize()`` before this), the compile cache when ``workdir`` is given."""
    quiet_third_party()
    if config is not None:
        add_xla_flags(config)
    install_checkpoint_hooks()
    if config is not None and workdir is not None:
        enable_compile_cache(config, workdir)
