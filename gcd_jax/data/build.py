"""Builds the dataset an experiment config selects, without the TFDS command-line tool.

    python -m gcd_jax.data.build --config=experiments/cityscapes.py \\
        --config.data.manual_dir=/data/cityscapes [--config.data.data_dir=/data/tfds]

The builder, its stored-resolution config and data_dir come from `config.data`, exactly as
training reads them. (TFDS 4.9's `tfds build` works too but needs apache_beam just to start.)
"""

from absl import app, flags, logging
from ml_collections import config_flags

from gcd_jax.data import sources

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file.")


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    builder = sources.ensure_built(_CONFIG.value)
    for split, info in builder.info.splits.items():
        logging.info("%s %s: %d examples", builder.data_dir, split, info.num_examples)


if __name__ == "__main__":
    flags.mark_flags_as_required(["config"])
    app.run(main)
