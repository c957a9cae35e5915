"""User errors: the exceptions the library raises for what a user gave it, and how the command
lines report them.

A ``UserError`` is a problem with the config, the data, the input files, the weights or the
checkpoints a user pointed us at; its message says what is wrong and what to do. ``run.py`` and
``python -m gcd_jax.data.build`` print it as one line, ``error: <message>``, on stderr and exit with
status 2; any other exception is a bug and keeps its traceback. ``--verbose`` (or the environment
variable ``GCD_JAX_VERBOSE=1``) prints the traceback of user errors too. Each subclass also derives
from the built-in exception it refines, so ``except ValueError`` / ``except FileNotFoundError`` keep
working. The table of causes and messages is ``docs/errors.md``.
"""

import os
import sys
import traceback
from collections.abc import Callable, Sequence

from absl import flags

# Exit status of a command line stopped by a user error (absl and argparse use 2 for bad usage).
EXIT_USER_ERROR = 2
VERBOSE_ENV = "GCD_JAX_VERBOSE"


class UserError(Exception):
    """A problem with what the user gave; its message is complete without a traceback."""


class ConfigError(UserError, ValueError):
    """A config field with a value that cannot work (names the field and what it needs)."""


class InputError(UserError, ValueError):
    """An input file or value that cannot be used: an image, a layout, a prompt, raw data."""


class MissingError(UserError, FileNotFoundError):
    """Something the run needs is absent: data, weights, a checkpoint, a file."""


class CheckpointError(UserError, ValueError):
    """A checkpoint that cannot be used: made with another model, or damaged."""


class DamagedCheckpointError(CheckpointError):
    """A checkpoint whose files cannot be read back.

    Attributes:
      step: the checkpoint's step.
      cause: one line, the innermost error Orbax / TensorStore raised.
    """

    def __init__(self, message: str, step: int, cause: str):
        super().__init__(message)
        self.step = step
        self.cause = cause


class CheckpointWriteError(UserError, OSError):
    """Writing a checkpoint failed (disk full, no permission); earlier checkpoints are intact."""


class DivergedError(UserError, FloatingPointError):
    """The training loss or a norm is not finite."""


def root_cause(error: BaseException, limit: int = 400) -> str:
    """The innermost exception of ``error``'s chain (``raise ... from`` or raised while handling),
    as one line of at most ``limit`` characters: the error the machinery started from."""
    seen = set()
    while id(error) not in seen:
        seen.add(id(error))
        inner = error.__cause__ or (None if error.__suppress_context__ else error.__context__)
        if inner is None:
            break
        error = inner
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def one_line(error: BaseException) -> str:
    """``'error: <message>'`` with the message's lines joined into one."""
    return "error: " + " ".join(line.strip() for line in str(error).splitlines() if line.strip())


_verbose_flag = False  # --verbose of the running command line (set by ``run_cli``).


def verbose() -> bool:
    """Whether user errors show their traceback: ``--verbose`` of the running ``run_cli``, or
    ``GCD_JAX_VERBOSE`` set to a value other than '', '0' or 'false'."""
    return _verbose_flag or os.environ.get(VERBOSE_ENV, "").lower() not in ("", "0", "false")


def run_cli(fn: Callable[[], object], verbose_flag: bool = False) -> int:
    """Calls ``fn()``; returns 0, or ``EXIT_USER_ERROR`` after printing a ``UserError`` as one line
    on stderr (preceded by its traceback when ``--verbose`` / ``verbose()``). Other exceptions
    propagate with their traceback."""
    global _verbose_flag
    previous, _verbose_flag = _verbose_flag, verbose_flag
    try:
        fn()
    except UserError as error:
        if verbose():
            traceback.print_exc()
        print(one_line(error), file=sys.stderr, flush=True)
        return EXIT_USER_ERROR
    finally:
        _verbose_flag = previous
    return 0


def _flag_error_line(error: flags.Error) -> str:
    """One line for a flag error. A config file that raised while loading comes with that error's
    traceback inside the message: keep the first line (the flag) and the last (the error)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    if len(lines) > 2 and any(line.startswith("Traceback") for line in lines):
        lines = [lines[0], lines[-1]]
    return "error: " + " ".join(lines)


def _unknown_field_line(error: LookupError | AttributeError, argv: Sequence[str]) -> str:
    """One line for an override of a config field that does not exist (ml_collections raises a
    bare AttributeError / KeyError naming only the missing key while it registers the override
    flags), naming the override(s) that use the key."""
    key = str(error).strip("\"'")
    names = [arg.split("=")[0] for arg in argv if arg.startswith("-")]
    culprits = [n for n in names if key in n.lstrip("-").split(".")[1:]]
    where = ", ".join(culprits) or "a --config.* override"
    return (
        f"error: {where}: the config has no field {key!r} (experiments/base.py defines every field)"
    )


def parse_flags(argv: Sequence[str], flag_values: flags.FlagValues = flags.FLAGS) -> list[str]:
    """An ``absl.app.run`` ``flags_parser``: a bad flag, an unknown config field or a config file
    that does not load is one line on stderr and exit status 2 (``--helpfull`` lists the flags)."""
    try:
        return flag_values(argv)
    except flags.Error as error:
        line = _flag_error_line(error)
    except (AttributeError, KeyError) as error:
        line = _unknown_field_line(error, argv)
    print(line + " (--helpfull lists the flags)", file=sys.stderr)
    sys.exit(EXIT_USER_ERROR)
