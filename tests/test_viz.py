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
