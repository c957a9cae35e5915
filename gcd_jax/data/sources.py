"""Where a data set's examples come from: one record per data set, one opener per source.

``config.data.name`` picks the data set (its TFDS builder, held-out split, and, for the generated
demo scenes, the pure function that draws them); ``config.data.source`` picks how its examples
are read: ``'tfds'`` (the built TFDS data set, built on first use where that needs no download)
or ``'memory'`` (the generated demo scenes drawn in memory by the same function the TFDS builder
stores: the same scenes, not in TFDS's shuffled order; no TensorFlow needed).
``register_source`` adds a source.

TensorFlow Datasets is imported only by the ``'tfds'`` source.
"""

import dataclasses
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import ml_collections

from gcd_jax.data import scenes
from gcd_jax.errors import ConfigError, InputError, MissingError

if TYPE_CHECKING:
    import tensorflow_datasets as tfds


@dataclasses.dataclass(frozen=True)
class Dataset:
    """What the input pipeline needs to know of one data set.

    Attributes:
      builder: ``config.data`` -> its TFDS builder (stored resolution, data_dir).
      eval_split: the held-out split ``config.data.eval_split = ''`` stands for.
      example: generated data sets only: ``(seed, stream, index) -> scene``, the pure function
        behind every example (``scenes.STREAMS`` numbers the splits); None for data sets built
        from files.
    """

    builder: Callable[[ml_collections.ConfigDict], "tfds.core.DatasetBuilder"]
    eval_split: str
    example: Callable[[int, int, int], dict] | None = None

    @property
    def generated(self) -> bool:
        return self.example is not None


def _demo(data: ml_collections.ConfigDict) -> "tfds.core.DatasetBuilder":
    from gcd_jax.data import demo_scenes

    config = demo_scenes.demo_config(data.num_demo_examples)
    return demo_scenes.DemoScenes(config=config, data_dir=data.data_dir or None)


def _demo_shapes(data: ml_collections.ConfigDict) -> "tfds.core.DatasetBuilder":
    from gcd_jax.data import demo_scenes

    config = demo_scenes.demo_config(data.num_demo_examples, demo_scenes.DemoShapeScenes)
    return demo_scenes.DemoShapeScenes(config=config, data_dir=data.data_dir or None)


def _cityscapes(data: ml_collections.ConfigDict) -> "tfds.core.DatasetBuilder":
    from gcd_jax.data import cityscapes

    return cityscapes.CityscapesCaptions(
        config=data.builder_config or None, data_dir=data.data_dir or None
    )


def _celeba(data: ml_collections.ConfigDict) -> "tfds.core.DatasetBuilder":
    from gcd_jax.data import celeba

    return celeba.MmCelebaHq(config=data.builder_config or None, data_dir=data.data_dir or None)


DATASETS: dict[str, Dataset] = {
    "demo": Dataset(_demo, "validation", scenes.demo_example),
    "demo_shapes": Dataset(_demo_shapes, "validation", scenes.shape_example),
    "cityscapes": Dataset(_cityscapes, "validation"),
    "celeba": Dataset(_celeba, "test"),
}


def dataset(config: ml_collections.ConfigDict) -> Dataset:
    """The record of ``config.data.name``."""
    if config.data.name not in DATASETS:
        raise ConfigError(
            f"Unknown config.data.name {config.data.name!r}; expected one of {sorted(DATASETS)}."
        )
    return DATASETS[config.data.name]


def make_builder(config: ml_collections.ConfigDict) -> "tfds.core.DatasetBuilder":
    """The builder (name, stored-resolution config, data_dir) `config.data` selects."""
    return dataset(config).builder(config.data)


def build_command(config: ml_collections.ConfigDict) -> str:
    """The shell command, run from the repository root, that builds what `config.data` selects."""
    command = (
        "python -m gcd_jax.data.build --config=experiments/<experiment>.py "
        "--config.data.manual_dir=/path/to/raw/files"
    )
    return command + (
        f" --config.data.data_dir={config.data.data_dir}" if config.data.data_dir else ""
    )


def ensure_built(config: ml_collections.ConfigDict) -> "tfds.core.DatasetBuilder":
    """The prepared builder of `config.data`.

    The demo scenes are generated when missing; a real dataset is built from
    `config.data.manual_dir` when that is set, else a missing one raises FileNotFoundError with the
    command that builds it.
    """
    import tensorflow_datasets as tfds

    builder = make_builder(config)
    if builder.is_prepared():
        return builder
    if not dataset(config).generated and not config.data.manual_dir:
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
    return config.data.eval_split or dataset(config).eval_split


# ------------------------------------------------------------------ sources
Opener = Callable[[ml_collections.ConfigDict, str], Sequence[dict]]


def _open_tfds(config: ml_collections.ConfigDict, split: str) -> Sequence[dict]:
    """The built TFDS data set's split (built first if needed), as a random-access source."""
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


class GeneratedScenes(Sequence):
    """One split of a generated data set, each scene drawn on first access and kept."""

    def __init__(self, example: Callable[[int, int, int], dict], split: str, count: int):
        self._example, self._split, self._count = example, split, count
        self._cache: dict[int, dict] = {}

    def __len__(self) -> int:
        return self._count

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < self._count:
            raise IndexError(index)
        if index not in self._cache:
            self._cache[index] = scenes.named_scene(self._example, scenes.SEED, self._split, index)
        return self._cache[index]


def _open_memory(config: ml_collections.ConfigDict, split: str) -> Sequence[dict]:
    """A generated data set's split drawn in memory (captions as str, not bytes)."""
    record = dataset(config)
    if not record.generated:
        generated = sorted(name for name, d in DATASETS.items() if d.generated)
        raise ConfigError(
            f"config.data.source='memory' serves the generated data sets {generated}, not "
            f"{config.data.name!r}; use config.data.source='tfds'."
        )
    n = config.data.num_demo_examples
    counts = {"train": n, "validation": scenes.num_validation(n)}
    if split not in counts:
        raise ConfigError(
            f"config.data.source='memory' has the whole splits {sorted(counts)}, not {split!r} "
            "(config.data.train_split / eval_split)."
        )
    return GeneratedScenes(record.example, split, counts[split])


SOURCES: dict[str, Opener] = {"tfds": _open_tfds, "memory": _open_memory}


def register_source(name: str, opener: Opener) -> None:
    """Makes ``config.data.source = name`` read splits with ``opener(config, split)``, which
    returns random-access examples (dicts of NumPy arrays, as ``open_split``)."""
    SOURCES[name] = opener


def open_split(config: ml_collections.ConfigDict, split: str) -> Sequence[dict]:
    """Random-access examples of `split` from `config.data.source`: decoded dicts of NumPy
    arrays.

    An unknown source or split name is a ConfigError listing the known ones, an empty split an
    InputError (training and sampling cannot start from nothing)."""
    if config.data.source not in SOURCES:
        raise ConfigError(
            f"Unknown config.data.source {config.data.source!r}; expected one of {sorted(SOURCES)}."
        )
    return SOURCES[config.data.source](config, split)
