"""Orbax checkpoints of a training run: the train state, the config and the data position.

Checkpoints live in ``{workdir}/checkpoints/{step}/`` as three named items: ``state`` (the
``TrainState`` pytree), ``config`` (the experiment config as JSON) and ``data`` (the index of the
next training batch). Saving is asynchronous; ``close`` waits for the last save.
"""

import os
from typing import Any

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

    def restore(self, abstract_state: Any, step: int | None = None) -> tuple[Any, int]:
        """The state at ``step`` (default: latest) laid out like ``abstract_state``, and the data
        position. Raises a ``ValueError`` naming the differing fields when the checkpoint was made
        with an incompatible config."""
        step = self.latest_step() if step is None else step
        differences = structural_differences(self.saved_config(step), self._config)
        if differences:
            raise ValueError(
                f"The checkpoint at step {step} in {self._manager.directory} was made with a config "
                "whose model does not match this one:\n  "
                + "\n  ".join(differences)
                + "\nUse another --workdir, or the checkpoint's settings."
            )
        restored = self._manager.restore(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract_state), data=ocp.args.JsonRestore()
            ),
        )
        return restored["state"], int(restored["data"]["next_batch"])

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
