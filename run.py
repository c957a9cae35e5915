"""The single entry point of gcd_jax.

    python run.py --config experiments/demo.py --workdir /tmp/demo            # train (default)
    python run.py --mode serve --config experiments/demo.py --workdir /tmp/demo    # a local page
    python run.py --mode analyze --config experiments/demo.py --workdir /tmp/demo  # feature clusters
    python run.py --config experiments/cityscapes.py --workdir gs://bucket/run \
        --config.train.global_batch_size=64 --multihost                        # a TPU pod slice

``--config`` is an ml_collections config file; ``--config.section.field=value`` overrides a field
and an unknown field is an error. The workdir holds checkpoints, logs and samples; rerunning the
same command resumes from its latest checkpoint.

A user error (bad config, missing data or weights, bad input files, no usable checkpoint) prints one
line, ``error: ...``, and exits with status 2; ``--verbose`` (or ``GCD_JAX_VERBOSE=1``) adds its
traceback. Any other exception is a bug and keeps its traceback. Causes and messages:
docs/errors.md.
"""

from gcd_jax.cli import runtime  # noqa: I001  (first: it quiets libraries not yet imported)

runtime.quiet_third_party()

import jax  # noqa: E402
from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from gcd_jax import errors  # noqa: E402
from gcd_jax.cli import analyze, evaluate, sample, serve, train  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Experiment config file, e.g. experiments/demo.py.", lock_config=True
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Checkpoints, logs and samples go here.")
_MODE = flags.DEFINE_enum(
    "mode",
    "train",
    ["train", "sample", "outpaint", "evaluate", "analyze", "serve"],
    "What to do with the config and workdir.",
)
_PROMPTS = flags.DEFINE_string(
    "prompts", "", "sample/outpaint: a file with one prompt per line, or 'prompt one;prompt two'."
)
_SEED = flags.DEFINE_integer("seed", 0, "sample/outpaint/evaluate: random seed.")
_STEP = flags.DEFINE_integer(
    "step", None, "sample/outpaint/evaluate/analyze/serve: checkpoint step (default: latest)."
)
_MULTIHOST = flags.DEFINE_bool(
    "multihost",
    False,
    "Call jax.distributed.initialize() first (TPU pod slices, multi-host GPU clusters).",
)
_IMAGE = flags.DEFINE_string(
    "image",
    "",
    "outpaint: known image (RGB file at data.image_size); SR sample: low-res start image.",
)
_LAYOUT = flags.DEFINE_string(
    "layout", "", "outpaint: known layout (label-map PNG, values < K); SR sample: low-res start."
)
_BASE_WORKDIR = flags.DEFINE_string(
    "base_workdir", "", "SR sample: the base model's workdir; samples the cascade base -> SR."
)
_SR_WORKDIR = flags.DEFINE_string(
    "sr_workdir", "", "serve: an SR model's workdir; the page gets a toggle that runs the cascade."
)
_PORT = flags.DEFINE_integer("port", 7860, "serve: the page's port on 127.0.0.1.")
_VERBOSE = flags.DEFINE_bool(
    "verbose",
    False,
    "Print the traceback of a user error too (also: GCD_JAX_VERBOSE=1); without it a user error "
    "is one line, 'error: ...', and exit status 2.",
)
flags.mark_flags_as_required(["config", "workdir"])

MODES = {
    "train": lambda config, workdir: train.train_and_evaluate(config, workdir),
    "sample": lambda config, workdir: sample.sample_main(
        config,
        workdir,
        _PROMPTS.value,
        _SEED.value,
        _STEP.value,
        _BASE_WORKDIR.value,
        _IMAGE.value,
        _LAYOUT.value,
    ),
    "outpaint": lambda config, workdir: sample.outpaint_main(
        config, workdir, _PROMPTS.value, _SEED.value, _IMAGE.value, _LAYOUT.value, _STEP.value
    ),
    "evaluate": lambda config, workdir: evaluate.evaluate_main(
        config, workdir, _SEED.value, _STEP.value
    ),
    "analyze": lambda config, workdir: analyze.analyze_main(config, workdir, _STEP.value),
    "serve": lambda config, workdir: serve.serve_main(
        config, workdir, _SR_WORKDIR.value, _PORT.value, _STEP.value
    ),
}


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    runtime.add_xla_flags(_CONFIG.value)  # before the first device use, where XLA reads them
    if _MULTIHOST.value:
        jax.distributed.initialize()
    logging.info(
        "JAX process %d / %d, local devices: %s",
        jax.process_index(),
        jax.process_count(),
        jax.local_devices(),
    )

    def run_mode():
        runtime.install(_CONFIG.value, _WORKDIR.value)
        return MODES[_MODE.value](_CONFIG.value, _WORKDIR.value)

    return errors.run_cli(run_mode, _VERBOSE.value)


if __name__ == "__main__":
    app.run(main, flags_parser=errors.parse_flags)
