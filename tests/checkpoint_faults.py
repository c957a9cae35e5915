"""Helpers of the fault tests: copies of a trained run, damaged checkpoint files, a failing
checkpoint writer."""

import errno
import functools
import json
import os
import shutil

import jax
import ml_collections
from orbax.checkpoint._src.handlers import json_checkpoint_handler

from gcd_jax import sharding
from gcd_jax.models.networks import build_networks
from gcd_jax.training import train_state

DAMAGE = ("truncate", "overwrite", "delete")


def copy_run(workdir: str, target) -> str:
    """A copy of a run's checkpoints (what a test corrupts) under ``target``."""
    shutil.copytree(os.path.join(workdir, "checkpoints"), os.path.join(target, "checkpoints"))
    return str(target)


def damage(workdir: str, step: int, how: str) -> None:
    """Damages every data file of checkpoint ``step``'s state: cut to its first 64 bytes, replaced
    by 100 random bytes, or deleted. (Cut to 64 bytes, not to half: Orbax writes the arrays in no
    fixed order, and a half that still holds every EMA array whole restores for sampling, rightly.)"""
    folder = os.path.join(workdir, "checkpoints", str(step), "state", "ocdbt.process_0", "d")
    for name in os.listdir(folder):
        path = os.path.join(folder, name)
        if how == "truncate":
            os.truncate(path, min(64, os.path.getsize(path) // 2))
        elif how == "overwrite":
            with open(path, "wb") as f:
                f.write(os.urandom(100))
        else:
            os.remove(path)


def abstract_train_state(config):
    """The train state's ``ShapeDtypeStruct``s, replicated over every device (what training
    restores into); traced once per config."""
    return _abstract_train_state(config.to_json())


@functools.cache
def _abstract_train_state(config_json: str):
    config = ml_collections.ConfigDict(json.loads(config_json))
    nets = build_networks(config)
    abstract = train_state.abstract_state(nets, train_state.make_optimizer(config.optim))
    replicated = sharding.replicated(sharding.make_mesh())
    return jax.tree.map(
        lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=replicated), abstract
    )


def failing_writes(monkeypatch, step: int) -> list[str]:
    """Makes the JSON items of checkpoint ``step`` fail as a full disk does, in Orbax's
    background write; returns the list of paths that failed."""
    failed = []
    original = json_checkpoint_handler.JsonCheckpointHandler._save_fn

    async def save_fn(self, x, directory):
        if f"{os.sep}{step}.orbax-checkpoint-tmp" in str(directory):
            failed.append(str(directory))
            raise OSError(errno.ENOSPC, "No space left on device", str(directory))
        return await original(self, x, directory)

    monkeypatch.setattr(json_checkpoint_handler.JsonCheckpointHandler, "_save_fn", save_fn)
    return failed
