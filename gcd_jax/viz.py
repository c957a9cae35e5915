"""Pictures of image–layout pairs: layout colouring, image conversion, grids, PNG files.

NumPy and Pillow only. Palettes are uint8 ``[K, 3]`` RGB tables, e.g.
``gcd_jax.data.classes.dataset_info(name).palette``.
"""

import pathlib

import numpy as np
from PIL import Image


def colorize(labels: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """Layouts int ``[..., H, W]`` in [0, K) -> uint8 RGB ``[..., H, W, 3]``.

    Raises:
      ValueError: a label outside [0, K).
    """
    labels, palette = np.asarray(labels), np.asarray(palette, np.uint8)
    if labels.size and (labels.min() < 0 or labels.max() >= len(palette)):
        raise ValueError(
            f"Labels span [{labels.min()}, {labels.max()}] but the palette has {len(palette)} "
            "colours."
        )
    return palette[labels]


def image_to_uint8(images: np.ndarray) -> np.ndarray:
    """Images float in [−1, 1] (any shape) -> uint8 in [0, 255], clipped and rounded."""
    scaled = (np.asarray(images, np.float32) + 1.0) * 127.5
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def make_grid(
    images: np.ndarray, layouts: np.ndarray, palette: np.ndarray, padding: int = 2
) -> np.ndarray:
    """Two-row grid: the images on top, their coloured layouts below, column ``i`` = pair ``i``.

    Args:
      images: uint8 ``[N, H, W, 3]``. layouts: int ``[N, H, W]``. palette: uint8 ``[K, 3]``.
      padding: white pixels between and around the tiles.
    Returns:
      uint8 ``[2H + 3p, N·W + (N + 1)p, 3]``.
    """
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"images must be uint8 [N, H, W, 3], got {images.dtype} {images.shape}")
    if np.shape(layouts) != images.shape[:3]:
        raise ValueError(f"layouts {np.shape(layouts)} do not match images {images.shape[:3]}")
    n, h, w, _ = images.shape
    p = padding
    grid = np.full((2 * h + 3 * p, n * w + (n + 1) * p, 3), 255, np.uint8)
    for row, tiles in enumerate((images, colorize(layouts, palette))):
        top = p + row * (h + p)
        for i, tile in enumerate(tiles):
            left = p + i * (w + p)
            grid[top : top + h, left : left + w] = tile
    return grid


def save_png(path: str | pathlib.Path, array: np.ndarray) -> None:
    """Writes uint8 ``[H, W, 3]`` (or ``[H, W]``) to ``path`` as PNG, creating parent folders."""
    array = np.asarray(array)
    if array.dtype != np.uint8:
        raise ValueError(f"save_png expects uint8, got {array.dtype}")
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, format="PNG")


def pair_grid(images: np.ndarray, layouts: np.ndarray | None, palette: np.ndarray) -> np.ndarray:
    """``make_grid`` of generated pairs: images float ``[N, H, W, 3]`` in [−1, 1], layouts int
    ``[N, H, W]`` or None (an image-only model: the layout row is blank, class 0)."""
    images = image_to_uint8(images)
    layouts = np.zeros(images.shape[:3], np.int32) if layouts is None else layouts
    return make_grid(images, layouts, palette)
