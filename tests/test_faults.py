"""Faults: training past a damaged checkpoint until a checkpoint write fails (the one training run,
two steps from a copy of the session's tiny run), and the one-line report of user errors. Each
kind of damaged checkpoint and bad input is a row of docs/errors.md, tested in
tests/test_bad_input.py."""

import os
import sys
import types

import pytest
from checkpoint_faults import copy_run, damage, failing_writes
from conftest import small_demo_config

from gcd_jax import errors
from gcd_jax.cli import sample, train
from gcd_jax.inference.model import load
from gcd_jax.training import checkpoint

# pytest replaces sys.unraisablehook in each test, so the read errors of Orbax's abandoned
# coroutines after a damaged restore (dropped in a real run) would come back as warnings.
pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


def test_training_resumes_past_a_damaged_checkpoint_and_stops_when_a_write_fails(
    trained_demo, demo_data_dir, tmp_path, monkeypatch, caplog
):
    """Checkpoint 4 overwritten: training resumes from 2 (one warning; 4 kept aside), trains steps
    3 and 4, and writing checkpoint 4 fails (disk full): the run stops with one clear error and
    checkpoint 2 still restores."""
    _, workdir = trained_demo
    workdir = copy_run(workdir, tmp_path)
    damage(workdir, 4, "overwrite")
    failed = failing_writes(monkeypatch, step=4)
    config = small_demo_config(demo_data_dir)
    pattern = (
        r"Writing checkpoint 4 to .*checkpoints failed: \[Errno 28\] No space left on device"
        r".*The earlier checkpoint 2 is intact"
    )
    with pytest.raises(errors.CheckpointWriteError, match=pattern):
        train.train_and_evaluate(config, workdir)
    assert failed  # the write of checkpoint 4 was attempted after resuming from 2
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert [w for w in warnings if w.startswith("Checkpoint 4 cannot be restored")]
    names = sorted(os.listdir(os.path.join(workdir, "checkpoints")))
    assert names[0] == "2" and names[1].startswith("4.damaged-") and "4" not in names, names
    assert load(config, workdir).step == 2


# ------------------------------------------------------------------ one line per user error
def test_a_user_error_is_one_line_on_stderr_with_status_2(tmp_path, capsys):
    """What ``run.py --mode sample`` does (``run.main`` is ``errors.run_cli`` around the mode's
    function) on a workdir without checkpoints."""
    config = small_demo_config(tmp_path)
    run = str(tmp_path / "run")
    status = errors.run_cli(lambda: sample.sample_main(config, run, "a red circle", 0))
    err = capsys.readouterr().err
    assert status == errors.EXIT_USER_ERROR == 2
    assert err == (
        f"error: No checkpoint in {run}/checkpoints: is {run!r} a training workdir? Train first "
        f"(python run.py --config ... --workdir {run}).\n"
    )


def raise_missing():
    raise errors.MissingError("No checkpoint in /w/checkpoints:\n  train first.")


def test_verbose_shows_the_traceback_and_other_exceptions_keep_theirs(capsys, monkeypatch):
    assert errors.run_cli(raise_missing) == 2
    assert capsys.readouterr().err == "error: No checkpoint in /w/checkpoints: train first.\n"
    assert errors.run_cli(raise_missing, verbose_flag=True) == 2
    err = capsys.readouterr().err
    assert err.startswith("Traceback") and err.endswith(
        "error: No checkpoint in /w/checkpoints: train first.\n"
    )
    monkeypatch.setenv(errors.VERBOSE_ENV, "1")
    assert errors.run_cli(raise_missing) == 2
    assert "Traceback" in capsys.readouterr().err
    with pytest.raises(ZeroDivisionError):  # a bug: not caught, its traceback kept
        errors.run_cli(lambda: 1 / 0)
    assert errors.run_cli(lambda: None) == 0


def test_root_cause_is_the_innermost_error():
    try:
        try:
            raise ValueError('OUT_OF_RANGE: Error reading "x"\n  in OCDBT')
        except ValueError as inner:
            raise Exception("Encountered error while reading array index") from inner
    except Exception as outer:
        assert errors.root_cause(outer) == 'OUT_OF_RANGE: Error reading "x" in OCDBT'


def test_orbax_leftovers_are_dropped(monkeypatch):
    """After a failed read or write: TensorStore callbacks into Orbax's closed loop and Orbax's
    abandoned read coroutines are dropped; any other unraisable exception still reaches the
    previous hook."""
    seen = []
    monkeypatch.setattr(sys, "unraisablehook", seen.append)
    checkpoint.quiet_orbax_failures()
    checkpoint.quiet_orbax_failures()  # installed once
    orbax_coroutine = types.SimpleNamespace(
        cr_code=types.SimpleNamespace(co_filename=f"{os.sep}orbax{os.sep}checkpoint{os.sep}x.py")
    )
    for error, obj in (
        (RuntimeError("Event loop is closed"), None),
        (Exception("Encountered error while reading array index"), orbax_coroutine),
        (RuntimeError("other"), None),
    ):
        sys.unraisablehook(types.SimpleNamespace(exc_value=error, object=obj))
    assert [str(u.exc_value) for u in seen] == ["other"]
