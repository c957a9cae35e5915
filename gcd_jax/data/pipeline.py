"""Host-local training batches and evaluation examples from the TFDS data sources.

Order: with N training examples and global batch G, batch k holds the global positions
k G .. k G + G - 1; position i is example `perm_e[i mod N]` of epoch e = i // N, where `perm_e` is
a permutation seeded by (config.data.seed, e). Host p of P takes positions k G + p b .. + b - 1,
b = G / P. Augmentation and caption choice draw from a generator seeded by (seed, e, example), and
the examples that keep their text are a fixed subset of the training images seeded by the seed.
So batch k is a pure function of (config.data, k, p): resuming at step k costs nothing.
"""

import collections
import dataclasses
from collections.abc import Callable, Sequence
from concurrent import futures

import jax
import ml_collections
import numpy as np

from gcd_jax.data import augment, classes, sources
from gcd_jax.errors import ConfigError

# tokenize(captions) -> (tokens int32 [B, L], mask bool [B, L]).
Tokenize = Callable[[list[str]], tuple[np.ndarray, np.ndarray]]

_ORDER, _AUGMENT, _TEXT = 0, 1, 2  # Independent random streams derived from config.data.seed.
_PREFETCH_BATCHES = 2  # Batches decoded ahead of the one being returned.


def text_mask(seed: int, num_examples: int, fraction: float) -> np.ndarray:
    """bool [N]: the round(fraction * N) training images that keep their text, fixed by `seed`."""
    keep = np.zeros(num_examples, bool)
    chosen = np.random.default_rng([seed, _TEXT]).permutation(num_examples)
    keep[chosen[: round(fraction * num_examples)]] = True
    return keep


def epoch_permutation(seed: int, epoch: int, num_examples: int) -> np.ndarray:
    """int [N]: the order in which epoch `epoch` visits the training examples."""
    return np.random.default_rng([seed, _ORDER, epoch]).permutation(num_examples)


def _text(value) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


@dataclasses.dataclass(frozen=True)
class _Recipe:
    """Everything a training example depends on besides (epoch, index)."""

    source: Sequence[dict]
    size: tuple[int, int]
    augmentation: augment.Augmentation
    crop_scale: tuple[float, float]
    resize: str  # image filter name (augment.FILTERS)
    seed: int
    keep_text: np.ndarray  # bool [N]


def _train_example(recipe: _Recipe, epoch: int, index: int) -> dict:
    """Training example `index` as drawn in epoch `epoch`: augmented arrays and one caption."""
    raw = recipe.source[index]
    rng = np.random.default_rng([recipe.seed, _AUGMENT, epoch, index])
    image, label = recipe.augmentation(
        raw["image"], raw["label"], recipe.size, recipe.crop_scale, recipe.resize, rng
    )
    captions = [_text(c) for c in raw["captions"]]
    caption = captions[rng.integers(len(captions))] if captions else ""
    has_text = bool(recipe.keep_text[index] and captions)
    return {
        "image": image,
        "label": label,
        "caption": caption if has_text else "",
        "has_text": has_text,
    }


def _stack(examples: list[dict], tokenize: Tokenize) -> dict[str, np.ndarray]:
    tokens, mask = tokenize([e["caption"] for e in examples])
    images = np.stack([e["image"] for e in examples]).astype(np.float32)
    return {
        "image": images / 127.5 - 1.0,
        "label": np.stack([e["label"] for e in examples]).astype(np.int32),
        "tokens": np.asarray(tokens, np.int32),
        "mask": np.asarray(mask, bool),
        "has_text": np.array([e["has_text"] for e in examples], bool),
    }


class TrainIterator:
    """Endless host-local training batches; `step` is the index of the batch `next` returns.

    Each batch is {image: float32 [b, H, W, 3] in [-1, 1], label: int32 [b, H, W] in [0, K),
    tokens: int32 [b, L], mask: bool [b, L], has_text: bool [b]}; examples without text carry the
    caption '' and has_text False (the model replaces their text by the null text).
    """

    def __init__(
        self,
        recipe: _Recipe,
        tokenize: Tokenize,
        global_batch_size: int,
        process_index: int,
        process_count: int,
        start_step: int,
        num_workers: int,
    ):
        if global_batch_size % process_count:
            raise ConfigError(
                f"Global batch {global_batch_size} does not split over {process_count} hosts."
            )
        self.step = start_step
        self._recipe = recipe
        self._tokenize = tokenize
        self._global_batch = global_batch_size
        self._batch = global_batch_size // process_count
        self._offset = process_index * self._batch
        self._permutations: dict[int, np.ndarray] = {}
        self._pool = futures.ThreadPoolExecutor(num_workers)
        self._queue = collections.deque(
            self._submit(start_step + i) for i in range(_PREFETCH_BATCHES)
        )

    def example_ids(self, step: int) -> list[tuple[int, int]]:
        """(epoch, example index) of this host's positions in batch `step`."""
        n = len(self._recipe.source)
        start = step * self._global_batch + self._offset
        ids = []
        for position in range(start, start + self._batch):
            epoch, j = divmod(position, n)
            if epoch not in self._permutations:
                # Positions are submitted in increasing order: earlier epochs are never needed again.
                self._permutations = {epoch: epoch_permutation(self._recipe.seed, epoch, n)}
            ids.append((epoch, int(self._permutations[epoch][j])))
        return ids

    def _submit(self, step: int) -> list[futures.Future]:
        return [
            self._pool.submit(_train_example, self._recipe, epoch, index)
            for epoch, index in self.example_ids(step)
        ]

    def __iter__(self) -> "TrainIterator":
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        pending = self._queue.popleft()
        self._queue.append(self._submit(self.step + _PREFETCH_BATCHES))
        batch = _stack([f.result() for f in pending], self._tokenize)
        self.step += 1
        return batch

    def close(self) -> None:
        """Stops the decoding threads (pending prefetched batches are dropped)."""
        for pending in self._queue:
            for f in pending:
                f.cancel()
        self._pool.shutdown(wait=True)


def create_train_iterator(
    config: ml_collections.ConfigDict,
    tokenize: Tokenize,
    start_step: int = 0,
    *,
    process_index: int | None = None,
    process_count: int | None = None,
) -> TrainIterator:
    """Training batches of `config.data` for this host, starting at batch `start_step`.

    Builds the demo data on first use. `process_index` / `process_count` default to JAX's.
    """
    data = config.data
    num_classes = classes.dataset_info(data.name).num_classes
    if data.num_classes != num_classes:
        raise ConfigError(
            f"config.data.num_classes={data.num_classes}; {data.name} has {num_classes}."
        )
    if not 0.0 <= data.caption_fraction <= 1.0:
        raise ConfigError(f"config.data.caption_fraction={data.caption_fraction} not in [0, 1].")
    augment.image_filter(data.resize)  # validates the name before any data is read
    source = sources.open_split(config, data.train_split)
    recipe = _Recipe(
        source=source,
        size=tuple(data.image_size),
        augmentation=augment.augmentation(data.augment),
        crop_scale=tuple(data.crop_scale),
        resize=data.resize,
        seed=data.seed,
        keep_text=text_mask(data.seed, len(source), data.caption_fraction),
    )
    return TrainIterator(
        recipe,
        tokenize,
        global_batch_size=config.train.global_batch_size,
        process_index=jax.process_index() if process_index is None else process_index,
        process_count=jax.process_count() if process_count is None else process_count,
        start_step=start_step,
        num_workers=data.num_workers,
    )


def load_eval_examples(config: ml_collections.ConfigDict, num: int) -> dict[str, np.ndarray]:
    """The first min(num, split size) examples of the evaluation split, resized, not augmented.

    Returns:
      {image: float32 [n, H, W, 3] in [-1, 1], label: int32 [n, H, W], captions: object [n] (the
       first caption of each example, '' if none), file_name: object [n]}.
    """
    source = sources.open_split(config, sources.eval_split(config))
    size = tuple(config.data.image_size)
    images, labels, captions, names = [], [], [], []
    for i in range(min(num, len(source))):
        raw = source[i]
        image, label = augment.resize_pair(raw["image"], raw["label"], size, config.data.resize)
        images.append(image)
        labels.append(label)
        captions.append(_text(raw["captions"][0]) if len(raw["captions"]) else "")
        names.append(_text(raw["file_name"]))
    return {
        "image": np.stack(images).astype(np.float32) / 127.5 - 1.0,
        "label": np.stack(labels).astype(np.int32),
        "captions": np.array(captions, dtype=object),
        "file_name": np.array(names, dtype=object),
    }
