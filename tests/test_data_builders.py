"""TFDS builders on fake raw data written in the official on-disk layouts."""

import io
import itertools
import json
import os
import pickle
import shutil
import sys
import zipfile

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from experiments.base import get_config
from gcd_jax.data import celeba, cityscapes, demo_scenes, sources
from gcd_jax.errors import MissingError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# ------------------------------------------------------------------ fake Cityscapes
H, W = 64, 128
CITIES = {"train": {"aachen": 2, "bochum": 1}, "val": {"frankfurt": 2}}
# Label id -> train id of the ids the fake layouts use (Cityscapes table; ignored ids -> 19).
TRAIN_ID = {7: 0, 8: 1, 11: 2, 13: 4, 17: 5, 20: 7, 21: 8, 23: 10, 24: 11, 26: 13}
TRAIN_ID.update({0: 19, 1: 19, 4: 19, 255: 19})
PLURAL = {0: "Roads", 1: "Sidewalks", 2: "Buildings", 4: "Fences", 5: "Poles"}
PLURAL.update({7: "Traffic signs", 8: "Vegetations", 10: "Skies", 11: "People", 13: "Cars"})
PREFIX = "An image of an urban street view with "


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def _fake_cityscapes_files(rng) -> tuple[dict[str, bytes], dict[str, tuple]]:
    """{relative path: bytes} of a tiny Cityscapes tree; {image file name: (image, label ids)}."""
    files, layouts = {}, {}
    first = True
    for split, cities in CITIES.items():
        for city, count in cities.items():
            for j in range(count):
                stem = f"{city}_{j:06d}_000019"
                if first:  # Road, sidewalk, car and ignored pixels only.
                    ids = [7, 8, 26, 0]
                    first = False
                else:
                    ids = rng.choice(sorted(TRAIN_ID), size=rng.integers(2, 7), replace=False)
                if city == "bochum":
                    ids = [*ids, 255]  # A license plate: id -1, stored as 255.
                label = np.array(ids, np.uint8)[np.arange(W) * len(ids) // W][None].repeat(H, 0)
                image = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
                files[f"leftImg8bit/{split}/{city}/{stem}_leftImg8bit.png"] = _png(image)
                files[f"gtFine/{split}/{city}/{stem}_gtFine_labelIds.png"] = _png(label)
                files[f"gtFine/{split}/{city}/{stem}_gtFine_color.png"] = _png(image)
                layouts[f"{stem}_leftImg8bit.png"] = (image, label)
    # The test split has no public labels and must be ignored.
    files["leftImg8bit/test/berlin/berlin_000000_000019_leftImg8bit.png"] = _png(image)
    return files, layouts


def _write_folder(root, files):
    for name, data in files.items():
        path = os.path.join(root, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)


def _write_zips(root, files):
    os.makedirs(root, exist_ok=True)
    for top, zip_name in (
        ("leftImg8bit", "leftImg8bit_trainvaltest.zip"),
        ("gtFine", "gtFine_trainvaltest.zip"),
    ):
        with zipfile.ZipFile(os.path.join(root, zip_name), "w") as archive:
            archive.writestr("README", "fake")
            for name, data in files.items():
                if name.startswith(top + "/"):
                    archive.writestr(name, data)


def _expected_train_ids(label_ids):
    return np.vectorize(TRAIN_ID.get)(label_ids).astype(np.uint8)


def _examples(builder, split):
    return [
        builder.as_data_source(split)[i] for i in range(builder.info.splits[split].num_examples)
    ]


def _text(x):
    return x.decode() if isinstance(x, bytes) else x


@pytest.fixture(scope="module")
def fake_cityscapes():
    return _fake_cityscapes_files(np.random.default_rng(0))


def _prepare(builder, manual_dir):
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=manual_dir)
    )
    return builder


def test_cityscapes_folders_with_caption_files(fake_cityscapes, tmp_path):
    files, layouts = fake_cityscapes
    raw = tmp_path / "raw"
    _write_folder(raw, files)
    names = sorted(layouts)
    captions = {n: [f"caption {i} a", f"caption {i} b"] for i, n in enumerate(names)}
    without = names[1]  # An image the caption file does not list has no captions.
    for split, file_name in (("train", "train_captions.jsonl"), ("val", "val_captions.jsonl")):
        with open(raw / file_name, "w") as f:
            for n in names:
                if n != without and n.split("_")[0] in CITIES[split]:
                    f.write(json.dumps({"file_name": n, "text": captions[n]}) + "\n")
    config = get_config()
    config.data.name, config.data.builder_config = "cityscapes", "full"
    config.data.data_dir, config.data.manual_dir = str(tmp_path / "tfds"), str(raw)
    builder = sources.ensure_built(config)  # Built from manual_dir on first use.
    assert builder.info.splits["train"].num_examples == 3
    assert builder.info.splits["validation"].num_examples == 2
    for split, cities in (("train", ("aachen", "bochum")), ("validation", ("frankfurt",))):
        for ex in _examples(builder, split):
            name = _text(ex["file_name"])
            assert name.split("_")[0] in cities
            image, label_ids = layouts[name]
            np.testing.assert_array_equal(ex["image"], image)
            np.testing.assert_array_equal(ex["label"], _expected_train_ids(label_ids))
            assert [_text(c) for c in ex["captions"]] == ([] if name == without else captions[name])


def test_cityscapes_authors_caption_files(fake_cityscapes, tmp_path):
    """The authors' caption files become splits authors_N holding exactly the images they name,
    found in train/ or val/ (frankfurt lives in val/, as in the reference's loader), with the
    file's captions; training reads one as data.train_split through the ordinary pipeline."""
    files, layouts = fake_cityscapes
    raw = tmp_path / "raw"
    _write_folder(raw, files)
    chosen = {
        "authors_100": [
            "frankfurt_000001_000019_leftImg8bit.png",
            "aachen_000000_000019_leftImg8bit.png",
        ],
        "authors_25": ["bochum_000000_000019_leftImg8bit.png"],
    }
    paths = {
        "authors_100": raw / "caption_files" / "cityscapes" / "100_captions.jsonl",
        "authors_25": raw / "25_captions.jsonl",
    }
    for split, names in chosen.items():
        paths[split].parent.mkdir(parents=True, exist_ok=True)
        with open(paths[split], "w") as f:
            for n in names:
                f.write(json.dumps({"file_name": n, "text": [f"{split} {n}"]}) + "\n")
    config = get_config()
    config.data.name, config.data.builder_config = "cityscapes", "full"
    config.data.data_dir, config.data.manual_dir = str(tmp_path / "tfds"), str(raw)
    builder = sources.ensure_built(config)
    assert "authors_50" not in builder.info.splits
    assert builder.info.splits["train"].num_examples == 3  # the official splits stay
    for split, names in chosen.items():
        examples = _examples(builder, split)
        assert sorted(_text(ex["file_name"]) for ex in examples) == sorted(names)
        for ex in examples:
            name = _text(ex["file_name"])
            image, label_ids = layouts[name]
            np.testing.assert_array_equal(ex["image"], image)
            np.testing.assert_array_equal(ex["label"], _expected_train_ids(label_ids))
            assert [_text(c) for c in ex["captions"]] == [f"{split} {name}"]
    config.data.train_split = "authors_100"
    assert len(sources.open_split(config, config.data.train_split)) == 2


def test_cityscapes_authors_file_naming_a_missing_image(fake_cityscapes, tmp_path):
    files, _ = fake_cityscapes
    raw = tmp_path / "raw"
    _write_folder(raw, files)
    missing = "ulm_000000_000019_leftImg8bit.png"
    (raw / "100_captions.jsonl").write_text(json.dumps({"file_name": missing, "text": ["x"]}))
    builder = cityscapes.CityscapesCaptions(config="full", data_dir=str(tmp_path / "tfds"))
    with pytest.raises(
        MissingError, match=r"100_captions\.jsonl names ulm_000000.*train/ulm.*val/ulm"
    ):
        _prepare(builder, str(raw))


def _caption_classes(caption):
    assert caption.startswith(PREFIX) and caption.endswith(".")
    names = caption[len(PREFIX) : -1].replace(" and ", ", ").split(", ")
    inverse = {v: k for k, v in PLURAL.items()}
    return [inverse[n] for n in names]


def test_cityscapes_zips_generated_captions_resized(fake_cityscapes, tmp_path):
    files, layouts = fake_cityscapes
    _write_zips(tmp_path / "raw", files)
    builder = cityscapes.CityscapesCaptions(config="128x256", data_dir=str(tmp_path / "tfds"))
    _prepare(builder, str(tmp_path / "raw"))
    examples = _examples(builder, "train") + _examples(builder, "validation")
    assert len(examples) == 5
    for ex in examples:
        image, label_ids = layouts[_text(ex["file_name"])]
        expected = _expected_train_ids(label_ids)
        assert ex["image"].shape == (128, 256, 3) and ex["image"].dtype == np.uint8
        np.testing.assert_array_equal(ex["label"], expected.repeat(2, 0).repeat(2, 1))
        present = set(np.unique(expected).tolist()) - {19}
        captions = [_text(c) for c in ex["captions"]]
        assert (
            len(set(captions))
            == len(captions)
            == min(5, len(list(itertools.permutations(present))))
        )
        for caption in captions:
            assert sorted(_caption_classes(caption)) == sorted(present)
    first = next(ex for ex in examples if _text(ex["file_name"]).startswith("aachen_000000"))
    orderings = {
        PREFIX + f"{a}, {b} and {c}."
        for a, b, c in itertools.permutations(["Roads", "Sidewalks", "Cars"])
    }
    assert {_text(c) for c in first["captions"]} <= orderings


def _minimal_city(root, image=None, label=None, label_name=None):
    image = np.zeros((8, 16, 3), np.uint8) if image is None else image
    label = np.full((8, 16), 7, np.uint8) if label is None else label
    files = {}
    for split, city in (("train", "aachen"), ("val", "lindau")):
        stem = f"{city}_000000_000019"
        files[f"leftImg8bit/{split}/{city}/{stem}_leftImg8bit.png"] = (
            image if isinstance(image, bytes) else _png(image)
        )
        files[label_name or f"gtFine/{split}/{city}/{stem}_gtFine_labelIds.png"] = _png(label)
    _write_folder(root, files)


def test_celeba_authors_caption_files(tmp_path):
    """caption_files/celeba/50_captions.jsonl: split authors_50 holds exactly the images it names
    (train or test ids alike) with the file's captions, not celeba-caption/{i}.txt's."""
    rng = np.random.default_rng(2)
    raw = tmp_path / "raw"
    layouts, _, _ = _write_celeba(raw, raw_parts=False, split_files=True, rng=rng)
    folder = raw / "caption_files" / "celeba"
    folder.mkdir(parents=True)
    texts = {24001: ["a face", "the same face"], 2: ["another face"]}
    with open(folder / "50_captions.jsonl", "w") as f:
        for i, t in texts.items():
            f.write(json.dumps({"file_name": f"{i}.jpg", "text": t}) + "\n")
    builder = celeba.MmCelebaHq(config="full", data_dir=str(tmp_path / "tfds"))
    _prepare(builder, str(raw))
    assert "authors_25" not in builder.info.splits
    examples = _examples(builder, "authors_50")
    assert sorted(_text(ex["file_name"]) for ex in examples) == ["2.jpg", "24001.jpg"]
    for ex in examples:
        i = int(_text(ex["file_name"]).split(".")[0])
        assert [_text(c) for c in ex["captions"]] == texts[i]
        np.testing.assert_array_equal(ex["label"], layouts[i].repeat(2, 0).repeat(2, 1))


@pytest.mark.parametrize(
    "case,error,pattern",
    [
        ("missing_dir", FileNotFoundError, r"leftImg8bit_trainvaltest\.zip"),
        ("no_labels", FileNotFoundError, r"gtFine_trainvaltest\.zip"),
        ("bad_value", ValueError, r"aachen_000000_000019_gtFine_labelIds\.png.*\[50\]"),
        ("size_mismatch", ValueError, r"aachen_000000_000019_leftImg8bit\.png"),
        ("unreadable", ValueError, r"Cannot read image .*aachen_000000_000019_leftImg8bit\.png"),
        ("label_missing", FileNotFoundError, r"aachen_000000_000019_gtFine_labelIds\.png"),
    ],
)
def test_cityscapes_clear_errors(tmp_path, case, error, pattern):
    raw = tmp_path / "raw"
    if case == "no_labels":
        _minimal_city(raw)
        shutil.rmtree(raw / "gtFine")
    elif case == "bad_value":
        _minimal_city(raw, label=np.full((8, 16), 50, np.uint8))
    elif case == "size_mismatch":
        _minimal_city(raw, image=np.zeros((8, 8, 3), np.uint8))
    elif case == "unreadable":
        _minimal_city(raw, image=b"not a png")
    elif case == "label_missing":
        _minimal_city(raw, label_name="gtFine/train/aachen/other_gtFine_labelIds.png")
    builder = cityscapes.CityscapesCaptions(config="full", data_dir=str(tmp_path / "tfds"))
    with pytest.raises(error, match=pattern):
        _prepare(builder, str(raw))
    if case == "missing_dir":
        with pytest.raises(error, match=str(raw)):
            _prepare(builder, str(raw))


# ------------------------------------------------------------------ fake MM CelebA-HQ
CELEBA_IDS = [0, 1, 2, 24000, 24001]


def _face_layout(rng) -> np.ndarray:
    """uint8 [16, 16] layout: background, skin face with nose, hair on top, cloth at the bottom."""
    label = np.zeros((16, 16), np.uint8)
    label[3:13, 4:12] = 1  # skin
    label[7:9, 7:9] = 2  # nose
    label[2:5, 3:13] = 13  # hair
    label[13:, :] = 18  # cloth
    if rng.random() < 0.5:
        label[0:2, 5:11] = 14  # hat
    return label


def _write_celeba(root, raw_parts: bool, split_files: bool, rng):
    layouts, images, texts = {}, {}, {}
    for i in CELEBA_IDS:
        layouts[i] = _face_layout(rng)
        ramp = np.linspace(0, 1, 32)[:, None, None] * rng.uniform(50, 200, 3)
        images[i] = np.broadcast_to(ramp + 20, (32, 32, 3)).astype(np.uint8)  # smooth for JPEG
        texts[i] = [f"face {i} caption {j}" for j in range(3)]
        path = root / "CelebA-HQ-img" / f"{i}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(images[i]).save(path, quality=95)
        (root / "celeba-caption").mkdir(exist_ok=True)
        (root / "celeba-caption" / f"{i}.txt").write_text("\n".join(texts[i]) + "\n")
        anno = root / "CelebAMask-HQ-mask-anno"
        if raw_parts:
            folder = anno / str(i // 2000)
            folder.mkdir(parents=True, exist_ok=True)
            face = (layouts[i] >= 1) & (layouts[i] <= 12)  # The skin mask lies under the nose.
            masks = {"skin": face, "nose": layouts[i] == 2, "hair": layouts[i] == 13}
            masks.update({"cloth": layouts[i] == 18, "hat": layouts[i] == 14})
            for part, mask in masks.items():
                if mask.any():
                    Image.fromarray(mask.astype(np.uint8) * 255).save(
                        folder / f"{i:05d}_{part}.png"
                    )
        else:
            (anno / "preprocessed").mkdir(parents=True, exist_ok=True)
            Image.fromarray(layouts[i]).save(anno / "preprocessed" / f"{i}.png")
    if split_files:
        for split, ids in (("train", ["1", "24001"]), ("test", ["0", "2", "24000"])):
            (root / split).mkdir()
            with open(root / split / "filenames.pickle", "wb") as f:
                pickle.dump(ids, f)
    return layouts, images, texts


@pytest.mark.parametrize("raw_parts", [False, True])
def test_celeba(tmp_path, raw_parts):
    rng = np.random.default_rng(1)
    layouts, images, texts = _write_celeba(tmp_path / "raw", raw_parts, not raw_parts, rng)
    builder = celeba.MmCelebaHq(config="full", data_dir=str(tmp_path / "tfds"))
    _prepare(builder, str(tmp_path / "raw"))
    expected_ids = (
        {"train": [1, 24001], "test": [0, 2, 24000]}
        if not raw_parts
        else {
            "train": [0, 1, 2],
            "test": [24000, 24001],
        }
    )
    for split, ids in expected_ids.items():
        examples = _examples(builder, split)
        assert sorted(int(_text(ex["file_name"]).split(".")[0]) for ex in examples) == ids
        for ex in examples:
            i = int(_text(ex["file_name"]).split(".")[0])
            # Layouts at 16x16 are upsampled (nearest) to the 32x32 image at 'full'.
            np.testing.assert_array_equal(ex["label"], layouts[i].repeat(2, 0).repeat(2, 1))
            assert np.abs(ex["image"].astype(int) - images[i]).mean() < 4  # JPEG round trips
            assert [_text(c) for c in ex["captions"]] == texts[i]


@pytest.mark.parametrize(
    "case,error,pattern",
    [
        ("missing_dir", FileNotFoundError, r"CelebA-HQ-img/\{i\}\.jpg"),
        ("bad_value", ValueError, r"preprocessed/1\.png.*19"),
        ("aspect", ValueError, r"CelebA-HQ-img/1\.jpg"),
        ("no_caption", FileNotFoundError, r"celeba-caption/1\.txt"),
    ],
)
def test_celeba_clear_errors(tmp_path, case, error, pattern):
    raw = tmp_path / "raw"
    if case != "missing_dir":
        _write_celeba(raw, raw_parts=False, split_files=False, rng=np.random.default_rng(0))
        layout_path = raw / "CelebAMask-HQ-mask-anno" / "preprocessed" / "1.png"
        if case == "bad_value":
            Image.fromarray(np.full((16, 16), 19, np.uint8)).save(layout_path)
        elif case == "aspect":
            Image.fromarray(np.zeros((16, 8), np.uint8)).save(layout_path)
        elif case == "no_caption":
            os.remove(raw / "celeba-caption" / "1.txt")
    builder = celeba.MmCelebaHq(config="full", data_dir=str(tmp_path / "tfds"))
    with pytest.raises(error, match=pattern):
        _prepare(builder, str(raw))


def test_missing_dataset_names_the_build_command(tmp_path):
    config = get_config()
    config.data.name, config.data.data_dir = "celeba", str(tmp_path)
    pattern = r"(?s)mm_celeba_hq/256x256 is not built.*python -m gcd_jax\.data\.build"
    with pytest.raises(FileNotFoundError, match=pattern):
        sources.ensure_built(config)


@pytest.mark.parametrize(
    "folder,library_cls",
    [
        ("cityscapes_captions", cityscapes.CityscapesCaptions),
        ("mm_celeba_hq", celeba.MmCelebaHq),
        ("demo_scenes", demo_scenes.DemoScenes),
        ("demo_shape_scenes", demo_scenes.DemoShapeScenes),
    ],
)
def test_tfds_cli_entries(folder, library_cls):
    """`tfds build datasets/<folder>` finds one builder, named like the library's."""
    with tfds.core.utils.add_sys_path(os.path.join(REPO, "datasets")):
        builder_cls = tfds.core.community.builder_cls_from_module(
            f"{folder}.{folder}_dataset_builder"
        )
    assert issubclass(builder_cls, library_cls) and builder_cls.name == library_cls.name == folder
    sys.modules.pop(f"{folder}.{folder}_dataset_builder", None)
