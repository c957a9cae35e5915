"""TFDS builder for Cityscapes (fine annotations) with captions.

Reads the official zips or their extracted folders from the manual directory, maps label ids to the
20-class train-id table (19 train ids + 19 = unlabeled) and attaches captions: from
`{split}_captions.jsonl` when present, else generated from the layout with the reference template.
The authors' caption files (`caption_files/cityscapes/{N}_captions.jsonl`) add the splits
`authors_{N}`: exactly the images they name, wherever they live (train/ or val/).
"""

import math
import os
import zipfile
import zlib
from collections.abc import Iterator

import numpy as np
import tensorflow_datasets as tfds

from gcd_jax.data import builder_lib, classes
from gcd_jax.errors import InputError, MissingError

_IMAGES, _LABELS = "leftImg8bit", "gtFine"
_ZIPS = {_IMAGES: "leftImg8bit_trainvaltest.zip", _LABELS: "gtFine_trainvaltest.zip"}
_SPLITS = {"train": "train", "validation": "val"}  # TFDS split -> Cityscapes folder.
# Caption files looked for, per TFDS split, in the manual directory (first found wins).
_CAPTION_FILES = {
    "train": ("train_captions.jsonl",),
    "validation": ("val_captions.jsonl", "validation_captions.jsonl"),
}
CAPTION_PREFIX = "An image of an urban street view"
NUM_GENERATED_CAPTIONS = 5  # Orderings of the class list per image when captions are generated.

_EXPECTED = f"""\
  {_ZIPS[_IMAGES]} and {_ZIPS[_LABELS]} (the official zips, https://www.cityscapes-dataset.com),
  or their extracted folders:
    {_IMAGES}/{{train,val}}/<city>/<city>_<seq>_<frame>_{_IMAGES}.png
    {_LABELS}/{{train,val}}/<city>/<city>_<seq>_<frame>_{_LABELS}_labelIds.png
  and optionally captions {{train,val}}_captions.jsonl, one {{"file_name": ..., "text": [...]}} a line,
  and the authors' caption files caption_files/cityscapes/{{25,50,100}}_captions.jsonl (splits
  authors_25, authors_50, authors_100: the images they name, from train/ or val/)."""


def join_names(names: list[str]) -> str:
    """['A', 'B', 'C'] -> 'A, B and C'."""
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def layout_caption(train_ids: list[int]) -> str:
    """The reference caption naming the classes `train_ids` in the given order."""
    if not train_ids:
        return CAPTION_PREFIX + "."
    return (
        f"{CAPTION_PREFIX} with {join_names([classes.CITYSCAPES_PLURALS[k] for k in train_ids])}."
    )


def generated_captions(label: np.ndarray, file_name: str) -> list[str]:
    """Captions listing every class present in `label` (uint8 train ids [H, W]), unlabeled excluded.

    Up to NUM_GENERATED_CAPTIONS distinct orderings of the class list, drawn from a generator
    seeded by the file name, so a rebuild gives the same captions.
    """
    present = [int(k) for k in np.unique(label) if k != classes.CITYSCAPES_UNLABELED]
    count = min(NUM_GENERATED_CAPTIONS, math.factorial(len(present)))
    rng = np.random.default_rng(zlib.crc32(file_name.encode()))
    orderings = []
    while len(orderings) < count:
        order = rng.permutation(present).tolist()
        if order not in orderings:
            orderings.append(order)
    return [layout_caption(order) for order in orderings]


def map_label_ids(label_ids: np.ndarray, where: str) -> np.ndarray:
    """uint8 label ids [H, W] -> uint8 train ids [H, W]; ValueError naming `where` on unknown ids."""
    train_ids = classes.cityscapes_id_lut()[label_ids]
    if np.any(train_ids < 0):
        bad = sorted(set(np.unique(label_ids[train_ids < 0]).tolist()))
        raise InputError(
            f"Label map {where} holds values {bad} outside the Cityscapes label ids 0..33 "
            "(and 255 = license plate)."
        )
    return train_ids.astype(np.uint8)


class _Folder:
    """Files under a directory, named by their path relative to it."""

    def __init__(self, root: str, top: str):
        self.root = root
        self.names = {
            os.path.relpath(os.path.join(d, f), root).replace(os.sep, "/")
            for d, _, files in os.walk(os.path.join(root, top))
            for f in files
        }

    def read(self, name: str) -> bytes:
        return builder_lib.read_bytes(os.path.join(self.root, name))

    def where(self, name: str) -> str:
        return os.path.join(self.root, name)


class _Zip:
    """Members of a zip archive, read in the calling thread."""

    def __init__(self, path: str):
        try:
            self.archive = zipfile.ZipFile(path)
        except (OSError, zipfile.BadZipFile) as error:
            raise InputError(f"Cannot open zip archive {path}: {error}") from error
        self.path = path
        self.names = set(self.archive.namelist())

    def read(self, name: str) -> bytes:
        return self.archive.read(name)

    def where(self, name: str) -> str:
        return f"{self.path}:{name}"


def _open_files(root: str, top: str) -> _Folder | _Zip:
    if os.path.isdir(os.path.join(root, top)):
        return _Folder(root, top)
    if os.path.isfile(os.path.join(root, _ZIPS[top])):
        return _Zip(os.path.join(root, _ZIPS[top]))
    raise MissingError(
        f"Cityscapes: neither {os.path.join(root, _ZIPS[top])} nor {os.path.join(root, top)}/ "
        f"exists. The manual directory must hold:\n{_EXPECTED}"
    )


read_captions_file = builder_lib.read_captions_file
# The reference's loader (datasets/cityscapes.py) reads these cities from val/, all others from
# train/; the builder finds each named image in whichever of the two holds it.
_SEARCHED_FOLDERS = ("train", "val")


class CityscapesCaptions(builder_lib.ArrayRecordByDefault, tfds.core.GeneratorBasedBuilder):
    """Cityscapes fine annotations (20 classes) with captions, at a stored resolution."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release: train ids + unlabeled, captions, stored sizes."}
    BUILDER_CONFIGS = builder_lib.resolution_configs(
        {"256x512": (256, 512), "128x256": (128, 256), "full": None}
    )
    MANUAL_DOWNLOAD_INSTRUCTIONS = "Place in the manual directory:\n" + _EXPECTED

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=(
                "Cityscapes leftImg8bit images with gtFine layouts mapped to the 19 train ids "
                "plus 19 = unlabeled, and captions listing the classes present."
            ),
            features=builder_lib.example_features((None, None, 3), "png"),
            homepage="https://www.cityscapes-dataset.com",
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager) -> dict:
        root = builder_lib.manual_dir(dl_manager, _EXPECTED)
        images, labels = _open_files(root, _IMAGES), _open_files(root, _LABELS)
        splits = {
            split: self._generate_examples(
                images, labels, self._folder_images(images, folder), self._captions(root, split)
            )
            for split, folder in _SPLITS.items()
        }
        for split, path in builder_lib.authors_caption_files(root, "cityscapes").items():
            captions = read_captions_file(path)
            names = self._named_images(images, sorted(captions), path)
            splits[split] = self._generate_examples(images, labels, names, captions)
        return splits

    @staticmethod
    def _folder_images(images, folder: str) -> list[str]:
        suffix = f"_{_IMAGES}.png"
        names = sorted(
            n for n in images.names if n.startswith(f"{_IMAGES}/{folder}/") and n.endswith(suffix)
        )
        if not names:
            raise MissingError(
                f"Cityscapes: no images {images.where(f'{_IMAGES}/{folder}/<city>/*{suffix}')}."
            )
        return names

    @staticmethod
    def _named_images(images, file_names: list[str], caption_path: str) -> list[str]:
        """The members of `images` for `file_names` (<city>_..._leftImg8bit.png), each looked for
        in train/<city>/ and val/<city>/, in file-name order (the reference sorts them)."""
        names = []
        for file_name in file_names:
            city = file_name.split("_")[0]
            candidates = [f"{_IMAGES}/{folder}/{city}/{file_name}" for folder in _SEARCHED_FOLDERS]
            found = [c for c in candidates if c in images.names]
            if not found:
                raise MissingError(
                    f"Cityscapes: {caption_path} names {file_name}, found neither at "
                    f"{images.where(candidates[0])} nor at {images.where(candidates[1])}."
                )
            names.append(found[0])
        return names

    def _captions(self, root: str, split: str) -> dict[str, list[str]] | None:
        for name in _CAPTION_FILES[split]:
            if os.path.isfile(os.path.join(root, name)):
                return read_captions_file(os.path.join(root, name))
        return None

    def _generate_examples(
        self, images, labels, names: list[str], captions: dict[str, list[str]] | None
    ) -> Iterator[tuple[str, dict]]:
        suffix = f"_{_IMAGES}.png"

        def raw_pairs():
            for name in names:
                label_name = (
                    _LABELS + name[len(_IMAGES) : -len(suffix)] + f"_{_LABELS}_labelIds.png"
                )
                if label_name not in labels.names:
                    raise MissingError(
                        f"Cityscapes: no label map {labels.where(label_name)} for image "
                        f"{images.where(name)}."
                    )
                yield name, label_name, images.read(name), labels.read(label_name)

        def example(pair):
            name, label_name, image_bytes, label_bytes = pair
            return self._example(
                images.where(name), labels.where(label_name), image_bytes, label_bytes, captions
            )

        yield from builder_lib.ordered_parallel_map(example, raw_pairs())

    def _example(self, image_where, label_where, image_bytes, label_bytes, captions):
        image = builder_lib.decode_image(image_bytes, image_where)
        label = map_label_ids(builder_lib.decode_label(label_bytes, label_where), label_where)
        if image.shape[:2] != label.shape:
            raise InputError(
                f"Image {image_where} is {image.shape[:2]} but label map {label_where} is "
                f"{label.shape}."
            )
        file_name = os.path.basename(image_where)
        if captions is None:  # Generated from the full-resolution layout, as the reference did.
            texts = generated_captions(label, file_name)
        else:
            texts = captions.get(file_name, [])
        size = self.builder_config.size
        return file_name, {
            "image": builder_lib.resize_image(image, size),
            "label": builder_lib.resize_label(label, size),
            "captions": texts,
            "file_name": file_name,
        }
