"""The 'demo_shapes' variant (experiments/demo.py:shapes): class = shape, colours independent of
it; its exact segmenter, captions, and the data set built through the pipeline."""

import numpy as np
import pytest

from gcd_jax.data import classes, scenes

SHAPES = classes.dataset_info("demo_shapes")
OBJECT_COLOURS = classes.dataset_info("demo").palette[1:].astype(np.int64)  # [7, 3]


@pytest.fixture(scope="module")
def shape_scenes():
    return [scenes.shape_example(0, 0, i) for i in range(300)]


def _object_colours(scene) -> dict[int, int]:
    """{class id: index of its colour in OBJECT_COLOURS} read off the pixels of each object."""
    out = {}
    for c in set(np.unique(scene["label"]).tolist()) - {0}:
        pixels = scene["image"][scene["label"] == c].astype(np.int64)
        (match,) = np.flatnonzero((OBJECT_COLOURS[None] == pixels[:, None]).all(-1).all(0))
        out[c] = int(match)
    return out


def test_segmenter_recovers_every_layout_exactly(shape_scenes):
    images = np.stack([s["image"] for s in shape_scenes])
    labels = np.stack([s["label"] for s in shape_scenes])
    np.testing.assert_array_equal(scenes.segment_shapes(images), labels)
    np.testing.assert_array_equal(scenes.segment_shapes(images / 127.5 - 1.0), labels)


def test_segmenter_is_robust_to_noise(shape_scenes):
    """+-20 per channel (imperfect generated images) must not change any class."""
    rng = np.random.default_rng(1)
    images = np.stack([s["image"] for s in shape_scenes[:100]]).astype(np.float64)
    noisy = np.clip(images + rng.uniform(-20, 20, images.shape), 0, 255) / 127.5 - 1.0
    labels = np.stack([s["label"] for s in shape_scenes[:100]])
    np.testing.assert_array_equal(scenes.segment_shapes(noisy), labels)


def test_segmenter_reads_shape_not_colour():
    """The same shape in every object colour is the same class; a recoloured scene keeps its
    layout."""
    scene = scenes.shape_example(0, 0, 3)
    for colour in OBJECT_COLOURS:
        image = scene["image"].copy()
        image[scene["label"] > 0] = colour
        # One colour for all objects: touching objects would merge, these do not touch.
        np.testing.assert_array_equal(scenes.segment_shapes(image), scene["label"])


def test_templates_of_different_classes_differ():
    """Brute force over the template bank: no mask is drawn by two classes (else the segmenter
    could not be exact)."""
    masks, labels = scenes._shape_templates()
    seen = {}
    for mask, c in zip(masks.astype(bool), labels, strict=True):
        assert seen.setdefault(mask.tobytes(), c) == c


def test_colour_does_not_give_the_class(shape_scenes):
    """Every class takes every colour; knowing an object's colour predicts its class no better
    than chance (best colour -> class map accuracy vs 1/7, 2 000 objects)."""
    more = shape_scenes + [scenes.shape_example(0, 0, i) for i in range(300, 800)]
    pairs = np.array([(c, k) for s in more for c, k in _object_colours(s).items()])
    table = np.zeros((8, 7), int)
    np.add.at(table, (pairs[:, 0], pairs[:, 1]), 1)
    assert (table[1:] > 0).all()
    best_map_accuracy = table.max(0).sum() / len(pairs)
    assert best_map_accuracy < 1 / 7 + 0.05, table
    # Within a scene colours differ (so objects never merge).
    for s in more:
        colours = list(_object_colours(s).values())
        assert len(set(colours)) == len(colours)


def test_captions_name_exactly_the_classes_present(shape_scenes):
    counts = set()
    for scene in shape_scenes:
        present = sorted(set(np.unique(scene["label"]).tolist()) - {0})
        counts.add(len(present))
        for caption in scene["captions"]:
            assert SHAPES.caption_classes(caption) == present, caption
            assert classes.dataset_info("demo").caption_classes(caption) == []
    assert counts == {1, 2, 3, 4}


def test_config_variant_and_pipeline(tmp_path):
    """experiments/demo.py:shapes builds the variant's data, batches match their layouts, and the
    word tokenizer knows every caption word."""
    from experiments import demo
    from gcd_jax.data import pipeline
    from gcd_jax.models import text

    config = demo.get_config("shapes")
    config.data.data_dir, config.data.num_demo_examples = str(tmp_path), 64
    config.data.num_workers, config.train.global_batch_size = 1, 8
    assert config.data.name == "demo_shapes"
    examples = pipeline.load_eval_examples(config, 16)
    np.testing.assert_array_equal(scenes.segment_shapes(examples["image"]), examples["label"])
    vocabulary = set(" ".join(text.VOCABULARIES["demo_shapes"]()).lower().split())
    for caption in examples["captions"]:
        words = str(caption).lower().replace(",", " ").replace(".", " ").split()
        assert set(words) <= vocabulary, caption
    with pytest.raises(ValueError, match="shapes"):
        demo.get_config("colours")
