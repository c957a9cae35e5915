"""Shared pytest fixtures and the test environment.

Compiled XLA programs go to a persistent cache shared by the tests and their subprocesses, so the
same program (e.g. the tiny train step in several tests) compiles once per machine, and XLA's CPU
backend skips its expensive LLVM passes: tests run tiny programs once, where compile time dominates
(the tiny train step compiles about twice as fast). The suite runs on two pytest-xdist worker
processes (``pyproject.toml``); XLA:CPU compiles a program on about one core, so two workers use
both of a 2-core machine. Fixtures that train (``trained_demo``) are built once for both.
"""

import os
import pathlib
import shutil
import tempfile

os.environ.setdefault(
    "JAX_COMPILATION_CACHE_DIR", os.path.join(tempfile.gettempdir(), "gcd_jax_test_xla_cache")
)

import filelock  # noqa: E402
import ml_collections  # noqa: E402
import pytest  # noqa: E402

from experiments import base  # noqa: E402  (no JAX import)

# Eight fake CPU devices for every test, set once before JAX is imported: the drivers run
# data-parallel over all of them, and single-device references use ``make_mesh(devices[:1])``.
# The runs' own ``train.xla_flags`` too, so that the CLI subprocesses (which add them) compile
# the same programs as the in-process tests and share their persistent cache.
FAST_COMPILE_FLAGS = (
    "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true "
    f"--xla_force_host_platform_device_count=8 {base.get_config().train.xla_flags}"
)
os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {FAST_COMPILE_FLAGS}".strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

from gcd_jax.cli import runtime  # noqa: E402

# The process-wide hooks run.py installs (Orbax's failed-I/O noise dropped, replicated arrays saved
# whole on CPU), so that the in-process tests save as the CLI does.
runtime.install_checkpoint_hooks()


# The files that take minutes (train-step compiles, fixtures that train) go first, so that the
# two workers, which take whole files in this order (``--no-loadscope-reorder``), end together.
SLOW_FILES_FIRST = (
    "test_train.py",
    "test_unet.py",
    "test_bad_input.py",
    "test_sample_cli.py",
    "test_device_check_train.py",
    "test_device_check.py",
)


def pytest_collection_modifyitems(items):
    def rank(item) -> int:
        name = item.path.name
        return SLOW_FILES_FIRST.index(name) if name in SLOW_FILES_FIRST else len(SLOW_FILES_FIRST)

    items.sort(key=rank)  # stable: each file's own order is kept


@pytest.fixture
def tiny_config() -> ml_collections.ConfigDict:
    """A fresh ``experiments/base.py:tiny`` config (docs/design.md §4's tiny U-Net); tests may
    modify it."""
    return base.get_config("tiny")


def small_demo_config(data_dir, **train_overrides) -> ml_collections.ConfigDict:
    """``experiments/demo.py:tiny`` (64 scenes, a dim-16 U-Net, batch 8, 4 steps) reading its
    scenes from ``data_dir``, with ``train`` fields overridden."""
    from experiments import demo

    config = demo.get_config("tiny")
    config.data.data_dir = str(data_dir)
    config.train.update(train_overrides)
    return config


@pytest.fixture(scope="session")
def demo_data_dir(tmp_path_factory):
    """A TFDS data_dir where the tests' demo scenes are generated once per session."""
    return tmp_path_factory.mktemp("tfds")


def built_once(tmp_path_factory, name: str, build) -> pathlib.Path:
    """``build(path)`` run once per test run, also when pytest-xdist spreads the tests over
    several worker processes (``-n``): the first worker to ask builds under a file lock in the
    directory the workers share, the others wait for it and get the same path."""
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # the workers' basetemps are siblings in the run's directory
    path = root / name
    with filelock.FileLock(f"{path}.lock"):
        if not (path / ".built").exists():
            shutil.rmtree(path, ignore_errors=True)
            path.mkdir()
            build(path)
            (path / ".built").touch()
    return path


@pytest.fixture(scope="session")
def trained_demo(demo_data_dir, tmp_path_factory):
    """(config, workdir) of a 4-step tiny demo run with its checkpoints: trained once per test
    run; each worker process gets its own copy, which its tests may write into."""
    from gcd_jax.cli import train

    config = small_demo_config(demo_data_dir)
    shared = built_once(
        tmp_path_factory, "trained_demo", lambda path: train.train_and_evaluate(config, str(path))
    )
    workdir = tmp_path_factory.mktemp("trained_demo")
    shutil.copytree(shared, workdir, dirs_exist_ok=True)
    return config, str(workdir)
