"""The TFDS builder behind `config.data.name`, built on first use where that needs no download."""

from collections.abc import Callable, Sequence

import ml_collections
import tensorflow_datasets as tfds

from gcd_jax.data import celeba, cityscapes, demo_scenes
from gcd_jax.errors import ConfigError, InputError, MissingError


def _demo(data: ml_collections.ConfigDict) -> tfds.core.DatasetBuilder:
    config = demo_scenes.demo_config(data.num_demo_examples)
    return demo_scenes.DemoScenes(config=config, data_dir=data.data_dir or None)


def _demo_shapes(data: ml_collections.ConfigDict) -> tfds.core.DatasetBuilder:
    config = demo_scenes.demo_config(data.num_demo_examples, demo_scenes.DemoShapeScenes)
    return demo_scenes.DemoShapeScenes(config=config, data_dir=data.data_dir or None)


def _cityscapes(data: ml_collections.ConfigDict) -> tfds.core.DatasetBuilder:
    return cityscapes.CityscapesCaptions(
        config=data.builder_config or None, data_dir=data.data_dir or None
    )


def _celeba(data: ml_collections.ConfigDict) -> tfds.core.DatasetBuilder:
    return celeba.MmCelebaHq(config=data.builder_config or None, data_dir=data.data_dir or None)


_BUILDERS: dict[str, Callable[[ml_collections.ConfigDict], tfds.core.DatasetBuilder]] = {
    "demo": _demo,
    "demo_shapes": _demo_shapes,
    "cityscapes": _cityscapes,
    "celeba": _celeba,
}
GENERATED = ("demo", "demo_shapes")  # Datasets generated on first use (nothing to download).
# The held-out split `config.data.eval_split = ''` stands for.
_EVAL_SPLITS = {
    "demo": "validation",
    "demo_shapes": "validation",
    "cityscapes": "validation",
    "celeba": "test",
}


def make_builder(config: ml_collections.ConfigDict) -> tfds.core.DatasetBuilder:
    """The builder (name, stored-resolution config, data_dir) `config.data` selects."""
    if config.data.name not in _BUILDERS:
        raise ConfigError(
            f"Unknown config.data.name {config.data.name!r}; expected one of {sorted(_BUILDERS)}."
        )
    return _BUILDERS[config.data.name](config.data)


def build_command(config: ml_collections.ConfigDict) -> str:
    """The shell command, run from the repository root, that builds what `config.data` selects."""
    command = (
        "python -m gcd_jax.data.build --config=experiments/<experiment>.py "
        "--config.data.manual_dir=/path/to/raw/files"
    )
    return command + (
        f" --config.data.data_dir={config.data.data_dir}" if config.data.data_dir else ""
    )


def ensure_built(config: ml_collections.ConfigDict) -> tfds.core.DatasetBuilder:
    """The prepared builder of `config.data`.

    The demo scenes are generated when missing; a real dataset is built from
    `config.data.manual_dir` when that is set, else a missing one raises FileNotFoundError with the
    command that builds it.
    """
    builder = make_builder(config)
    if builder.is_prepared():
        return builder
    if config.data.name not in GENERATED and not config.data.manual_dir:
        raise MissingError(
            f"Dataset {builder.name}/{builder.builder_config.name} is not built in "
            f"{builder.data_dir}. Build it once with\n  {build_command(config)}\n"
            "or set --config.data.manual_dir=/path/to/raw/files to build it on first use "
            "(see datasets/README.md)."
        )
    download_config = tfds.download.DownloadConfig(manual_dir=config.data.manual_dir or None)
    builder.download_and_prepare(download_config=download_config)
    return builder


def eval_split(config: ml_collections.ConfigDict) -> str:
    """`config.data.eval_split`, or the dataset's held-out split when that is ''."""
    return config.data.eval_split or _EVAL_SPLITS[config.data.name]


def open_split(config: ml_collections.ConfigDict, split: str) -> Sequence[dict]:
    """Random-access examples of `split` (built if needed): decoded dicts of NumPy arrays.

    An unknown split name is a ConfigError listing the dataset's splits, an empty split an
    InputError (training and sampling cannot start from nothing)."""
    builder = ensure_built(config)
    splits = sorted(builder.info.splits.keys())
    if split.split("[")[0] not in splits:
        raise ConfigError(
            f"Dataset {builder.name} has no split {split!r} (config.data.train_split / "
            f"eval_split); its splits: {splits}."
        )
    source = builder.as_data_source(split)
    if len(source) == 0:
        raise InputError(
            f"Split {split!r} of {builder.name} in {builder.data_dir} has no examples: rebuild "
            "it from raw files that hold this split (see datasets/README.md)."
        )
    return source
