"""TFDS builder for the embedded demo scenes (see `scenes.py`): generated, never downloaded."""

import dataclasses
from collections.abc import Iterator

import tensorflow_datasets as tfds

from gcd_jax.data import builder_lib, scenes

DEFAULT_NUM_TRAIN = 4096


@dataclasses.dataclass(eq=False)
class DemoConfig(tfds.core.BuilderConfig):
    """Size and seed of a demo data set; examples are pure functions of (seed, split, index).

    Attributes:
      num_train: training scenes.
      num_validation: validation scenes.
      seed: seed of the scene generator.
    """

    num_train: int = DEFAULT_NUM_TRAIN
    num_validation: int = scenes.num_validation(DEFAULT_NUM_TRAIN)
    seed: int = scenes.SEED


def demo_config(num_train: int, builder: type | None = None) -> DemoConfig:
    """The config of a demo set (of `builder`, default DemoScenes) with `num_train` scenes and
    `scenes.num_validation` validation ones."""
    if num_train == DEFAULT_NUM_TRAIN:
        return (builder or DemoScenes).BUILDER_CONFIGS[0]
    return DemoConfig(
        name=f"n{num_train}",
        num_train=num_train,
        num_validation=scenes.num_validation(num_train),
        description=f"{num_train} training scenes",
    )


class DemoScenes(builder_lib.ArrayRecordByDefault, tfds.core.GeneratorBasedBuilder):
    """32x32 scenes of coloured objects on textured backgrounds, their layouts and captions."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release: 8 classes, 3 captions per scene."}
    BUILDER_CONFIGS = [
        DemoConfig(name=f"n{DEFAULT_NUM_TRAIN}", description=f"{DEFAULT_NUM_TRAIN} training scenes")
    ]

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=(
                "Procedural 32x32 scenes: one to four objects (7 classes, one flat colour each) "
                "over a textured grey background, the layout, and captions naming every object "
                "with its size and position."
            ),
            features=builder_lib.example_features((scenes.SIZE, scenes.SIZE, 3), "png"),
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager) -> dict:
        counts = {"train": self.builder_config.num_train}
        counts["validation"] = self.builder_config.num_validation
        return {split: self._generate_examples(split, n) for split, n in counts.items()}

    def _generate_examples(self, split: str, count: int) -> Iterator[tuple[int, dict]]:
        for index in range(count):
            yield index, scenes.named_scene(self.example, self.builder_config.seed, split, index)

    @staticmethod
    def example(seed: int, stream: int, index: int) -> dict:
        return scenes.demo_example(seed, stream, index)


class DemoShapeScenes(DemoScenes):
    """The 'demo_shapes' variant: the class is the shape, colours drawn independently of it."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release: 7 shape classes sharing 7 colours."}
    BUILDER_CONFIGS = [
        DemoConfig(name=f"n{DEFAULT_NUM_TRAIN}", description=f"{DEFAULT_NUM_TRAIN} training scenes")
    ]

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=(
                "Procedural 32x32 scenes: one to four objects (7 shape classes, each object in one "
                "of 7 colours drawn independently of its shape) over a textured grey background, "
                "the layout, and captions naming every object's shape with its size and position."
            ),
            features=builder_lib.example_features((scenes.SIZE, scenes.SIZE, 3), "png"),
        )

    @staticmethod
    def example(seed: int, stream: int, index: int) -> dict:
        return scenes.shape_example(seed, stream, index)
