"""``python -m gcd_jax.convert``: the authors' PyTorch checkpoints -> gcd_jax checkpoints
(``gcd_jax.convert.authors``), with the runtime profile of ``run.py``."""

import time

from absl import app, flags, logging
from ml_collections import config_flags

from gcd_jax import errors
from gcd_jax.cli import runtime
from gcd_jax.convert import authors


def main() -> None:
    """``python -m gcd_jax.convert``: the flags exist only when the module runs as a program, so
    importing it next to ``run.py`` defines no flag twice."""
    config = config_flags.DEFINE_config_file(
        "config",
        None,
        "Experiment config of the model, e.g. experiments/cityscapes.py.",
        lock_config=True,
    )
    path = flags.DEFINE_string("checkpoint", None, "The authors' trainer checkpoint (.pt).")
    workdir = flags.DEFINE_string("workdir", None, "New workdir for the converted checkpoint.")
    unet = flags.DEFINE_integer(
        "unet",
        None,
        "U-Net of the cascade, 1 = base, 2 = SR (default: 2 if config.model.sr else 1).",
    )
    ema = flags.DEFINE_bool(
        "ema", True, "ema_params = the EMA weights (--no-ema / --noema: the raw weights)."
    )
    verbose = flags.DEFINE_bool(
        "verbose", False, "Print the traceback of a user error too (else one line, exit 2)."
    )
    flags.mark_flags_as_required(["config", "checkpoint", "workdir"])

    def run() -> None:
        start = time.perf_counter()
        summary = authors.convert(path.value, config.value, workdir.value, unet.value, ema.value)
        for line in summary.report:
            logging.warning("setting differs: %s", line)
        print(
            f"U-Net {summary.unet} of {path.value}, step {summary.step}: "
            f"{summary.num_tensors} tensors, {summary.num_params:,} parameters mapped; params = "
            f"{summary.params_from}, ema_params = {summary.ema_params_from}; "
            f"{summary.directory} written in {time.perf_counter() - start:.1f} s."
        )
        for line in summary.report:
            print(f"  differs from the config: {line}")

    def main(argv: list[str]) -> int:
        if len(argv) > 1:
            raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
        runtime.install()
        return errors.run_cli(run, verbose.value)

    def parse(argv: list[str]) -> list[str]:  # the project's parser, also taking --no-ema
        return errors.parse_flags(["--noema" if a == "--no-ema" else a for a in argv])

    app.run(main, flags_parser=parse)
