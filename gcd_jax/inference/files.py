"""The user's files, one set of rules for the CLI (``--prompts``, ``--image``, ``--layout``) and
the page (uploads, painted layouts).

- Prompts: a file with one prompt per line, or prompts separated by ';'.
- Images: any RGB(A) picture -> float32 ``[H, W, 3]`` in [−1, 1] (alpha dropped).
- Layouts: a single-channel PNG of class ids in [0, K) (what ``--mode sample`` writes as
  ``*_label.png``), or a coloured layout in the dataset's palette (what the sample grids and the
  page show), at the model's size or, coloured, an integer multiple of it (each block takes its
  most common class). A pixel farther than ``COLOUR_TOLERANCE`` from every palette colour is
  unknown; more than ``MAX_UNKNOWN`` of them is an error naming the colours.

Every bad file is a one-line ``InputError`` / ``MissingError`` that names it and what was expected.
"""

import os
import pathlib

import numpy as np
from PIL import Image

from gcd_jax.data import classes
from gcd_jax.errors import InputError, MissingError

COLOUR_TOLERANCE = 60.0  # RGB distance within which a painted pixel takes a palette colour.
MAX_UNKNOWN = 0.05  # Largest fraction of pixels whose colour is in no palette entry.
_ID_MODES = ("L", "P", "I", "I;16")  # PIL modes of single-channel class-id maps


def read_prompts(prompts: str) -> list[str]:
    """``prompts``: a file with one prompt per line, or prompts separated by ';'. Blank prompts
    are dropped; ``InputError`` when none is left."""
    if os.path.isfile(prompts):
        lines = pathlib.Path(prompts).read_text().splitlines()
    else:
        lines = prompts.split(";")
    result = [p.strip() for p in lines if p.strip()]
    if not result:
        where = f"the file {prompts}" if os.path.isfile(prompts) else f"--prompts={prompts!r}"
        raise InputError(
            f"No prompts in {where}: give a file with one prompt per line or "
            "--prompts='first prompt;second prompt'."
        )
    return result


def open_image(path: str, what: str) -> Image.Image:
    """The decoded image file at ``path``; ``MissingError`` / ``InputError`` naming it."""
    if not os.path.isfile(path):
        raise MissingError(f"{what} {path} does not exist.")
    try:
        with Image.open(path) as image:
            return image.copy()  # Decodes now, inside the try.
    except (OSError, ValueError, SyntaxError) as error:  # PIL.UnidentifiedImageError is OSError.
        raise InputError(f"{what} {path} is not an image file PIL can read ({error}).") from None


def check_size(path: str, array: np.ndarray, size: tuple[int, int]) -> None:
    """``InputError`` unless ``array`` is ``size`` (H, W)."""
    if array.shape[:2] != tuple(size):
        raise InputError(f"{path} is {array.shape[:2]}, the model needs {tuple(size)} (H, W).")


def read_image(path: str, what: str = "--image") -> np.ndarray:
    """An image file (any size) -> float32 ``[H, W, 3]`` in [−1, 1]."""
    image = open_image(path, what).convert("RGB")
    return np.asarray(image, np.float32) / 127.5 - 1.0


def image_for_model(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """An uploaded uint8 picture ``[h, w]`` or ``[h, w, 3|4]`` (any size) -> float32 ``size + (3,)``
    in [−1, 1] (bicubic resize; alpha dropped)."""
    image = np.asarray(image)
    if image.ndim == 2:
        image = np.stack([image] * 3, -1)
    if image.ndim != 3 or image.shape[-1] not in (3, 4):
        raise InputError(f"The uploaded image has shape {image.shape}; expected an RGB picture.")
    resized = Image.fromarray(image[..., :3].astype(np.uint8)).resize(
        (size[1], size[0]), Image.Resampling.BICUBIC
    )
    return np.asarray(resized, np.float32) / 127.5 - 1.0


def _hex(rgb) -> str:
    return "#{:02x}{:02x}{:02x}".format(*(int(v) for v in rgb))


def layout_from_colours(
    rgb: np.ndarray, palette: np.ndarray, size: tuple[int, int], names=None
) -> np.ndarray:
    """A painted or coloured layout, uint8 ``[h, w, 3|4]``, -> class ids int32 ``size``.

    Each pixel takes the palette colour nearest to it (transparent pixels: class 0); a pixel
    farther than ``COLOUR_TOLERANCE`` from every palette colour is unknown (anti-aliased stroke
    edges are, a few pixels). ``[h, w]`` must be ``size`` or an integer multiple of it; each
    block of a multiple takes the most common known class in it.

    Raises:
      InputError: the wrong size, or more than ``MAX_UNKNOWN`` of the pixels in no palette colour
        (the message names the most common of them and the palette).
    """
    rgb = np.asarray(rgb)
    h, w = rgb.shape[:2]
    height, width = size
    if rgb.ndim != 3 or h % height or w % width or h // height != w // width:
        raise InputError(
            f"The layout is {h}x{w} (H x W); the model needs {height}x{width} or an integer "
            "multiple of it."
        )
    colours = rgb[..., :3].astype(np.float32)
    if rgb.shape[-1] == 4:  # Transparent = background (class 0).
        alpha = rgb[..., 3:].astype(np.float32) / 255.0
        colours = alpha * colours + (1.0 - alpha) * palette[0].astype(np.float32)
    dist = np.linalg.norm(colours[..., None, :] - palette.astype(np.float32), axis=-1)
    ids, known = dist.argmin(-1), dist.min(-1) <= COLOUR_TOLERANCE
    if (~known).mean() > MAX_UNKNOWN:
        values, counts = np.unique(np.rint(colours[~known]).astype(int), axis=0, return_counts=True)
        common = ", ".join(_hex(v) for v in values[np.argsort(-counts)[:4]])
        allowed = ", ".join(
            f"{_hex(c)}" + (f" ({n})" if names is not None else "")
            for c, n in zip(palette, names if names is not None else palette, strict=True)
        )
        raise InputError(
            f"{(~known).mean():.0%} of the layout's pixels have colours outside the palette "
            f"(e.g. {common}); use the class colours: {allowed}."
        )
    s = h // height
    k = len(palette)
    blocks = np.where(known, ids, k).reshape(height, s, width, s).transpose(0, 2, 1, 3)
    counts = np.stack([(blocks == c).sum((-1, -2)) for c in range(k)], -1)
    nearest = ids.reshape(height, s, width, s)[:, 0, :, 0]  # a block with no known pixel
    return np.where(counts.max(-1) > 0, counts.argmax(-1), nearest).astype(np.int32)


def read_layout(
    path: str,
    info: classes.DatasetInfo,
    size: tuple[int, int] | None = None,
    what: str = "--layout",
) -> np.ndarray:
    """A layout file -> class ids int32 ``[H, W]``: class ids (single channel, values < K) at
    ``size``, or colours of ``info.palette`` at ``size`` or a multiple of it (see the module
    docstring). ``size=None``: any size (a class-id map is returned as it is; a coloured layout
    is read at its own size)."""
    image = open_image(path, what)
    array = np.asarray(image.convert("RGBA") if image.mode in ("RGBA", "LA") else image)
    if array.ndim == 2 and image.mode in _ID_MODES:
        if array.min() < 0 or array.max() >= info.num_classes:
            raise InputError(
                f"{path}: label values span [{array.min()}, {array.max()}], need "
                f"[0, {info.num_classes})."
            )
        if size is not None:
            check_size(path, array, size)
        return array.astype(np.int32)
    if array.ndim == 2:
        array = np.asarray(Image.fromarray(array).convert("RGB"))
    size = array.shape[:2] if size is None else size
    try:
        return layout_from_colours(array, info.palette, size, info.class_names)
    except InputError as error:
        raise InputError(f"{path}: {error}") from None
