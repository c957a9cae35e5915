"""Orbax checkpoints of a training run: the train state, the config and the data position.

Checkpoints live in ``{workdir}/checkpoints/{step}/`` as three named items: ``state`` (the
``TrainState`` pytree), ``config`` (the experiment config as JSON) and ``data`` (the index of the
next training batch). Saving is asynchronous; the next save and ``close`` wait for it.

Faults (``docs/errors.md``): a checkpoint that cannot be read back raises
``DamagedCheckpointError`` naming the step, the root cause and the other steps; training resumes
from the newest step that restores and moves the damaged ones aside
(``checkpoints/{step}.damaged-{time}``, never deleted). A save that fails raises
``CheckpointWriteError`` at the next save or at ``close``; the checkpoints before it stay.
"""

import functools
import logging as logging_lib
import os
import sys
import threading
import time
from typing import Any

import jax
import ml_collections
import orbax.checkpoint as ocp
from absl import logging
from jax.experimental import multihost_utils

from gcd_jax.errors import (
    CheckpointError,
    CheckpointWriteError,
    DamagedCheckpointError,
    MissingError,
    UserError,
    root_cause,
    verbose,
)

ITEMS = ("state", "config", "data")

# Config fields that fix the shapes of the saved state: a checkpoint made with other values cannot
# be restored into this run.
_STRUCTURAL = ("model", "text", "data.image_size", "data.num_classes", "optim.grad_clip")
# Fields inside those that change how the model runs, not its parameters: a checkpoint restores
# whatever they say (e.g. sampling in bfloat16, or training on with remat, from a float32 run).
_NOT_STRUCTURAL = ("text.drop_prob", "model.dtype", "model.remat")
# Structural fields added after checkpoints existed: absent from a saved config means this value.
_ABSENT_MEANS = {"model.scan_blocks": False}


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, dict):
        out = {}
        for k, v in tree.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: list(tree) if isinstance(tree, tuple | list) else tree}


def structural_differences(saved: dict, current: dict) -> list[str]:
    """``'field: checkpoint X, config Y'`` for every structural field that differs."""
    old, new = _flatten(saved), _flatten(current)
    for flat in (old, new):
        for k, v in _ABSENT_MEANS.items():
            flat.setdefault(k, v)
    if all(
        n <= 1 for n in [*old.get("model.num_res_blocks", []), *new.get("model.num_res_blocks", [])]
    ):
        old.pop("model.scan_blocks")  # no level has blocks to stack: the same parameter layout
        new.pop("model.scan_blocks")
    fields = sorted(
        k
        for k in old.keys() | new.keys()
        if any(k == p or k.startswith(p + ".") for p in _STRUCTURAL)
    )
    return [
        f"{k}: checkpoint {old.get(k, '<absent>')!r}, config {new.get(k, '<absent>')!r}"
        for k in fields
        if old.get(k) != new.get(k) and k not in _NOT_STRUCTURAL
    ]


def _tuples(tree: Any) -> Any:
    """JSON lists back to the tuples the configs use (module fields must be hashable)."""
    if isinstance(tree, dict):
        return {k: _tuples(v) for k, v in tree.items()}
    if isinstance(tree, list):
        return tuple(_tuples(v) for v in tree)
    return tree


class _OrbaxTracebacks(logging_lib.Filter):
    """Orbax logs each failed background write at ERROR with its traceback, before the failure
    reaches the caller as a ``CheckpointWriteError`` naming the root cause: keeps Orbax's message
    line, drops the traceback unless ``errors.verbose()``."""

    def filter(self, record: logging_lib.LogRecord) -> bool:
        if record.exc_info and f"{os.sep}orbax{os.sep}" in record.pathname and not verbose():
            record.exc_info, record.exc_text = None, None
        return True


def _is_orbax_leftover(unraisable) -> bool:
    """An unraisable exception left by a failed read or write: ``RuntimeError: Event loop is
    closed`` from a TensorStore callback, or the read error of an Orbax coroutine closed after
    the restore had failed."""
    error, code = unraisable.exc_value, getattr(unraisable.object, "cr_code", None)
    if isinstance(error, RuntimeError) and str(error) == "Event loop is closed":
        return True
    return code is not None and f"{os.sep}orbax{os.sep}" in code.co_filename


def _drop_orbax_leftovers(previous):
    """A ``sys.unraisablehook`` that drops ``_is_orbax_leftover`` exceptions and passes every
    other one to ``previous``."""

    def hook(unraisable):
        if not _is_orbax_leftover(unraisable):
            previous(unraisable)

    hook.drops_orbax_leftovers = True
    return hook


def quiet_orbax_failures() -> None:
    """Process-wide; installed (once) by the entry points (``gcd_jax.cli.runtime``) before any
    checkpoint I/O, as the noise can come before the failure
    surfaces. After a failed read or write, the TensorStore operations still in flight finish
    into Orbax's closed asyncio loop and each reports ``RuntimeError: Event loop is closed``
    through ``sys.unraisablehook`` (and the restore's abandoned coroutines their read errors):
    hundreds of tracebacks that bury the real error. Those are dropped, and Orbax's logged
    tracebacks of failed writes (see ``_OrbaxTracebacks``)."""
    if not getattr(sys.unraisablehook, "drops_orbax_leftovers", False):
        sys.unraisablehook = _drop_orbax_leftovers(sys.unraisablehook)
    absl_logger = logging_lib.getLogger("absl")
    if not any(isinstance(f, _OrbaxTracebacks) for f in absl_logger.filters):
        absl_logger.addFilter(_OrbaxTracebacks())


def _settle_background_writes(timeout_s: float = 60.0) -> None:
    """After one item of a save fails, Orbax stops waiting but the other items' writes go on in
    its threads; waits for them (at most ``timeout_s``), else they fail noisily at exit."""
    deadline = time.monotonic() + timeout_s
    for thread in threading.enumerate():
        if thread is not threading.current_thread() and type(thread).__module__.startswith(
            "orbax."
        ):
            thread.join(max(0.0, deadline - time.monotonic()))


def _steps_text(steps: list[int]) -> str:
    return ", ".join(f"--step {s}" for s in steps) if steps else "none"


def _resolve_step(manager: ocp.CheckpointManager, step: int | None, workdir: str) -> int:
    """``step``, or the latest one when None; ``MissingError`` when there is no such checkpoint."""
    steps = sorted(manager.all_steps())
    if not steps:
        raise MissingError(
            f"No checkpoint in {manager.directory}: train first "
            f"(python run.py --config ... --workdir {workdir})."
        )
    if step is None:
        return steps[-1]
    if step not in steps:
        raise MissingError(
            f"No checkpoint at step {step} in {manager.directory}; available: {_steps_text(steps)}."
        )
    return step


def _restore(manager: ocp.CheckpointManager, step: int, **items) -> dict:
    """``manager.restore`` of the named items; ``DamagedCheckpointError`` with the root cause when
    the files cannot be read back."""
    try:
        return manager.restore(step, args=ocp.args.Composite(**items))
    except (UserError, MemoryError):
        raise
    except Exception as error:  # Orbax / TensorStore raise many types for damaged files.
        cause = root_cause(error).rstrip(".")
        message = f"Checkpoint {step} in {manager.directory} cannot be restored: {cause}."
        raise DamagedCheckpointError(message, step, cause) from error


def _open_manager(workdir: str) -> ocp.CheckpointManager:
    """A read-only manager of an existing ``{workdir}/checkpoints``; ``MissingError`` otherwise."""
    directory = os.path.abspath(os.path.join(workdir, "checkpoints"))
    if not os.path.isdir(directory):
        raise MissingError(
            f"No checkpoint in {directory}: is {workdir!r} a training workdir? Train first "
            f"(python run.py --config ... --workdir {workdir})."
        )
    return ocp.CheckpointManager(directory, item_names=ITEMS)


def read_config(workdir: str, step: int | None = None) -> ml_collections.ConfigDict:
    """The experiment config saved with the checkpoint at ``step`` (default: latest) of
    ``workdir``; ``MissingError`` when there is none, ``DamagedCheckpointError`` when unreadable."""
    manager = _open_manager(workdir)
    try:
        step = _resolve_step(manager, step, workdir)
        saved = _restore(manager, step, config=ocp.args.JsonRestore())
    finally:
        manager.close()
    return ml_collections.ConfigDict(_tuples(saved["config"]))


@functools.cache
def save_replicated_arrays_whole() -> None:
    """Process-wide, called by the entry points (``gcd_jax.cli.runtime``). On CPU, where a host's devices share its memory, writes each replicated array from one
    replica, as Orbax does on GPU. Orbax's replica-parallel save (its default elsewhere) splits
    the writing of a replicated array over its replicas, which on CPU buys nothing and compiles a
    slice program per array shape and device: on 8 fake CPU devices half the time of the tests'
    4-step demo run (77 vs 39 s). Orbax's handler registry is global: done once per process,
    without the warning Orbax logs for any override."""
    if jax.default_backend() != "cpu":
        return
    handler = ocp.type_handlers.ArrayHandler(use_replica_parallel=False)
    absl_logger = logging_lib.getLogger("absl")
    absl_logger.addFilter(_not_an_override)
    try:
        ocp.type_handlers.register_type_handler(jax.Array, handler, override=True)
    finally:
        absl_logger.removeFilter(_not_an_override)


def _not_an_override(record: logging_lib.LogRecord) -> bool:
    return "Type handler registry" not in record.getMessage()


class Checkpointer:
    """Keeps the last ``config.train.keep_checkpoints`` checkpoints of one workdir.

    ``create=False`` (sampling, evaluation) opens an existing ``checkpoints/`` folder only.
    """

    def __init__(self, workdir: str, config: ml_collections.ConfigDict, create: bool = True):
        self._workdir = workdir
        self._config = config.to_dict()
        if create:
            self._manager = ocp.CheckpointManager(
                os.path.abspath(os.path.join(workdir, "checkpoints")),
                options=ocp.CheckpointManagerOptions(
                    max_to_keep=config.train.keep_checkpoints,
                    enable_async_checkpointing=True,
                    create=True,
                ),
                item_names=ITEMS,
            )
        else:
            self._manager = _open_manager(workdir)
        self._pending: int | None = None  # The step of a save that may still be running.

    @property
    def directory(self) -> str:
        return str(self._manager.directory)

    def steps(self) -> list[int]:
        return sorted(self._manager.all_steps())

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def resolve_step(self, step: int | None = None) -> int:
        """``step`` or the latest; ``MissingError`` listing the available steps otherwise."""
        return _resolve_step(self._manager, step, self._workdir)

    def saved_config(self, step: int) -> dict:
        return _restore(self._manager, step, config=ocp.args.JsonRestore())["config"]

    def _check_compatible(self, step: int) -> None:
        differences = structural_differences(self.saved_config(step), self._config)
        if differences:
            raise CheckpointError(
                f"The checkpoint at step {step} in {self.directory} was made with a config "
                "whose model does not match this one: "
                + "; ".join(differences)
                + ". Use another --workdir, or the checkpoint's settings."
            )

    def restore(self, abstract_state: Any, step: int | None = None) -> tuple[Any, int]:
        """The state at ``step`` (default: latest) laid out like ``abstract_state``, and the data
        position. ``CheckpointError`` naming the differing fields when the checkpoint was made
        with an incompatible config, ``DamagedCheckpointError`` when it cannot be read back."""
        step = self.resolve_step(step)
        self._check_compatible(step)
        restored = _restore(
            self._manager,
            step,
            state=ocp.args.StandardRestore(abstract_state),
            data=ocp.args.JsonRestore(),
        )
        return restored["state"], int(restored["data"]["next_batch"])

    def restore_newest(self, abstract_state: Any) -> tuple[Any, int] | None:
        """Training's resume: ``restore`` of the newest step that restores, None when there is
        no checkpoint. Each newer step that cannot be read back is moved aside (never deleted)
        with one warning naming it and the cause; ``CheckpointError`` listing every step and
        cause when none restores (then nothing is moved)."""
        failures = []
        for step in reversed(self.steps()):
            try:
                restored = self.restore(abstract_state, step)
            except DamagedCheckpointError as error:
                failures.append(error)
                continue
            for error in failures:
                aside = self._set_aside(error.step)
                logging.warning(
                    "Checkpoint %d cannot be restored (%s); moved it to %s and resumed from "
                    "checkpoint %d.",
                    error.step,
                    error.cause,
                    aside,
                    step,
                )
            return restored
        if failures:
            tried = "; ".join(f"step {e.step}: {e.cause}" for e in failures)
            raise CheckpointError(
                f"No checkpoint in {self.directory} can be restored ({tried}). Nothing was moved "
                "or deleted: move the damaged step folders out of it to start from scratch, or "
                "use another --workdir."
            )
        return None

    def _set_aside(self, step: int) -> str:
        """Renames ``{step}/`` to ``{step}.damaged-{time}/``, a name Orbax does not list."""
        source = self._manager.directory / str(step)
        target = source.parent / f"{step}.damaged-{time.strftime('%Y%m%d-%H%M%S')}"
        if jax.process_index() == 0:
            source.rename(target)
        if jax.process_count() > 1:
            multihost_utils.sync_global_devices(f"gcd_jax set aside checkpoint {step}")
        self._manager.reload()
        return str(target)

    def restore_params(self, abstract_params: Any, step: int, field: str = "ema_params") -> Any:
        """Only ``state.{field}`` (``'ema_params'`` or ``'params'``) of the checkpoint at ``step``,
        laid out like ``abstract_params`` (``ShapeDtypeStruct`` leaves, with shardings or not):
        an Orbax partial restore that reads neither the optimizer state nor the other copy of the
        parameters. ``DamagedCheckpointError`` names the step, the cause and the other steps."""
        target = {field: abstract_params}

        def restore_args(leaf):
            sharding = getattr(leaf, "sharding", None)
            return ocp.ArrayRestoreArgs(dtype=leaf.dtype, sharding=sharding)

        args = ocp.args.PyTreeRestore(
            item=target, restore_args=jax.tree.map(restore_args, target), partial_restore=True
        )
        try:
            self._check_compatible(step)
            return _restore(self._manager, step, state=args)["state"][field]
        except DamagedCheckpointError as error:
            others = [s for s in self.steps() if s != step]
            raise DamagedCheckpointError(
                f"{error} Other checkpoints: {_steps_text(others)}.", step, error.cause
            ) from error

    def save(self, step: int, state: Any, next_batch: int) -> None:
        """Starts an asynchronous save (replacing nothing: one checkpoint per step), after
        waiting for the previous one; ``CheckpointWriteError`` when either fails."""
        if step in self._manager.all_steps():
            return
        self._finish_pending()
        try:
            self._manager.save(
                step,
                args=ocp.args.Composite(
                    state=ocp.args.StandardSave(state),
                    config=ocp.args.JsonSave(self._config),
                    data=ocp.args.JsonSave({"next_batch": next_batch}),
                ),
                force=True,
            )
        except Exception as error:
            raise self._write_error(step, error) from error
        self._pending = step

    def _finish_pending(self) -> None:
        """Waits for the running save; ``CheckpointWriteError`` if it did not commit."""
        step, self._pending = self._pending, None
        try:
            self._manager.wait_until_finished()
        except Exception as error:
            raise self._write_error(step, error) from error
        if step is not None and not (self._manager.directory / str(step)).exists():
            raise self._write_error(step, RuntimeError("its folder was not committed"))

    def _write_error(self, step: int | None, error: Exception) -> CheckpointWriteError:
        _settle_background_writes()
        self._manager.reload()
        previous = [s for s in self.steps() if s != step]
        kept = (
            f"The earlier checkpoint {previous[-1]} is intact: free space (or fix the folder's "
            "permissions) and rerun the same command to resume from it."
            if previous
            else "Free space (or fix the folder's permissions) and rerun the same command."
        )
        cause = root_cause(error).rstrip(".")
        return CheckpointWriteError(
            f"Writing checkpoint {step} to {self.directory} failed: {cause}. {kept}"
        )

    def close(self) -> None:
        """Waits for the last save (``CheckpointWriteError`` if it failed) and closes."""
        try:
            self._finish_pending()
        finally:
            self._manager.close()
