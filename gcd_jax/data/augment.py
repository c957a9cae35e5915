"""Augmentations applied identically to an image and its layout.

Every augmentation maps (image uint8 [h, w, 3], label uint8 [h, w], size (H, W), crop_scale,
resize, rng) to (image uint8 [H, W, 3], label uint8 [H, W]): the image is resampled with the filter
``resize`` names (``FILTERS``), the layout with nearest neighbour, over the same source region.
With ``resize='nearest'`` both follow the reference's rule (torchvision's tensor ``Resize(NEAREST)``:
source pixel ``floor(x0 + i · width / W)``, ``gcd_jax.nearest``); with a smoothing filter the
layout takes PIL's nearest (pixel centres), aligned with the filtered image.
"""

from collections.abc import Callable

import numpy as np
from PIL import Image

from gcd_jax import nearest
from gcd_jax.errors import ConfigError

Box = tuple[float, float, float, float]  # (x0, y0, x1, y1) source region, in pixels.
Augmentation = Callable[
    [np.ndarray, np.ndarray, tuple[int, int], tuple[float, float], str, np.random.Generator],
    tuple[np.ndarray, np.ndarray],
]

# Image filters by ``config.data.resize`` (PIL's, antialiased when shrinking; 'nearest' is not PIL's
# but the reference's rule, see the module docstring).
FILTERS: dict[str, Image.Resampling] = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
}


def image_filter(name: str) -> Image.Resampling:
    """The ``FILTERS`` entry ``name``; ValueError naming the field and the known filters."""
    if name not in FILTERS:
        raise ConfigError(f"Unknown data.resize {name!r}; expected one of {sorted(FILTERS)}.")
    return FILTERS[name]


def resize_pair(
    image: np.ndarray,
    label: np.ndarray,
    size: tuple[int, int],
    resize: str = "nearest",
    box: Box | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Maps the region `box` (default: everything) of image and layout onto (H, W) = `size`,
    the image with the filter ``resize`` names, the layout nearest-neighbour."""
    h, w = label.shape
    if box is None and (h, w) == tuple(size):
        return image, label
    if image_filter(resize) == Image.Resampling.NEAREST:
        if box is None:  # the whole image: PyTorch's rule exactly (float32 arithmetic)
            rows, cols = nearest.source_index(h, size[0]), nearest.source_index(w, size[1])
        else:
            rows = nearest.source_index(h, size[0], box[1], box[3] - box[1])
            cols = nearest.source_index(w, size[1], box[0], box[2] - box[0])
        return image[rows][:, cols], label[rows][:, cols]
    if box is None:
        box = (0.0, 0.0, float(w), float(h))
    out = (size[1], size[0])
    image = Image.fromarray(image).resize(out, image_filter(resize), box=box)
    label = Image.fromarray(label).resize(out, Image.Resampling.NEAREST, box=box)
    return np.asarray(image), np.asarray(label)


def _maybe_flip(image, label, rng):
    if rng.random() < 0.5:
        return image[:, ::-1], label[:, ::-1]
    return image, label


def _none(image, label, size, crop_scale, resize, rng):
    return resize_pair(image, label, size, resize)


def _flip(image, label, size, crop_scale, resize, rng):
    image, label = resize_pair(image, label, size, resize)
    return _maybe_flip(image, label, rng)


def _resized_crop(image, label, size, crop_scale, resize, rng):
    # Rescale by s ~ U(crop_scale), crop back to the original size, resize, flip (*ref*): the
    # same as resizing a random window 1/s of the image, done in one resampling.
    s = rng.uniform(*crop_scale)
    h, w = label.shape
    crop_h, crop_w = h / s, w / s
    y0, x0 = rng.uniform(0.0, h - crop_h), rng.uniform(0.0, w - crop_w)
    image, label = resize_pair(image, label, size, resize, (x0, y0, x0 + crop_w, y0 + crop_h))
    return _maybe_flip(image, label, rng)


AUGMENTATIONS: dict[str, Augmentation] = {
    "none": _none,
    "flip": _flip,
    "resized_crop": _resized_crop,
}


def augmentation(name: str) -> Augmentation:
    """The augmentation `config.data.augment` names; ValueError listing the known ones."""
    if name not in AUGMENTATIONS:
        raise ConfigError(
            f"Unknown data.augment {name!r}; expected one of {sorted(AUGMENTATIONS)}."
        )
    return AUGMENTATIONS[name]
