"""Demo scenes, their exact segmenter, and the class tables / caption parsers (no TensorFlow)."""

import itertools

import numpy as np
import pytest

from gcd_jax.data import classes, scenes

DEMO = classes.dataset_info("demo")


@pytest.fixture(scope="module")
def demo_scenes():
    return [scenes.demo_example(0, 0, i) for i in range(300)]


def test_segmenter_recovers_every_layout_exactly(demo_scenes):
    images = np.stack([s["image"] for s in demo_scenes])
    labels = np.stack([s["label"] for s in demo_scenes])
    np.testing.assert_array_equal(scenes.segment_demo(images), labels)
    # The model's float convention [-1, 1] gives the same answer.
    np.testing.assert_array_equal(scenes.segment_demo(images / 127.5 - 1.0), labels)


def test_segmenter_is_robust_to_noise(demo_scenes):
    """Generated images are imperfect: +-20 per channel must not change any class."""
    rng = np.random.default_rng(1)
    images = np.stack([s["image"] for s in demo_scenes]).astype(np.float64)
    noisy = np.clip(images + rng.uniform(-20, 20, images.shape), 0, 255) / 127.5 - 1.0
    labels = np.stack([s["label"] for s in demo_scenes])
    np.testing.assert_array_equal(scenes.segment_demo(noisy), labels)


def test_background_colours_never_read_as_objects():
    """Every grey level x every extreme tint the background texture can take is class 0."""
    greys = np.arange(70, 181)
    tints = np.array(list(itertools.product((-8, 0, 8), repeat=3)))
    colours = (greys[:, None, None] + tints[None, :, :]).reshape(-1, 1, 3).astype(np.uint8)
    assert np.all(scenes.segment_demo(colours) == 0)
    # ... and each object colour is its own class.
    objects = DEMO.palette[1:].reshape(-1, 1, 3)
    np.testing.assert_array_equal(scenes.segment_demo(objects)[:, 0], np.arange(1, 8))


def test_captions_name_exactly_the_classes_present(demo_scenes):
    for scene in demo_scenes:
        present = sorted(set(np.unique(scene["label"]).tolist()) - {0})
        assert len(scene["captions"]) == 3
        for caption in scene["captions"]:
            assert DEMO.caption_classes(caption) == present, caption


def test_scenes_vary_and_are_deterministic(demo_scenes):
    counts = [len(set(np.unique(s["label"]).tolist()) - {0}) for s in demo_scenes]
    assert set(counts) == {1, 2, 3, 4}
    seen = set(np.concatenate([np.unique(s["label"]) for s in demo_scenes]).tolist())
    assert seen == set(range(8))
    again = scenes.demo_example(0, 0, 7)
    np.testing.assert_array_equal(again["image"], demo_scenes[7]["image"])
    assert again["captions"] == demo_scenes[7]["captions"]
    other_stream = scenes.demo_example(0, 1, 7)
    assert not np.array_equal(other_stream["image"], demo_scenes[7]["image"])


def test_caption_mentions_size_and_position():
    # One object: its size and grid cell are recoverable from the layout alone.
    checked = 0
    for i in range(200):
        scene = scenes.demo_example(3, 0, i)
        present = sorted(set(np.unique(scene["label"]).tolist()) - {0})
        if len(present) != 1:
            continue
        ys, xs = np.nonzero(scene["label"])
        # Small objects span at most 8 pixels, large ones at least 10 even where cut by the border.
        extent = max(ys.max() - ys.min(), xs.max() - xs.min()) + 1
        size = "large" if extent >= 9 else "small"
        cy, cx = (ys.max() + ys.min() + 1) / 2, (xs.max() + xs.min() + 1) / 2
        row, col = int(cy // (32 / 3)), int(cx // (32 / 3))
        where = ["top", "", "bottom"][row] + " " + ["left", "", "right"][col]
        where = where.strip() or "center"
        name = classes.DEMO_CLASSES[present[0]]
        assert scene["captions"][0].lower().startswith(f"a {size} {name}"), scene["captions"]
        assert where in scene["captions"][0], scene["captions"]
        checked += 1
    assert checked > 20


# Official Cityscapes labels (name, id, trainId; 255 = ignored), transcribed from the dataset's
# labels table, as an independent reference for the id -> train id mapping.
_CITYSCAPES_LABELS = [
    ("unlabeled", 0, 255),
    ("ego vehicle", 1, 255),
    ("rectification border", 2, 255),
    ("out of roi", 3, 255),
    ("static", 4, 255),
    ("dynamic", 5, 255),
    ("ground", 6, 255),
    ("road", 7, 0),
    ("sidewalk", 8, 1),
    ("parking", 9, 255),
    ("rail track", 10, 255),
    ("building", 11, 2),
    ("wall", 12, 3),
    ("fence", 13, 4),
    ("guard rail", 14, 255),
    ("bridge", 15, 255),
    ("tunnel", 16, 255),
    ("pole", 17, 5),
    ("polegroup", 18, 255),
    ("traffic light", 19, 6),
    ("traffic sign", 20, 7),
    ("vegetation", 21, 8),
    ("terrain", 22, 9),
    ("sky", 23, 10),
    ("person", 24, 11),
    ("rider", 25, 12),
    ("car", 26, 13),
    ("truck", 27, 14),
    ("bus", 28, 15),
    ("caravan", 29, 255),
    ("trailer", 30, 255),
    ("train", 31, 16),
    ("motorcycle", 32, 17),
    ("bicycle", 33, 18),
]


def test_cityscapes_id_table():
    lut = classes.cityscapes_id_lut()
    for name, label_id, train_id in _CITYSCAPES_LABELS:
        expected = 19 if train_id == 255 else train_id
        assert lut[label_id] == expected, name
        if train_id != 255:
            assert classes.CITYSCAPES_CLASSES[train_id] == name
    assert lut[255] == 19  # license plate (-1 as uint8)
    assert np.all(lut[34:255] == -1)
    assert classes.dataset_info("cityscapes").num_classes == 20


def test_caption_parsers():
    city = classes.dataset_info("cityscapes")
    reference = (
        "An image of an urban street view with Buildings, Fences, Roads, People, Skies, "
        "Traffic signs, Poles, Vegetations, Sidewalks and Cars."
    )
    names = {classes.CITYSCAPES_CLASSES[k] for k in city.caption_classes(reference)}
    assert names == {
        "building",
        "fence",
        "road",
        "person",
        "sky",
        "traffic sign",
        "pole",
        "vegetation",
        "sidewalk",
        "car",
    }
    celeba = classes.dataset_info("celeba")
    caption = (
        "The person has mouth slightly open, high cheekbones, and double chin and wears hat, "
        "and earrings."
    )
    assert [classes.CELEBA_CLASSES[k] for k in celeba.caption_classes(caption)] == [
        "mouth",
        "hat",
        "ear_r",
    ]
    assert celeba.caption_classes("She has wavy hair. She is attractive.") == []


def test_palettes_and_tables():
    for name, k in (("demo", 8), ("cityscapes", 20), ("celeba", 19)):
        info = classes.dataset_info(name)
        assert info.num_classes == k and info.palette.shape == (k, 3)
        assert info.palette.dtype == np.uint8
        assert len({tuple(c) for c in info.palette}) >= k - 1  # distinct colours
    assert classes.dataset_info("celeba").class_names[13] == "hair"
    with pytest.raises(ValueError, match="cityscapes"):
        classes.dataset_info("imagenet")
