"""Input pipeline on the demo scenes: batches, augmentation, caption fraction, resuming, hosts."""

import functools
import os

import numpy as np
import pytest
from PIL import Image

from experiments.base import get_config
from gcd_jax.data import classes, pipeline, scenes, sources
from gcd_jax.models import text

NUM_TRAIN = 64  # Demo validation: max(64, 64 // 8) = 64.
LENGTH = 160  # Byte tokens; every demo caption fits.
DEMO = classes.dataset_info("demo")


# The learned encoder's tokenizer: UTF-8 bytes + 1, zero-padded; mask = non-padding.
byte_tokenize = functools.partial(text.tokenize_bytes, max_length=LENGTH)


def detokenize(tokens, mask):
    return bytes((tokens[mask] - 1).astype(np.uint8).tolist()).decode()


@pytest.fixture(scope="module")
def data_dir(demo_data_dir):
    """The session's demo scenes (64 training scenes, built once for the whole suite)."""
    return str(demo_data_dir)


def make_config(data_dir, batch=16, **data):
    config = get_config()
    config.data.data_dir = data_dir
    config.data.num_demo_examples = NUM_TRAIN
    config.data.num_workers = 2
    config.train.global_batch_size = batch
    for key, value in data.items():
        setattr(config.data, key, value)
    return config


def take(config, steps, start_step=0, **kwargs):
    iterator = pipeline.create_train_iterator(config, byte_tokenize, start_step, **kwargs)
    batches = [next(iterator) for _ in range(steps)]
    assert iterator.step == start_step + steps
    iterator.close()
    return batches


def test_batch_shapes_dtypes_ranges(data_dir):
    (batch,) = take(make_config(data_dir, augment="none"), 1)
    assert set(batch) == {"image", "label", "tokens", "mask", "has_text"}
    assert batch["image"].shape == (16, 32, 32, 3) and batch["image"].dtype == np.float32
    assert -1.0 <= batch["image"].min() and batch["image"].max() <= 1.0
    assert batch["label"].shape == (16, 32, 32) and batch["label"].dtype == np.int32
    assert 0 <= batch["label"].min() and batch["label"].max() < 8
    assert batch["tokens"].shape == (16, LENGTH) and batch["tokens"].dtype == np.int32
    assert batch["mask"].shape == (16, LENGTH) and batch["mask"].dtype == bool
    assert batch["has_text"].shape == (16,) and batch["has_text"].all()
    # Image and layout of each example belong together, and its caption names its classes.
    np.testing.assert_array_equal(scenes.segment_demo(batch["image"]), batch["label"])
    for i in range(16):
        caption = detokenize(batch["tokens"][i], batch["mask"][i])
        assert DEMO.caption_classes(caption) == sorted(set(np.unique(batch["label"][i])) - {0})


def test_flip_moves_image_and_layout_together(data_dir):
    plain = take(make_config(data_dir, augment="none", batch=32), 1)[0]
    flipped = take(make_config(data_dir, augment="flip", batch=32), 1)[0]
    np.testing.assert_array_equal(scenes.segment_demo(flipped["image"]), flipped["label"])
    kinds = []
    for i in range(32):
        same = np.array_equal(flipped["label"][i], plain["label"][i])
        mirrored = np.array_equal(flipped["label"][i], plain["label"][i][:, ::-1])
        image = plain["image"][i] if same else plain["image"][i][:, ::-1]
        np.testing.assert_array_equal(flipped["image"][i], image)
        assert same or mirrored
        kinds.append(same and not mirrored)
    assert any(kinds) and not all(kinds)


def test_resized_crop_keeps_image_and_layout_aligned(data_dir):
    config = make_config(data_dir, augment="resized_crop", image_size=(24, 48))
    (batch,) = take(config, 1)
    assert batch["image"].shape == (16, 24, 48, 3) and batch["label"].shape == (16, 24, 48)
    # Resampling blends object borders, so the segmenter agrees on almost, not all, pixels.
    assert (scenes.segment_demo(batch["image"]) == batch["label"]).mean() > 0.95


def test_caption_fraction_is_exact_and_fixed(data_dir):
    config = make_config(data_dir, augment="none", caption_fraction=0.25)
    source = sources.open_split(config, "train")
    by_image = {}
    for i in range(len(source)):
        ex = source[i]
        captions = [c.decode() if isinstance(c, bytes) else c for c in ex["captions"]]
        by_image[ex["image"].tobytes()] = (i, captions)
    batches = take(config, 2 * NUM_TRAIN // 16)  # Two epochs.
    with_text = [set(), set()]
    for step, batch in enumerate(batches):
        images = np.rint((batch["image"] + 1) * 127.5).astype(np.uint8)
        for j in range(16):
            index, captions = by_image[images[j].tobytes()]
            if batch["has_text"][j]:
                with_text[step * 16 // NUM_TRAIN].add(index)
                assert detokenize(batch["tokens"][j], batch["mask"][j]) in captions
            else:
                assert not batch["mask"][j].any()  # The null text: an empty caption.
    assert len(with_text[0]) == NUM_TRAIN // 4
    assert with_text[0] == with_text[1]
    # Every example appears once per epoch.
    first_epoch = [
        by_image[im.tobytes()][0]
        for b in batches[: NUM_TRAIN // 16]
        for im in np.rint((b["image"] + 1) * 127.5).astype(np.uint8)
    ]
    assert sorted(first_epoch) == list(range(NUM_TRAIN))


def test_resuming_at_step_k_gives_batch_k(data_dir):
    # Batches of 24 over 64 examples: batch 2 straddles the first epoch boundary.
    config = make_config(data_dir, batch=24, augment="resized_crop", caption_fraction=0.5)
    full = take(config, 6)
    resumed = take(config, 3, start_step=3)
    for a, b in zip(full[3:], resumed, strict=True):
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])
    again = take(config, 1)[0]
    np.testing.assert_array_equal(again["image"], full[0]["image"])
    other_seed = take(make_config(data_dir, batch=24, augment="resized_crop", seed=1), 1)[0]
    assert not np.array_equal(other_seed["image"], full[0]["image"])


def test_hosts_split_the_global_batch(data_dir):
    config = make_config(data_dir, augment="flip", caption_fraction=0.5)
    whole = take(config, 3, start_step=2)
    hosts = [take(config, 3, start_step=2, process_index=p, process_count=2) for p in range(2)]
    for step in range(3):
        assert hosts[0][step]["image"].shape[0] == 8
        for key in whole[step]:
            joined = np.concatenate([hosts[0][step][key], hosts[1][step][key]])
            np.testing.assert_array_equal(joined, whole[step][key])
    with pytest.raises(ValueError, match="does not split"):
        pipeline.create_train_iterator(config, byte_tokenize, process_index=0, process_count=3)


def test_eval_examples(data_dir):
    config = make_config(data_dir)
    examples = pipeline.load_eval_examples(config, 10)
    assert examples["image"].shape == (10, 32, 32, 3) and examples["label"].shape == (10, 32, 32)
    np.testing.assert_array_equal(scenes.segment_demo(examples["image"]), examples["label"])
    for caption, label in zip(examples["captions"], examples["label"], strict=True):
        assert DEMO.caption_classes(caption) == sorted(set(np.unique(label)) - {0})
    assert len(pipeline.load_eval_examples(config, 1000)["image"]) == 64  # the whole split
    assert sources.eval_split(config) == "validation"


def test_unknown_augmentation(data_dir):
    with pytest.raises(ValueError, match="resized_crop"):
        pipeline.create_train_iterator(make_config(data_dir, augment="rotate"), byte_tokenize)


# ------------------------------------------------------------------ the reference's nearest rule
NEAREST_FIXTURE = os.path.join(os.path.dirname(__file__), "fixtures", "nearest_reference.npz")


def torch_nearest_rows(n_in, n_out):
    """PyTorch's nearest_idx (F.interpolate(mode='nearest'), torchvision's tensor
    Resize(NEAREST)) written out: identity for equal sizes, i // 2 when doubling, else
    floor(float32(i) * float32(n_in / n_out)) in float32 arithmetic, at most n_in - 1."""
    if n_out == n_in:
        return list(range(n_out))
    if n_out == 2 * n_in:
        return [i // 2 for i in range(n_out)]
    scale = np.float32(np.float32(n_in) / np.float32(n_out))
    return [min(int(np.floor(np.float32(np.float32(i) * scale))), n_in - 1) for i in range(n_out)]


def test_nearest_rule_matches_pytorch():
    """Against F.interpolate itself (tests/fixtures/make_nearest_fixture.py): 176 size pairs, 156
    of them where float32 rounding takes the pixel before the exact floor(i * in / out)."""
    from gcd_jax import nearest

    f = np.load(NEAREST_FIXTURE)
    offsets = np.cumsum([0, *f["pairs"][:, 1]])
    differs = 0
    for (n_in, n_out), start, stop in zip(f["pairs"], offsets[:-1], offsets[1:], strict=True):
        expected = f["index"][start:stop]
        np.testing.assert_array_equal(nearest.source_index(int(n_in), int(n_out)), expected)
        differs += bool((expected != (np.arange(n_out) * n_in) // n_out).any())
    assert differs == 156


@pytest.mark.parametrize("n_in,n_out", [(7, 3), (5, 9), (13, 5), (11, 11), (9, 4), (2, 82)])
def test_nearest_rule_closed_form(n_in, n_out):
    from gcd_jax import nearest

    assert nearest.source_index(n_in, n_out).tolist() == torch_nearest_rows(n_in, n_out)
    # A window: floor(x0 + i * extent / n_out), inside the axis.
    got = nearest.source_index(n_in, n_out, 1.5, n_in - 2.0).tolist()
    assert got == [int(np.floor(1.5 + i * (n_in - 2.0) / n_out)) for i in range(n_out)]


@pytest.mark.parametrize("src,dst", [((7, 9), (3, 5)), ((5, 3), (9, 7)), ((13, 2), (5, 82))])
def test_pipeline_nearest_is_the_reference_rule(src, dst):
    """data.resize='nearest': image and layout take PyTorch's source pixel in each axis, the same
    pixels as the SR path's joint.resize_nearest (PIL's centre rule would differ here)."""
    import jax.numpy as jnp

    from gcd_jax.data import augment
    from gcd_jax.diffusion import joint

    h, w = src
    ids = np.arange(h * w).reshape(h, w)
    image = np.stack([ids % 256, ids // 256, np.zeros_like(ids)], -1).astype(np.uint8)
    label = (ids % 251).astype(np.uint8)
    out_image, out_label = augment.resize_pair(image, label, dst, "nearest")
    rows, cols = torch_nearest_rows(h, dst[0]), torch_nearest_rows(w, dst[1])
    expected = ids[np.ix_(rows, cols)]
    got = out_image[..., 0].astype(int) + 256 * out_image[..., 1].astype(int)
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(out_label, expected % 251)
    lowres = joint.resize_nearest(jnp.asarray(ids)[None], dst)[0]
    np.testing.assert_array_equal(np.asarray(lowres), expected)
    pil = np.asarray(Image.fromarray(label).resize(dst[::-1], Image.Resampling.NEAREST))
    assert (pil != out_label).any()


@pytest.mark.parametrize("name", ["demo", "demo_shapes"])
def test_memory_source_serves_the_stored_scenes(data_dir, name):
    """``data.source='memory'`` draws the scenes the TFDS builder stored (PNG-decoded images,
    layouts, captions), each under its file name; TFDS stores them shuffled, so the order
    differs."""
    stored, drawn = (make_config(data_dir, name=name, source=s) for s in ("tfds", "memory"))
    for split in ("train", "validation"):
        a, b = sources.open_split(stored, split), sources.open_split(drawn, split)
        assert len(a) == len(b)
        by_name = {b[i]["file_name"]: b[i] for i in range(len(b))}
        assert sorted(by_name) == sorted(a[i]["file_name"].decode() for i in range(len(a)))
        for i in range(0, len(a), 7):
            scene = by_name[a[i]["file_name"].decode()]
            np.testing.assert_array_equal(a[i]["image"], scene["image"])
            np.testing.assert_array_equal(a[i]["label"], scene["label"])
            assert [c.decode() for c in a[i]["captions"]] == list(scene["captions"])


def test_memory_source_refuses_what_it_cannot_serve(data_dir):
    from gcd_jax.errors import ConfigError

    with pytest.raises(ConfigError, match="generated data sets"):
        sources.open_split(make_config(data_dir, name="cityscapes", source="memory"), "train")
    with pytest.raises(ConfigError, match="whole splits"):
        sources.open_split(make_config(data_dir, source="memory"), "train[:50%]")
    with pytest.raises(ConfigError, match="Unknown config.data.source 'tfrecord'"):
        sources.open_split(make_config(data_dir, source="tfrecord"), "train")


def test_memory_source_needs_no_tensorflow(tmp_path):
    """With TensorFlow and TFDS unimportable, the training loop's modules import, the memory
    source feeds a batch, and the metric log writes metrics.jsonl (no TensorBoard)."""
    import subprocess
    import sys

    code = f"""
import sys, json
sys.modules["tensorflow"] = sys.modules["tensorflow_datasets"] = None  # ImportError on import
from experiments import demo
from gcd_jax.cli import evaluate, sample, train  # noqa: F401
from gcd_jax.data import pipeline
from gcd_jax.models import text
from gcd_jax.training import loop, metric_log  # noqa: F401
config = demo.get_config("tiny")
config.data.source = "memory"
data = pipeline.create_train_iterator(config, lambda c: text.tokenize_bytes(c, max_length=64))
batch = next(data)
data.close()
assert batch["image"].shape == (8, 32, 32, 3), batch["image"].shape
log = metric_log.MetricLog({str(tmp_path)!r}, 0, 1, True)
log.write(1, {{"loss": 1.0, "loss_img": 0.5, "loss_lbl": 0.5}})
log.close()
assert json.loads(open({str(tmp_path / "metrics.jsonl")!r}).read())["loss"] == 1.0
assert "tensorflow" not in [m for m in sys.modules if sys.modules[m] is not None]
print("ok")
"""
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=os.getcwd()
    )
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stderr[-3000:]
