"""Layout colouring, image conversion, grids and PNG round trips."""

import numpy as np
import pytest
from PIL import Image

from gcd_jax import viz

PALETTE = np.array([[0, 0, 0], [255, 0, 0], [0, 128, 255]], np.uint8)


def test_colorize_looks_up_each_pixel():
    labels = np.array([[[0, 1], [2, 1]], [[2, 2], [0, 0]]])
    out = viz.colorize(labels, PALETTE)
    assert out.shape == (2, 2, 2, 3) and out.dtype == np.uint8
    for idx in np.ndindex(labels.shape):
        np.testing.assert_array_equal(out[idx], PALETTE[labels[idx]])


def test_colorize_rejects_out_of_range():
    with pytest.raises(ValueError, match="palette has 3"):
        viz.colorize(np.array([[3]]), PALETTE)
    with pytest.raises(ValueError):
        viz.colorize(np.array([[-1]]), PALETTE)


def test_image_to_uint8():
    x = np.array([-1.5, -1.0, 0.0, 0.5, 1.0, 2.0], np.float32)
    np.testing.assert_array_equal(viz.image_to_uint8(x), [0, 0, 128, 191, 255, 255])
    assert viz.image_to_uint8(x).dtype == np.uint8


def test_make_grid_layout():
    n, h, w, p = 3, 4, 5, 2
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, h, w, 3)).astype(np.uint8)
    layouts = rng.integers(0, 3, (n, h, w))
    grid = viz.make_grid(images, layouts, PALETTE, padding=p)
    assert grid.shape == (2 * h + 3 * p, n * w + (n + 1) * p, 3)
    for i in range(n):
        left = p + i * (w + p)
        np.testing.assert_array_equal(grid[p : p + h, left : left + w], images[i])
        top = 2 * p + h
        np.testing.assert_array_equal(grid[top : top + h, left : left + w], PALETTE[layouts[i]])
    assert (grid[:p] == 255).all() and (grid[:, :p] == 255).all()


def test_make_grid_validates():
    with pytest.raises(ValueError, match="uint8"):
        viz.make_grid(np.zeros((1, 2, 2, 3), np.float32), np.zeros((1, 2, 2), int), PALETTE)
    with pytest.raises(ValueError, match="do not match"):
        viz.make_grid(np.zeros((1, 2, 2, 3), np.uint8), np.zeros((1, 2, 3), int), PALETTE)


def test_save_png_round_trip(tmp_path):
    array = np.random.default_rng(1).integers(0, 256, (6, 7, 3)).astype(np.uint8)
    path = tmp_path / "sub" / "grid.png"
    viz.save_png(path, array)
    np.testing.assert_array_equal(np.asarray(Image.open(path)), array)
    with pytest.raises(ValueError, match="uint8"):
        viz.save_png(path, array.astype(np.float32))


def test_wrap_fits_the_width_and_keeps_every_word():
    font = viz._font()
    text = "There is a large red circle on the left and a tiny cyan bar at the bottom right."
    for width in (40, 96, 300):
        lines = viz.wrap(text, width, font)
        assert all(font.getlength(line) <= width for line in lines)
        assert " ".join(lines).split() == text.split()
    pieces = viz.wrap("x" * 60, 30, font)  # a word wider than the column is cut, not lost
    assert len(pieces) > 1 and "".join(pieces) == "x" * 60
    assert viz.wrap("", 30, font) == []


def test_annotated_grid_has_the_upscaled_pairs_captions_and_legend():
    n, h, w, p = 3, 8, 8, 2
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, h, w, 3)).astype(np.uint8)
    layouts = rng.integers(0, 3, (n, h, w))
    captions = ["a red thing on the left", "", "blue"]
    grid = viz.annotated_grid(images, layouts, PALETTE, captions, None, p)
    s = -(-viz.MIN_TILE // w)  # tiles upscaled to at least MIN_TILE pixels, nearest
    top = viz.make_grid(
        np.kron(images, np.ones((1, s, s, 1), np.uint8)),
        np.kron(layouts, np.ones((1, s, s), int)),
        PALETTE,
        p,
    )
    np.testing.assert_array_equal(grid[: top.shape[0]], top)
    assert grid.shape[1] == top.shape[1]
    below = grid[top.shape[0] :]
    # Caption text (dark pixels) under exactly the columns that have a caption.
    for i, caption in enumerate(captions):
        column = below[:, p + i * (w * s + p) : (i + 1) * (w * s + p)]
        assert (column.min(axis=-1) < 100).any() == bool(caption)
    # The legend shows every class colour as a swatch (at least 6x6 pixels of it).
    legend = viz.annotated_grid(images, layouts, PALETTE, None, ("bg", "red", "blue"), p)
    np.testing.assert_array_equal(legend[: top.shape[0]], top)
    for colour in PALETTE:
        assert (legend[top.shape[0] :] == colour).all(axis=-1).sum() >= 36
    with pytest.raises(ValueError, match="2 captions for 3 pairs"):
        viz.annotated_grid(images, layouts, PALETTE, captions[:2])


def test_caption_words_keep_a_visible_space():
    """ "A small" is drawn with a gap of white columns between "A" and "small" at least as wide as
    a third of the font size, wider than any gap inside "small" (it was drawn as "Asmall")."""
    band = viz.caption_band(["A small"], 64, 2, 68)
    ink = (band.min(axis=(0, 2)) < 128)[2:]  # columns holding dark pixels, after the padding
    columns = np.flatnonzero(ink)
    gaps = np.diff(columns) - 1  # white columns between consecutive inked columns
    first_gap = int(gaps[np.argmax(gaps > 0)])  # the first gap: after the "A"
    assert first_gap >= viz.FONT_SIZE // 3
    assert first_gap > gaps[np.argmax(gaps > 0) + 1 :].max()
