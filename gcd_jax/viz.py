"""Pictures of image–layout pairs: layout colouring, image conversion, grids, PNG files.

NumPy and Pillow only. Palettes are uint8 ``[K, 3]`` RGB tables, e.g.
``gcd_jax.data.classes.dataset_info(name).palette``.
"""

import pathlib

import numpy as np
from PIL import Image, ImageDraw, ImageFont

FONT_SIZE = 10  # Caption and legend text, pixels.
# Between words of a caption: two spaces, as the bundled font's 2-pixel space at FONT_SIZE reads
# as none ("A small" drawn as "Asmall").
WORD_GAP = "  "
MIN_TILE = (
    96  # Annotated grids upscale (nearest) tiles narrower than this, so text fits under them.
)


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


def _font() -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=FONT_SIZE)  # Pillow's bundled scalable font.
    except (ImportError, OSError):  # Pillow built without FreeType: the fixed bitmap font.
        return ImageFont.load_default()


def wrap(text: str, width: int, font: ImageFont.ImageFont) -> list[str]:
    """Greedy word wrap of ``text`` into lines at most ``width`` pixels wide in ``font`` (a word
    longer than the width is cut into pieces that fit)."""
    lines, line = [], ""
    for word in text.split():
        while font.getlength(word) > width and len(word) > 1:
            cut = max(
                1, max(i for i in range(1, len(word) + 1) if font.getlength(word[:i]) <= width)
            )
            if line:
                lines.append(line)
                line = ""
            lines.append(word[:cut])
            word = word[cut:]
        candidate = f"{line}{WORD_GAP}{word}" if line else word
        if font.getlength(candidate) <= width or not line:
            line = candidate
        else:
            lines.append(line)
            line = word
    return lines + [line] if line else lines


def caption_band(captions: list[str], tile: int, padding: int, width: int) -> np.ndarray:
    """White uint8 ``[h, width, 3]`` band with ``captions[i]`` wrapped in black under column ``i``
    of a grid of ``tile``-wide columns separated by ``padding`` (``make_grid``'s layout)."""
    font = _font()
    line_h = FONT_SIZE + 2
    wrapped = [wrap(c, tile, font) for c in captions]
    height = padding + line_h * max((len(w) for w in wrapped), default=0) + padding
    band = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(band)
    for i, lines in enumerate(wrapped):
        for j, line in enumerate(lines):
            draw.text((padding + i * (tile + padding), padding + j * line_h), line, "black", font)
    return np.asarray(band)


def legend_band(class_names, palette: np.ndarray, width: int, padding: int = 2) -> np.ndarray:
    """White uint8 ``[h, width, 3]`` band: a swatch in each class's palette colour followed by its
    name, entries flowing left to right and wrapping at ``width``."""
    font = _font()
    swatch, line_h = FONT_SIZE, FONT_SIZE + 4
    entries = [
        (name, tuple(int(v) for v in colour))
        for name, colour in zip(class_names, palette, strict=True)
    ]
    positions, x, y = [], padding, padding
    for name, _ in entries:
        w = swatch + 3 + int(np.ceil(font.getlength(name))) + 8
        if x + w > width and x > padding:
            x, y = padding, y + line_h
        positions.append((x, y))
        x += w
    band = Image.new("RGB", (width, y + line_h + padding), "white")
    draw = ImageDraw.Draw(band)
    for (name, colour), (x, y) in zip(entries, positions, strict=True):
        draw.rectangle((x, y, x + swatch - 1, y + swatch - 1), fill=colour, outline=(96, 96, 96))
        draw.text((x + swatch + 3, y - 1), name, "black", font)
    return np.asarray(band)


def pair_grid(
    images: np.ndarray,
    layouts: np.ndarray | None,
    palette: np.ndarray,
    captions: list[str] | None = None,
    class_names=None,
    padding: int = 2,
) -> np.ndarray:
    """``make_grid`` of generated pairs: images float ``[N, H, W, 3]`` in [−1, 1], layouts int
    ``[N, H, W]`` or None (an image-only model: the layout row is blank, class 0).

    With ``captions`` (one per pair) and/or ``class_names`` (K names), the tiles are upscaled
    (nearest, by the smallest integer that makes them ``MIN_TILE`` wide) and the grid gets each
    pair's caption wrapped under its column and a legend of the layout colours below.
    """
    images = image_to_uint8(images)
    layouts = np.zeros(images.shape[:3], np.int32) if layouts is None else np.asarray(layouts)
    return annotated_grid(images, layouts, palette, captions, class_names, padding)


def annotated_grid(
    images: np.ndarray,
    layouts: np.ndarray,
    palette: np.ndarray,
    captions: list[str] | None = None,
    class_names=None,
    padding: int = 2,
) -> np.ndarray:
    """``make_grid`` of uint8 images and int layouts, annotated as ``pair_grid`` describes."""
    if captions is None and class_names is None:
        return make_grid(images, layouts, palette, padding)
    if captions is not None and len(captions) != len(images):
        raise ValueError(f"{len(captions)} captions for {len(images)} pairs")
    scale = max(1, -(-MIN_TILE // images.shape[2]))
    images = images.repeat(scale, 1).repeat(scale, 2)
    layouts = layouts.repeat(scale, 1).repeat(scale, 2)
    grid = make_grid(images, layouts, palette, padding)
    bands = [grid]
    if captions is not None:
        bands.append(caption_band(captions, images.shape[2], padding, grid.shape[1]))
    if class_names is not None:
        bands.append(legend_band(class_names, palette, grid.shape[1], padding))
    return np.concatenate(bands, axis=0)
