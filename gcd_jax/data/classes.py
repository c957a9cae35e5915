"""Class tables, palettes and caption parsers of every dataset.

One `DatasetInfo` per dataset, looked up by the `config.data.name` key through `dataset_info`.
Pure Python/NumPy: evaluation and visualisation import this module without TensorFlow.
"""

import dataclasses
import re

import numpy as np

from gcd_jax.errors import ConfigError


@dataclasses.dataclass(frozen=True, eq=False)
class DatasetInfo:
    """What the rest of the library needs to know about a dataset's layouts.

    Attributes:
      name: the `config.data.name` key ('demo' | 'demo_shapes' | 'cityscapes' | 'celeba').
      class_names: K names; class k of a layout is `class_names[k]`.
      palette: uint8 [K, 3] RGB colour of each class, for colouring layouts.
      keywords: {class id: regular expression}; a caption that matches the expression names the
        class (case-insensitive). Classes without an entry are never named by captions.
      ignore_class: the class id evaluation ignores ('unlabeled', 'background'), or -1 for none.
    """

    name: str
    class_names: tuple[str, ...]
    palette: np.ndarray
    keywords: dict[int, str]
    ignore_class: int

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def caption_classes(self, caption: str) -> list[int]:
        """Sorted ids of the classes that `caption` names (the caption parser hook)."""
        return sorted(
            k for k, pattern in self.keywords.items() if re.search(pattern, caption, re.IGNORECASE)
        )


def _word(*words: str) -> str:
    return r"\b(?:" + "|".join(words) + r")\b"


# ------------------------------------------------------------------ Cityscapes
# The 19 Cityscapes train ids plus "unlabeled" (19), which every ignored label id maps to.
CITYSCAPES_CLASSES = (
    "road",
    "sidewalk",
    "building",
    "wall",
    "fence",
    "pole",
    "traffic light",
    "traffic sign",
    "vegetation",
    "terrain",
    "sky",
    "person",
    "rider",
    "car",
    "truck",
    "bus",
    "train",
    "motorcycle",
    "bicycle",
    "unlabeled",
)
CITYSCAPES_UNLABELED = 19

# Plural forms of the reference captions ("... with Buildings, Fences, Roads, People, Skies, ...").
CITYSCAPES_PLURALS = (
    "Roads",
    "Sidewalks",
    "Buildings",
    "Walls",
    "Fences",
    "Poles",
    "Traffic lights",
    "Traffic signs",
    "Vegetations",
    "Terrains",
    "Skies",
    "People",
    "Riders",
    "Cars",
    "Trucks",
    "Buses",
    "Trains",
    "Motorcycles",
    "Bicycles",
)

# Official label id -> train id (standard Cityscapes table; 255 = ignored -> unlabeled).
_CITYSCAPES_ID_TO_TRAIN_ID = {
    7: 0,
    8: 1,
    11: 2,
    12: 3,
    13: 4,
    17: 5,
    19: 6,
    20: 7,
    21: 8,
    22: 9,
    23: 10,
    24: 11,
    25: 12,
    26: 13,
    27: 14,
    28: 15,
    31: 16,
    32: 17,
    33: 18,
}
CITYSCAPES_NUM_IDS = 34  # Label ids 0..33; the license plate id -1 is stored as 255 in uint8.


def cityscapes_id_lut() -> np.ndarray:
    """int16 [256] lookup table label id -> train id in [0, 20); -1 marks values outside the table."""
    lut = np.full(256, -1, np.int16)
    lut[:CITYSCAPES_NUM_IDS] = CITYSCAPES_UNLABELED
    lut[255] = CITYSCAPES_UNLABELED  # license plate (-1)
    for label_id, train_id in _CITYSCAPES_ID_TO_TRAIN_ID.items():
        lut[label_id] = train_id
    return lut


_CITYSCAPES_PALETTE = (
    (128, 64, 128),
    (244, 35, 232),
    (70, 70, 70),
    (102, 102, 156),
    (190, 153, 153),
    (153, 153, 153),
    (250, 170, 30),
    (220, 220, 0),
    (107, 142, 35),
    (152, 251, 152),
    (70, 130, 180),
    (220, 20, 60),
    (255, 0, 0),
    (0, 0, 142),
    (0, 0, 70),
    (0, 60, 100),
    (0, 80, 100),
    (0, 0, 230),
    (119, 11, 32),
    (0, 0, 0),
)

_CITYSCAPES_KEYWORDS = {
    k: _word(name, plural)
    for k, (name, plural) in enumerate(
        zip(CITYSCAPES_CLASSES[:19], CITYSCAPES_PLURALS, strict=True)
    )
}
_CITYSCAPES_KEYWORDS[11] = _word("person", "persons", "people")
_CITYSCAPES_KEYWORDS[15] = _word("bus", "buses", "busses")
_CITYSCAPES_KEYWORDS[10] = _word("sky", "skies")

# ------------------------------------------------------------------ MM CelebA-HQ
CELEBA_CLASSES = (
    "background",
    "skin",
    "nose",
    "eye_g",
    "l_eye",
    "r_eye",
    "l_brow",
    "r_brow",
    "l_ear",
    "r_ear",
    "mouth",
    "u_lip",
    "l_lip",
    "hair",
    "hat",
    "ear_r",
    "neck_l",
    "neck",
    "cloth",
)

_CELEBA_PALETTE = (
    (0, 0, 0),
    (204, 0, 0),
    (76, 153, 0),
    (204, 204, 0),
    (51, 51, 255),
    (204, 0, 204),
    (0, 255, 255),
    (255, 204, 204),
    (102, 51, 0),
    (255, 0, 0),
    (102, 204, 0),
    (255, 255, 0),
    (0, 0, 153),
    (0, 0, 204),
    (255, 51, 153),
    (0, 204, 204),
    (0, 51, 0),
    (255, 153, 51),
    (0, 204, 0),
)

# The MM CelebA-HQ captions describe attributes; only these name a layout class unambiguously.
_CELEBA_KEYWORDS = {
    3: _word("eyeglasses", "glasses"),
    10: r"\bmouth (?:slightly )?open\b|\bopen mouth\b",
    14: _word("hat", "hats"),
    15: _word("earring", "earrings"),
    16: _word("necklace", "necklaces"),
}

# ------------------------------------------------------------------ demo scenes
# Background + 7 object classes, each drawn in one flat, saturated colour (see scenes.py).
DEMO_CLASSES = (
    "background",
    "red square",
    "green circle",
    "blue triangle",
    "yellow diamond",
    "magenta cross",
    "cyan bar",
    "orange ring",
)

# Object colours are far (> 100 in RGB) from every grey the textured background can take.
_DEMO_PALETTE = (
    (128, 128, 128),
    (220, 30, 30),
    (30, 190, 40),
    (30, 60, 230),
    (240, 220, 20),
    (220, 40, 220),
    (20, 210, 220),
    (245, 140, 20),
)

_DEMO_KEYWORDS = {k: _word(name) for k, name in enumerate(DEMO_CLASSES) if k > 0}

# The 'demo_shapes' variant: the class is the shape alone; every object's colour is drawn from the
# demo object colours independently of its class (scenes.generate_shape_scene), so classes share
# colours and an image's class map is not its colour map. The palette only colours layouts.
DEMO_SHAPE_CLASSES = (
    "background",
    "square",
    "circle",
    "triangle",
    "diamond",
    "cross",
    "bar",
    "ring",
)
_DEMO_SHAPE_KEYWORDS = {k: _word(name) for k, name in enumerate(DEMO_SHAPE_CLASSES) if k > 0}


_INFOS = {
    "demo": DatasetInfo(
        name="demo",
        class_names=DEMO_CLASSES,
        palette=np.array(_DEMO_PALETTE, np.uint8),
        keywords=_DEMO_KEYWORDS,
        ignore_class=-1,
    ),
    "demo_shapes": DatasetInfo(
        name="demo_shapes",
        class_names=DEMO_SHAPE_CLASSES,
        palette=np.array(_DEMO_PALETTE, np.uint8),
        keywords=_DEMO_SHAPE_KEYWORDS,
        ignore_class=-1,
    ),
    "cityscapes": DatasetInfo(
        name="cityscapes",
        class_names=CITYSCAPES_CLASSES,
        palette=np.array(_CITYSCAPES_PALETTE, np.uint8),
        keywords=_CITYSCAPES_KEYWORDS,
        ignore_class=CITYSCAPES_UNLABELED,
    ),
    "celeba": DatasetInfo(
        name="celeba",
        class_names=CELEBA_CLASSES,
        palette=np.array(_CELEBA_PALETTE, np.uint8),
        keywords=_CELEBA_KEYWORDS,
        ignore_class=-1,
    ),
}


def dataset_info(name: str) -> DatasetInfo:
    """The `DatasetInfo` of `config.data.name`; raises ValueError naming the known datasets."""
    if name not in _INFOS:
        raise ConfigError(f"Unknown dataset {name!r}; expected one of {sorted(_INFOS)}.")
    return _INFOS[name]
