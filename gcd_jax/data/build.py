"""Builds the dataset an experiment config selects, without the TFDS command-line tool.

    python -m gcd_jax.data.build --config=experiments/cityscapes.py \\
        --config.data.manual_dir=/data/cityscapes [--config.data.data_dir=/data/tfds]

The builder, its stored-resolution config and data_dir come from `config.data`, exactly as
training reads them. (TFDS 4.9's `tfds build` works too but needs apache_beam just to start.)
A user error (missing or malformed raw files, bad config) is one line, `error: ...`, and exit
status 2; `--verbose` (or `GCD_JAX_VERBOSE=1`) adds its traceback.
"""

from absl import app, flags, logging
from ml_collections import config_flags

from gcd_jax import errors
from gcd_jax.data import sources

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file.")
_VERBOSE = flags.DEFINE_bool(
    "verbose", False, "Print the traceback of a user error too (also: GCD_JAX_VERBOSE=1)."
)


def build(config) -> None:
    """Builds (or finds built) the dataset of `config.data` and logs its splits."""
    builder = sources.ensure_built(config)
    for split, info in builder.info.splits.items():
        logging.info("%s %s: %d examples", builder.data_dir, split, info.num_examples)


def main(argv: list[str]) -> int:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    return errors.run_cli(lambda: build(_CONFIG.value), _VERBOSE.value)


if __name__ == "__main__":
    flags.mark_flags_as_required(["config"])
    app.run(main, flags_parser=errors.parse_flags)
