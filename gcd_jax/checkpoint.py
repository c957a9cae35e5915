"""Orbax checkpoints of a training run: the train state, the config and the data position.

Checkpoints live in ``{workdir}/checkpoints/{step}/`` as three named items: ``state`` (the
``TrainState`` pytree), ``config`` (the experiment config as JSON) and ``data`` (the index of the
next training batch). Saving is asynchronous; ``close`` waits for the last save.
"""

import os
from typing import Any

import jax
import ml_collections
import orbax.checkpoint as ocp

# Config fields that fix the shapes of the saved state: a checkpoint made with other values cannot
# be restored into this run.
_STRUCTURAL = ("model", "text", "data.image_size", "data.num_classes", "optim.grad_clip")


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
    fields = sorted(
        k
        for k in old.keys() | new.keys()
        if any(k == p or k.startswith(p + ".") for p in _STRUCTURAL)
    )
    return [
        f"{k}: checkpoint {old.get(k, '<absent>')!r}, config {new.get(k, '<absent>')!r}"
        for k in fields
        if old.get(k) != new.get(k) and not k.startswith("text.drop_prob")
    ]


def _tuples(tree: Any) -> Any:
    """JSON lists back to the tuples the configs use (module fields must be hashable)."""
    if isinstance(tree, dict):
        return {k: _tuples(v) for k, v in tree.items()}
    if isinstance(tree, list):
        return tuple(_tuples(v) for v in tree)
    return tree


def read_config(workdir: str, step: int | None = None) -> ml_collections.ConfigDict:
    """The experiment config saved with the checkpoint at ``step`` (default: latest) of
    ``workdir``; FileNotFoundError when there is none."""
    directory = os.path.abspath(os.path.join(workdir, "checkpoints"))
    if not os.path.isdir(directory):
        raise FileNotFoundError(
            f"No checkpoints in {directory}: is {workdir!r} a training workdir?"
        )
    manager = ocp.CheckpointManager(directory, item_names=("state", "config", "data"))
    try:
        step = manager.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"No checkpoint in {directory}.")
        saved = manager.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))
    finally:
        manager.close()
    return ml_collections.ConfigDict(_tuples(saved["config"]))


class Checkpointer:
    """Keeps the last ``config.train.keep_checkpoints`` checkpoints of one workdir."""

    def __init__(self, workdir: str, config: ml_collections.ConfigDict):
        self._config = config.to_dict()
        self._manager = ocp.CheckpointManager(
            os.path.abspath(os.path.join(workdir, "checkpoints")),
            options=ocp.CheckpointManagerOptions(
                max_to_keep=config.train.keep_checkpoints,
                enable_async_checkpointing=True,
                create=True,
            ),
            item_names=("state", "config", "data"),
        )

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def saved_config(self, step: int) -> dict:
        return self._manager.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))[
            "config"
        ]

    def _check_compatible(self, step: int) -> None:
        differences = structural_differences(self.saved_config(step), self._config)
        if differences:
            raise ValueError(
                f"The checkpoint at step {step} in {self._manager.directory} was made with a config "
                "whose model does not match this one:\n  "
                + "\n  ".join(differences)
                + "\nUse another --workdir, or the checkpoint's settings."
            )

    def restore(self, abstract_state: Any, step: int | None = None) -> tuple[Any, int]:
        """The state at ``step`` (default: latest) laid out like ``abstract_state``, and the data
        position. Raises a ``ValueError`` naming the differing fields when the checkpoint was made
        with an incompatible config."""
        step = self.latest_step() if step is None else step
        self._check_compatible(step)
        restored = self._manager.restore(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract_state), data=ocp.args.JsonRestore()
            ),
        )
        return restored["state"], int(restored["data"]["next_batch"])

    def restore_params(self, abstract_params: Any, step: int, field: str = "ema_params") -> Any:
        """Only ``state.{field}`` (``'ema_params'`` or ``'params'``) of the checkpoint at ``step``,
        laid out like ``abstract_params`` (``ShapeDtypeStruct`` leaves, with shardings or not):
        an Orbax partial restore that reads neither the optimizer state nor the other copy of the
        parameters."""
        self._check_compatible(step)
        target = {field: abstract_params}

        def restore_args(leaf):
            sharding = getattr(leaf, "sharding", None)
            return ocp.ArrayRestoreArgs(dtype=leaf.dtype, sharding=sharding)

        args = ocp.args.PyTreeRestore(
            item=target, restore_args=jax.tree.map(restore_args, target), partial_restore=True
        )
        restored = self._manager.restore(step, args=ocp.args.Composite(state=args))
        return restored["state"][field]

    def save(self, step: int, state: Any, next_batch: int) -> None:
        """Starts an asynchronous save (replacing nothing: one checkpoint per step)."""
        if step in self._manager.all_steps():
            return
        self._manager.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(state),
                config=ocp.args.JsonSave(self._config),
                data=ocp.args.JsonSave({"next_batch": next_batch}),
            ),
            force=True,
        )

    def close(self) -> None:
        self._manager.wait_until_finished()
        self._manager.close()
