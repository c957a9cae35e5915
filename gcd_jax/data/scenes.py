"""Procedural demo scenes: coloured objects over textured grey backgrounds, their layouts, captions.

A scene is 32x32: one to four objects of distinct classes (see `classes.DEMO_CLASSES`), each a
flat, saturated colour in one cell of a 3x3 grid, small or large, drawn over a textured background
whose colours all lie in a thin "capsule" around the grey axis. Captions name every visible object
with its size and position, so the text decides which classes the layout must contain.

Because object colours are far from every background colour, `segment_demo` recovers a scene's
layout exactly from its image; on generated (imperfect) images it assigns each pixel the nearest
class colour, with the whole background capsule standing for class 0.
"""

import functools
from collections.abc import Callable

import numpy as np
from PIL import Image
from scipy import ndimage

from gcd_jax.data import classes

SIZE = 32  # Height and width of a demo scene.
_GRID = 3  # Objects sit in the cells of a _GRID x _GRID grid, at most one per cell.
_MAX_OBJECTS = 4
_RADII = {"small": 3.5, "large": 6.0}  # Half-extent of an object, in pixels.
# Caption templates: with size and position, with size, with position ({} = the joined phrases).
_TEMPLATES = ("{}.", "A picture of {}.", "There is {}.")
_POSITIONS = (
    "at the top left",
    "at the top",
    "at the top right",
    "on the left",
    "in the center",
    "on the right",
    "at the bottom left",
    "at the bottom",
    "at the bottom right",
)
_GREY_RANGE = (70, 180)  # Grey levels of the background texture.
_TINT_MAX = 8  # Per-channel colour tint of a background, |tint_c| <= _TINT_MAX.
# Every background colour g + tint lies within _BG_RADIUS of the grey segment [_BG_LOW, _BG_HIGH]:
# its mean is in [70 - 8, 180 + 8] and its distance to the grey axis is <= |tint| <= 8 sqrt(3).
_BG_LOW, _BG_HIGH, _BG_RADIUS = 60.0, 190.0, 16.0

ShapeFn = Callable[[np.ndarray, np.ndarray, float], np.ndarray]


def _square(dy, dx, r):
    return (np.abs(dy) <= 0.85 * r) & (np.abs(dx) <= 0.85 * r)


def _circle(dy, dx, r):
    return dy**2 + dx**2 <= r**2


def _triangle(dy, dx, r):
    # Apex up: the half-width grows from 0 at dy = -r to r at dy = r.
    return (np.abs(dy) <= r) & (np.abs(dx) <= (dy + r) / 2)


def _diamond(dy, dx, r):
    return np.abs(dy) + np.abs(dx) <= r


def _cross(dy, dx, r):
    arm = max(r / 3, 1.0)
    return ((np.abs(dx) <= arm) & (np.abs(dy) <= r)) | ((np.abs(dy) <= arm) & (np.abs(dx) <= r))


def _bar(dy, dx, r):
    return (np.abs(dy) <= max(r / 3, 1.0)) & (np.abs(dx) <= r)


def _ring(dy, dx, r):
    d2 = dy**2 + dx**2
    return (d2 <= r**2) & (d2 >= (r / 2) ** 2)


# Shape of each object class (index into classes.DEMO_CLASSES).
_SHAPES: dict[int, ShapeFn] = {
    1: _square,
    2: _circle,
    3: _triangle,
    4: _diamond,
    5: _cross,
    6: _bar,
    7: _ring,
}


def _stripes(rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    theta, phase = rng.uniform(0, np.pi), rng.uniform(0, 2 * np.pi)
    freq = rng.uniform(2, 6) / SIZE
    return 0.5 + 0.5 * np.sin(2 * np.pi * freq * (xx * np.cos(theta) + yy * np.sin(theta)) + phase)


def _checker(rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    cell = rng.integers(2, 7)
    oy, ox = rng.integers(0, cell, size=2)
    return (((yy + oy) // cell + (xx + ox) // cell) % 2).astype(np.float64)


def _noise(rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    coarse = Image.fromarray(rng.random((8, 8)).astype(np.float32), mode="F")
    return np.asarray(coarse.resize((SIZE, SIZE), Image.Resampling.BILINEAR), np.float64)


_TEXTURES = (_stripes, _checker, _noise)


def _background(rng: np.random.Generator) -> np.ndarray:
    """uint8 [SIZE, SIZE, 3]: a grey texture in _GREY_RANGE plus one small colour tint."""
    yy, xx = np.mgrid[:SIZE, :SIZE]
    pattern = _TEXTURES[rng.integers(len(_TEXTURES))](rng, yy, xx)
    level, contrast = rng.uniform(0.3, 0.7), rng.uniform(0.2, 0.7)
    grey01 = np.clip(level + contrast * (pattern - 0.5), 0.0, 1.0)
    low, high = _GREY_RANGE
    grey = np.rint(low + (high - low) * grey01).astype(np.int64)
    tint = rng.integers(-_TINT_MAX, _TINT_MAX + 1, size=3)
    return (grey[..., None] + tint).astype(np.uint8)


def _join(phrases: list[str]) -> str:
    return phrases[0] if len(phrases) == 1 else ", ".join(phrases[:-1]) + " and " + phrases[-1]


def _a(noun_phrase: str) -> str:
    return ("an " if noun_phrase[0] in "aeiou" else "a ") + noun_phrase


def _captions(
    rng: np.random.Generator,
    objects: list[tuple[int, str, int]],
    names: tuple[str, ...] = classes.DEMO_CLASSES,
) -> list[str]:
    """Three captions naming every object (class id, size, cell) by `names`, one per `_TEMPLATES`
    entry: with size and position, with size, with position."""
    phrases = (
        lambda c, s, p: f"{_a(s)} {names[c]} {_POSITIONS[p]}",
        lambda c, s, p: _a(f"{s} {names[c]}"),
        lambda c, s, p: f"{_a(names[c])} {_POSITIONS[p]}",
    )
    captions = []
    for template, phrase in zip(_TEMPLATES, phrases, strict=True):
        order = rng.permutation(len(objects))
        text = template.format(_join([phrase(*objects[i]) for i in order]))
        captions.append(text[0].upper() + text[1:])
    return captions


def caption_fragments(names: tuple[str, ...] = classes.DEMO_CLASSES) -> tuple[str, ...]:
    """Every piece of text captions are assembled from: templates (without their slot), joiners,
    articles, sizes, positions and object class names. A word-level tokenizer's vocabulary is the
    set of words of these fragments (`gcd_jax.models.text`), so it needs no vocabulary file."""
    return (
        *(template.format("") for template in _TEMPLATES),
        ", ",
        " and ",
        "a",
        "an",
        *_RADII,
        *_POSITIONS,
        *names[1:],
    )


def shape_caption_fragments() -> tuple[str, ...]:
    """`caption_fragments` of the 'demo_shapes' variant (shape names instead of coloured ones)."""
    return caption_fragments(classes.DEMO_SHAPE_CLASSES)


def generate_scene(rng: np.random.Generator) -> dict:
    """One random scene.

    Returns:
      {'image': uint8 [SIZE, SIZE, 3], 'label': uint8 [SIZE, SIZE] in [0, 8),
       'captions': list of 3 str naming exactly the object classes present in 'label'}.
    """
    image = _background(rng)
    label = np.zeros((SIZE, SIZE), np.uint8)
    yy, xx = np.mgrid[:SIZE, :SIZE] + 0.5
    cell = SIZE / _GRID
    count = rng.integers(1, _MAX_OBJECTS + 1)
    object_classes = rng.choice(np.arange(1, len(classes.DEMO_CLASSES)), count, replace=False)
    cells = rng.choice(_GRID * _GRID, count, replace=False)
    palette = classes.dataset_info("demo").palette
    objects = []
    for c, p in zip(object_classes.tolist(), cells.tolist(), strict=True):
        size = ("small", "large")[rng.integers(2)]
        cy, cx = (np.array(divmod(p, _GRID)) + 0.5) * cell + rng.uniform(-1, 1, size=2)
        mask = _SHAPES[c](yy - cy, xx - cx, _RADII[size])
        label[mask] = c
        image[mask] = palette[c]
        objects.append((c, size, p))
    # Objects are drawn in distinct cells, so none is hidden; keep the check so captions never lie.
    visible = [o for o in objects if np.any(label == o[0])]
    return {"image": image, "label": label, "captions": _captions(rng, visible)}


STREAMS = {"train": 0, "validation": 1}  # Independent example streams per split.
SEED = 0  # The demo data sets' scene seed (the TFDS builders' DemoConfig.seed).


def named_scene(example, seed: int, split: str, index: int) -> dict:
    """Scene ``index`` of ``split`` as the demo data sets hold it (the TFDS builders store it,
    ``data.source='memory'`` serves it): ``example(seed, STREAMS[split], index)`` with its file
    name."""
    return {**example(seed, STREAMS[split], index), "file_name": f"{split}_{index:06d}"}


def num_validation(num_train: int) -> int:
    """Validation scenes of a demo set with ``num_train`` training scenes."""
    return max(64, num_train // 8)


def demo_example(seed: int, stream: int, index: int) -> dict:
    """Scene `index` of stream `stream` (one per split) of the demo data set `seed`: a pure function."""
    return generate_scene(np.random.default_rng([seed, stream, index]))


def _to_rgb255(image: np.ndarray) -> np.ndarray:
    """Integers in [0, 255] or floats in [-1, 1] (the model's convention) -> float32 in [0, 255]."""
    image = np.asarray(image)
    if np.issubdtype(image.dtype, np.integer):
        return image.astype(np.float32)
    return (image.astype(np.float32) + 1.0) * 127.5


def _nearest_colour(rgb: np.ndarray) -> np.ndarray:
    """int32 [..., H, W]: 0 where the pixel is nearest the background capsule, else 1 + the index
    of the nearest demo object colour (float32 RGB [..., H, W, 3] in [0, 255])."""
    objects = classes.dataset_info("demo").palette[1:].astype(np.float32)  # [7, 3]
    d_objects = np.linalg.norm(rgb[..., None, :] - objects, axis=-1)  # [..., H, W, 7]
    grey = np.clip(rgb.mean(-1, keepdims=True), _BG_LOW, _BG_HIGH)  # nearest grey-segment level
    d_background = np.maximum(np.linalg.norm(rgb - grey, axis=-1) - _BG_RADIUS, 0.0)
    distances = np.concatenate([d_background[..., None], d_objects], axis=-1)
    return np.argmin(distances, axis=-1).astype(np.int32)


def segment_demo(image: np.ndarray) -> np.ndarray:
    """Exact segmenter of demo scenes: each pixel gets the class of the nearest class colour.

    Args:
      image: uint8 (any integer type) [..., H, W, 3] in [0, 255], or float [..., H, W, 3] in
        [-1, 1] (the model's convention; bfloat16 and JAX arrays are fine).

    Returns:
      int32 [..., H, W] class ids in [0, 8). Object classes are their flat palette colours; the
      background is the whole capsule of tinted greys its texture can take (distance 0 inside), so
      demo images are segmented exactly and generated images robustly.
    """
    return _nearest_colour(_to_rgb255(image))


# ------------------------------------------------------------------ the 'demo_shapes' variant
# Same backgrounds, shapes, sizes, cells and captions as the demo, but the class is the shape
# alone (classes.DEMO_SHAPE_CLASSES: class k has shape _SHAPES[k]) and each object's colour is one
# of the 7 demo object colours drawn independently of its class (distinct within a scene, so that
# touching objects stay apart). Object centres are jittered in half-pixel steps, so the rasterised
# shapes form a finite bank of templates and `segment_shapes` can recover layouts exactly.
_JITTER = np.arange(-2, 3) / 2  # Offsets of an object's centre from its cell's centre, pixels.
_MIN_PIXELS = 4  # Smaller same-colour blobs of a generated image are read as background.


def _shape_mask(c: int, size: str, cell: int, jy: float, jx: float) -> np.ndarray:
    yy, xx = np.mgrid[:SIZE, :SIZE] + 0.5
    cy, cx = (np.array(divmod(cell, _GRID)) + 0.5) * (SIZE / _GRID) + (jy, jx)
    return _SHAPES[c](yy - cy, xx - cx, _RADII[size])


def generate_shape_scene(rng: np.random.Generator) -> dict:
    """One random 'demo_shapes' scene; the keys and shapes of `generate_scene`, labels in
    classes.DEMO_SHAPE_CLASSES. An object that would overlap one drawn before it is left out (and
    not captioned)."""
    image = _background(rng)
    label = np.zeros((SIZE, SIZE), np.uint8)
    count = rng.integers(1, _MAX_OBJECTS + 1)
    object_classes = rng.choice(np.arange(1, len(classes.DEMO_SHAPE_CLASSES)), count, replace=False)
    cells = rng.choice(_GRID * _GRID, count, replace=False)
    colours = rng.choice(np.arange(1, len(classes.DEMO_CLASSES)), count, replace=False)
    palette = classes.dataset_info("demo").palette
    objects = []
    for c, p, colour in zip(object_classes.tolist(), cells.tolist(), colours.tolist(), strict=True):
        size = ("small", "large")[rng.integers(2)]
        mask = _shape_mask(c, size, p, *rng.choice(_JITTER, size=2))
        if np.any(label[mask]):
            continue
        label[mask] = c
        image[mask] = palette[colour]
        objects.append((c, size, p))
    return {
        "image": image,
        "label": label,
        "captions": _captions(rng, objects, classes.DEMO_SHAPE_CLASSES),
    }


def shape_example(seed: int, stream: int, index: int) -> dict:
    """`demo_example` of the 'demo_shapes' variant."""
    return generate_shape_scene(np.random.default_rng([seed, stream, index]))


@functools.cache
def _shape_templates() -> tuple[np.ndarray, np.ndarray]:
    """Every object mask the shape generator can draw: (float32 [T, SIZE * SIZE], class [T])."""
    masks, labels = [], []
    for c in range(1, len(classes.DEMO_SHAPE_CLASSES)):
        for size in _RADII:
            for cell in range(_GRID * _GRID):
                for jy in _JITTER:
                    for jx in _JITTER:
                        masks.append(_shape_mask(c, size, cell, jy, jx).ravel())
                        labels.append(c)
    return np.array(masks, np.float32), np.array(labels, np.int32)


def segment_shapes(image: np.ndarray) -> np.ndarray:
    """Exact segmenter of 'demo_shapes' scenes.

    Pixels are first split into background and the 7 object colours as in `segment_demo`; each
    connected same-colour blob of at least _MIN_PIXELS pixels then gets the class of the template
    (every shape, size, cell and centre offset the generator draws) of highest IoU with it.

    Args:
      image: as `segment_demo`: integers [..., H, W, 3] in [0, 255] or floats in [-1, 1].

    Returns:
      int32 [..., H, W] class ids of classes.DEMO_SHAPE_CLASSES. On generated scenes (objects
      never overlap and differ in colour) every blob is one whole object, matched by its own
      template with IoU 1, so layouts are recovered exactly.
    """
    colour = _nearest_colour(_to_rgb255(image))
    flat = colour.reshape(-1, SIZE, SIZE)
    templates, template_class = _shape_templates()
    sizes = templates.sum(-1)
    out = np.zeros(flat.shape, np.int32)
    eight = np.ones((3, 3), bool)
    for n, colours in enumerate(flat):
        for c in np.unique(colours[colours > 0]):
            blobs, count = ndimage.label(colours == c, structure=eight)
            for b in range(1, count + 1):
                blob = blobs == b
                area = blob.sum()
                if area < _MIN_PIXELS:
                    continue
                inter = templates @ blob.ravel().astype(np.float32)
                iou = inter / (sizes + area - inter)
                out[n][blob] = template_class[np.argmax(iou)]
    return out.reshape(colour.shape)
