"""TFDS builder for Multi-Modal CelebA-HQ: faces, 19-class parsing layouts, ten captions each.

Images `CelebA-HQ-img/{i}.jpg`; layouts either pre-merged (`CelebAMask-HQ-mask-anno/preprocessed/
{i}.png`, values 0..18) or merged here from the raw CelebAMask-HQ part masks
(`CelebAMask-HQ-mask-anno/{i // 2000}/{i:05d}_{part}.png`, later classes drawn over earlier ones);
captions `celeba-caption/{i}.txt`, one per line. Split: `train/filenames.pickle` and
`test/filenames.pickle` when present (the MM CelebA-HQ release), else ids < 24000 are train.
The authors' caption files (`caption_files/celeba/{N}_captions.jsonl`, N = 25, 50, 100) add the
splits `authors_{N}`: exactly the images they name, with the file's captions.
"""

import os
import pickle
from collections.abc import Iterator

import numpy as np
import tensorflow_datasets as tfds

from gcd_jax.data import builder_lib, classes
from gcd_jax.errors import InputError, MissingError

_IMAGES = "CelebA-HQ-img"
_MASKS = "CelebAMask-HQ-mask-anno"
_CAPTIONS = "celeba-caption"
_SPLIT_FILES = {"train": "train/filenames.pickle", "test": "test/filenames.pickle"}
NUM_TRAIN = 24_000  # Ids below this are train when no split file is given (24 000 / 6 000).
_RAW_FOLDER_SIZE = 2000  # The raw part masks of image i live in folder i // 2000.

_EXPECTED = f"""\
  {_IMAGES}/{{i}}.jpg                             (the 30 000 CelebA-HQ images)
  {_MASKS}/preprocessed/{{i}}.png          (merged layouts, values 0..18), or the raw part masks
  {_MASKS}/{{i // 2000}}/{{i:05d}}_{{part}}.png    (part in skin, nose, eye_g, ... cloth)
  {_CAPTIONS}/{{i}}.txt                          (captions, one per line)
  optionally {_SPLIT_FILES["train"]} and {_SPLIT_FILES["test"]} (lists of image names),
  and the authors' caption files caption_files/celeba/{{25,50,100}}_captions.jsonl (splits
  authors_25, authors_50, authors_100)."""


class _NameListUnpickler(pickle.Unpickler):
    """Unpickles plain lists of names only: a split file can never run code."""

    def find_class(self, module, name):
        raise pickle.UnpicklingError(f"forbidden global {module}.{name}")


def read_split_file(path: str) -> list[int]:
    """Image ids listed in an MM CelebA-HQ `filenames.pickle`; ValueError naming it if malformed."""
    try:
        with open(path, "rb") as f:
            names = _NameListUnpickler(f).load()
        return [int(os.path.splitext(os.path.basename(str(n)))[0]) for n in names]
    except (pickle.UnpicklingError, EOFError, TypeError, ValueError) as error:
        raise InputError(f"{path}: expected a pickled list of image names ({error}).") from error


def merge_part_masks(parts: dict[int, np.ndarray]) -> np.ndarray:
    """{class id: bool mask [H, W]} -> uint8 layout [H, W]; higher class ids are drawn on top."""
    shape = next(iter(parts.values())).shape
    label = np.zeros(shape, np.uint8)
    for k in sorted(parts):
        label[parts[k]] = k
    return label


class MmCelebaHq(builder_lib.ArrayRecordByDefault, tfds.core.GeneratorBasedBuilder):
    """Multi-Modal CelebA-HQ with 19-class layouts and captions, at a stored resolution."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release: 19-class layouts, captions, stored sizes."}
    BUILDER_CONFIGS = builder_lib.resolution_configs(
        {"256x256": (256, 256), "128x128": (128, 128), "full": None}
    )
    MANUAL_DOWNLOAD_INSTRUCTIONS = "Place in the manual directory:\n" + _EXPECTED

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=(
                "Multi-Modal CelebA-HQ: CelebA-HQ faces, CelebAMask-HQ layouts (19 classes incl. "
                "background) and ten captions per image. At 'full', layouts are upsampled "
                "(nearest) to the image size."
            ),
            features=builder_lib.example_features((None, None, 3), "jpeg"),
            homepage="https://github.com/IIGROUP/MM-CelebA-HQ-Dataset",
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager) -> dict:
        root = builder_lib.manual_dir(dl_manager, _EXPECTED)
        for folder in (_IMAGES, _MASKS, _CAPTIONS):
            if not os.path.isdir(os.path.join(root, folder)):
                raise MissingError(
                    f"MM CelebA-HQ: missing folder {os.path.join(root, folder)}. The manual "
                    f"directory must hold:\n{_EXPECTED}"
                )
        splits = {
            split: self._generate_examples(root, ids) for split, ids in _split_ids(root).items()
        }
        for split, path in builder_lib.authors_caption_files(root, "celeba").items():
            captions = {}
            for file_name, texts in builder_lib.read_captions_file(path).items():
                stem = os.path.splitext(file_name)[0]
                if not stem.isdigit():
                    raise InputError(f"{path}: file_name {file_name!r} is not <id>.jpg.")
                captions[int(stem)] = texts
            splits[split] = self._generate_examples(root, sorted(captions), captions)
        return splits

    def _generate_examples(
        self, root: str, ids: list[int], captions: dict[int, list[str]] | None = None
    ) -> Iterator[tuple[str, dict]]:
        """Examples of the images ``ids``; captions from ``captions`` (an authors' file) or,
        when None, from ``celeba-caption/{i}.txt``."""
        yield from builder_lib.ordered_parallel_map(lambda i: self._example(root, i, captions), ids)

    def _example(
        self, root: str, i: int, given: dict[int, list[str]] | None = None
    ) -> tuple[str, dict]:
        image_path = os.path.join(root, _IMAGES, f"{i}.jpg")
        image = builder_lib.decode_image(builder_lib.read_bytes(image_path), image_path)
        label, label_where = _read_layout(root, i)
        h, w = image.shape[:2]
        if h * label.shape[1] != w * label.shape[0]:
            raise InputError(
                f"Image {image_path} is {(h, w)} but layout {label_where} is {label.shape}: "
                "the aspect ratios differ."
            )
        size = self.builder_config.size or (h, w)
        if given is not None:
            captions = given[i]
        else:
            caption_path = os.path.join(root, _CAPTIONS, f"{i}.txt")
            with open(builder_lib.check_file(caption_path), encoding="utf-8") as f:
                captions = [line.strip() for line in f if line.strip()]
        return str(i), {
            "image": builder_lib.resize_image(image, size),
            "label": builder_lib.resize_label(label, size),
            "captions": captions,
            "file_name": f"{i}.jpg",
        }


def _split_ids(root: str) -> dict[str, list[int]]:
    if all(os.path.isfile(os.path.join(root, f)) for f in _SPLIT_FILES.values()):
        return {s: read_split_file(os.path.join(root, f)) for s, f in _SPLIT_FILES.items()}
    folder = os.path.join(root, _IMAGES)
    stems = [os.path.splitext(f)[0] for f in os.listdir(folder) if f.endswith(".jpg")]
    ids = sorted(int(s) for s in stems if s.isdigit())
    if not ids:
        raise MissingError(f"MM CelebA-HQ: no images {folder}/{{i}}.jpg.")
    return {"train": [i for i in ids if i < NUM_TRAIN], "test": [i for i in ids if i >= NUM_TRAIN]}


def _read_layout(root: str, i: int) -> tuple[np.ndarray, str]:
    """uint8 [H, W] layout of image i and where it was read, pre-merged or from raw part masks."""
    merged = os.path.join(root, _MASKS, "preprocessed", f"{i}.png")
    if os.path.isdir(os.path.dirname(merged)):
        label = builder_lib.decode_label(builder_lib.read_bytes(merged), merged)
        if label.max() >= len(classes.CELEBA_CLASSES):
            raise InputError(
                f"Layout {merged} holds value {label.max()} outside the 19 classes 0..18."
            )
        return label, merged
    folder = os.path.join(root, _MASKS, str(i // _RAW_FOLDER_SIZE))
    parts = {}
    for k, part in enumerate(classes.CELEBA_CLASSES[1:], start=1):
        path = os.path.join(folder, f"{i:05d}_{part}.png")
        if os.path.isfile(path):
            mask = builder_lib.decode_image(builder_lib.read_bytes(path), path).max(-1) > 0
            if parts and mask.shape != next(iter(parts.values())).shape:
                raise InputError(
                    f"Part mask {path} is {mask.shape}, unlike the image's other parts."
                )
            parts[k] = mask
    if not parts:
        raise MissingError(
            f"MM CelebA-HQ: no layout for image {i}: neither {merged} nor any raw part mask "
            f"{folder}/{i:05d}_{{part}}.png exists."
        )
    return merge_part_masks(parts), f"{folder}/{i:05d}_*.png"
