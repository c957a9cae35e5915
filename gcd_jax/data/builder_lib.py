"""Shared parts of the TFDS builders.

Stored-resolution builder configs, the `array_record` default (random access for the input
pipeline), the common feature spec, decoding with errors that name the file, resizing (images with
a filter, layouts nearest) and an order-preserving thread-pool map for decoding during builds.
"""

import collections
import dataclasses
import io
import json
import os
from collections.abc import Callable, Iterable, Iterator
from concurrent import futures

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

from gcd_jax.errors import InputError, MissingError

# Threads decoding and resizing raw files while a builder writes examples.
BUILD_WORKERS = min(8, os.cpu_count() or 1)


@dataclasses.dataclass(eq=False)
class ResolutionConfig(tfds.core.BuilderConfig):
    """Builder config fixing the stored resolution, so training never decodes full-size files.

    Attributes:
      size: (H, W) of the stored image and layout; None keeps the native resolution.
    """

    size: tuple[int, int] | None = None


def resolution_configs(sizes: dict[str, tuple[int, int] | None]) -> list[ResolutionConfig]:
    """One `ResolutionConfig` per {name: (H, W) or None}; the first is the builder's default."""
    return [
        ResolutionConfig(
            name=name,
            size=size,
            description="native resolution" if size is None else f"stored at {size[0]}x{size[1]}",
        )
        for name, size in sizes.items()
    ]


class ArrayRecordByDefault:
    """Builder mixin: write `array_record` unless told otherwise (`builder.as_data_source` needs it)."""

    def __init__(self, *, file_format: str | None = None, **kwargs):
        super().__init__(file_format=file_format or "array_record", **kwargs)


def example_features(image_shape: tuple, image_format: str) -> tfds.features.FeaturesDict:
    """The features every builder yields.

    image: uint8 RGB [H, W, 3]; label: uint8 class map [H, W] (zlib-compressed);
    captions: a possibly empty sequence of strings; file_name: the source file's name.
    """
    return tfds.features.FeaturesDict(
        {
            "image": tfds.features.Image(shape=image_shape, encoding_format=image_format),
            "label": tfds.features.Tensor(
                shape=(None, None), dtype=np.uint8, encoding=tfds.features.Encoding.ZLIB
            ),
            "captions": tfds.features.Sequence(tfds.features.Text()),
            "file_name": tfds.features.Text(),
        }
    )


def manual_dir(dl_manager: tfds.download.DownloadManager, expected: str) -> str:
    """The manual directory, or FileNotFoundError saying where it was looked for and what it needs."""
    try:
        return os.fspath(dl_manager.manual_dir)
    except AssertionError:
        # TFDS raises AssertionError for a missing or empty manual dir and keeps the path it
        # looked at in a private attribute; re-raise as a file error that says what belongs there.
        where = dl_manager._manual_dir
        raise MissingError(
            f"The manual directory {where} does not exist or is empty. Set "
            f"config.data.manual_dir (tfds build: --manual_dir) to a folder holding:\n{expected}"
        ) from None


def decode_image(data: bytes, where: str) -> np.ndarray:
    """Encoded image bytes -> uint8 RGB [H, W, 3]; ValueError naming `where` if unreadable."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            return np.asarray(image.convert("RGB"))
    except (OSError, ValueError, SyntaxError) as error:
        raise InputError(f"Cannot read image {where}: {error}") from error


def decode_label(data: bytes, where: str) -> np.ndarray:
    """Encoded single-channel label map -> uint8 [H, W]; ValueError naming `where` otherwise."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            mode = image.mode
            label = np.asarray(image)
    except (OSError, ValueError, SyntaxError) as error:
        raise InputError(f"Cannot read label map {where}: {error}") from error
    if label.ndim != 2 or mode not in ("L", "P", "I", "I;16"):
        raise InputError(f"Label map {where} has mode {mode}; expected a single-channel image.")
    if label.max(initial=0) > 255:
        raise InputError(f"Label map {where} holds values above 255.")
    return label.astype(np.uint8)


def check_file(path: str) -> str:
    """`path` itself; FileNotFoundError naming it when it is not a file."""
    if not os.path.isfile(path):
        raise MissingError(f"Expected file {path} is missing.")
    return path


def read_bytes(path: str) -> bytes:
    """The bytes of `path`; FileNotFoundError naming it when missing."""
    with open(check_file(path), "rb") as f:
        return f.read()


def resize_image(image: np.ndarray, size: tuple[int, int] | None) -> np.ndarray:
    """uint8 [h, w, 3] -> uint8 [H, W, 3] with an antialiasing Lanczos filter; None keeps it."""
    if size is None or image.shape[:2] == tuple(size):
        return image
    pil = Image.fromarray(image).resize((size[1], size[0]), Image.Resampling.LANCZOS)
    return np.asarray(pil)


def resize_label(label: np.ndarray, size: tuple[int, int] | None) -> np.ndarray:
    """uint8 [h, w] -> uint8 [H, W], nearest neighbour (class ids are never blended)."""
    if size is None or label.shape == tuple(size):
        return label
    return np.asarray(Image.fromarray(label).resize((size[1], size[0]), Image.Resampling.NEAREST))


def ordered_parallel_map(
    fn: Callable, items: Iterable, num_workers: int = BUILD_WORKERS
) -> Iterator:
    """`map(fn, items)` on a thread pool, in input order, with at most 2 * num_workers in flight.

    `items` is consumed lazily (it may read files), so memory stays bounded on large splits.
    """
    with futures.ThreadPoolExecutor(num_workers) as pool:
        pending = collections.deque()
        for item in items:
            pending.append(pool.submit(fn, item))
            if len(pending) > 2 * num_workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


# The authors' caption files (github:pmh9960/GCDP data/caption_files/{dataset}/{N}_captions.jsonl):
# each becomes the split 'authors_{N}' holding exactly the images it names, with its captions.
AUTHORS_FRACTIONS = (25, 50, 100)


def authors_caption_files(root: str, dataset: str) -> dict[str, str]:
    """{'authors_N': path} for the authors' caption files in the manual directory ``root``:
    ``caption_files/{dataset}/{N}_captions.jsonl`` (their repository's layout) or
    ``{N}_captions.jsonl``; fractions without a file are left out."""
    found = {}
    for n in AUTHORS_FRACTIONS:
        for path in (
            os.path.join(root, "caption_files", dataset, f"{n}_captions.jsonl"),
            os.path.join(root, f"{n}_captions.jsonl"),
        ):
            if os.path.isfile(path):
                found[f"authors_{n}"] = path
                break
    return found


def read_captions_file(path: str) -> dict[str, list[str]]:
    """{file_name (base name): captions} from a jsonl file of ``{"file_name": ..., "text": [...]}``
    lines, in file order; InputError naming the file and line if malformed."""
    captions = {}
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                text = record["text"]
                captions[os.path.basename(record["file_name"])] = (
                    [text] if isinstance(text, str) else [str(t) for t in text]
                )
            except (json.JSONDecodeError, KeyError, TypeError) as error:
                raise InputError(
                    f'{path}:{number}: expected {{"file_name": ..., "text": [...]}}, got {line!r}'
                ) from error
    return captions
