"""``--mode serve``: the page's input conversions against hand-made layouts, its bad-input messages,
and the real page in headless Chromium on the tests' tiny checkpoint (``tests/page_driver.py``)."""

import numpy as np
import pytest
from PIL import Image

from gcd_jax import viz
from gcd_jax.cli import page as page_lib
from gcd_jax.cli import serve
from gcd_jax.data import classes
from gcd_jax.errors import InputError
from gcd_jax.inference import files

INFO = classes.dataset_info("demo")
PALETTE = INFO.palette


def coloured(layout: np.ndarray, scale: int) -> np.ndarray:
    return viz.colorize(layout, PALETTE).repeat(scale, 0).repeat(scale, 1)


def test_layout_from_colours_recovers_the_classes_of_each_block():
    rng = np.random.default_rng(0)
    layout = rng.integers(0, len(PALETTE), (8, 8))
    np.testing.assert_array_equal(
        files.layout_from_colours(coloured(layout, 1), PALETTE, (8, 8)), layout
    )
    big = coloured(layout, 4)
    # A painted canvas: colours a little off, and anti-aliased stroke edges: half-way blends of
    # two classes on one pixel of every other block (3 % of the pixels, under MAX_UNKNOWN).
    noisy = np.clip(big.astype(int) + rng.integers(-12, 13, big.shape), 0, 255).astype(np.uint8)
    blend = 0.5 * noisy[::8, ::4] + 0.5 * np.roll(noisy, 4, axis=1)[::8, ::4]
    noisy[::8, ::4] = blend.astype(np.uint8)
    np.testing.assert_array_equal(files.layout_from_colours(noisy, PALETTE, (8, 8)), layout)
    # Transparent pixels (an RGBA upload) are background.
    rgba = np.concatenate([big, np.full((*big.shape[:2], 1), 255, np.uint8)], -1)
    rgba[:4, :4, 3] = 0
    expected = layout.copy()
    expected[0, 0] = 0
    np.testing.assert_array_equal(files.layout_from_colours(rgba, PALETTE, (8, 8)), expected)


def test_layout_from_colours_names_bad_colours_and_sizes():
    layout = np.zeros((8, 8), int)
    image = coloured(layout, 2)
    image[:8] = 255  # half the picture white, in no palette colour
    with pytest.raises(InputError, match=r"50% of the layout's pixels .*#ffffff.*background"):
        files.layout_from_colours(image, PALETTE, (8, 8), INFO.class_names)
    with pytest.raises(InputError, match=r"layout is 12x16 .* needs 8x8 or an integer multiple"):
        files.layout_from_colours(np.zeros((12, 16, 3), np.uint8), PALETTE, (8, 8))


def test_read_layout_file_takes_ids_or_colours(tmp_path):
    layout = np.random.default_rng(1).integers(0, len(PALETTE), (32, 32)).astype(np.uint8)
    ids, rgb = tmp_path / "ids.png", tmp_path / "rgb.png"
    Image.fromarray(layout).save(ids)
    Image.fromarray(coloured(layout, 2)).save(rgb)
    for path in (ids, rgb):
        np.testing.assert_array_equal(files.read_layout(str(path), INFO, (32, 32)), layout)
    Image.fromarray(np.full((32, 32), 9, np.uint8)).save(ids)
    with pytest.raises(InputError, match=r"label values span \[9, 9\], need \[0, 8\)"):
        files.read_layout(str(ids), INFO, (32, 32))
    Image.fromarray(layout[:16]).save(ids)
    with pytest.raises(InputError, match=r"is \(16, 32\), the model needs \(32, 32\)"):
        files.read_layout(str(ids), INFO, (32, 32))
    (tmp_path / "junk.png").write_bytes(b"not a png")
    with pytest.raises(InputError, match="not an image file"):
        files.read_layout(str(tmp_path / "junk.png"), INFO, (32, 32))


def test_image_for_model_resizes_to_the_model_range():
    image = np.zeros((64, 96, 4), np.uint8)
    image[..., 0], image[..., 3] = 255, 7  # alpha dropped
    out = files.image_for_model(image, (32, 32))
    assert out.shape == (32, 32, 3) and out.dtype == np.float32
    np.testing.assert_allclose(out[..., 0], 1.0)
    np.testing.assert_allclose(out[..., 1:], -1.0)
    with pytest.raises(InputError, match="expected an RGB picture"):
        files.image_for_model(np.zeros((4, 4, 2), np.uint8), (32, 32))


def test_legend_names_every_class_in_its_colour():
    html = serve.legend_html(INFO)
    for k, (name, (r, g, b)) in enumerate(zip(INFO.class_names, PALETTE, strict=True)):
        assert f"rgb({r},{g},{b})" in html and f"{k}: {name}" in html


@pytest.fixture(scope="module")
def page(trained_demo):
    config, workdir = trained_demo
    return page_lib.Page.load(config, workdir)


def test_page_rejects_bad_input_with_messages(page):
    with pytest.raises(InputError, match="Type a prompt"):
        page.text_to_image("  ", 2, 4, 3.0, 0)
    with pytest.raises(InputError, match="Number of samples must be 1..16"):
        page.text_to_image("a red square", 0, 4, 3.0, 0)
    with pytest.raises(InputError, match="No SR model is loaded"):
        page.text_to_image("a red square", 1, 4, 3.0, 0, cascade=True)
    with pytest.raises(InputError, match=r"layout is \(16, 16\); the model needs \(32, 32\)"):
        page.layout_to_image(np.zeros((16, 16), int), "", 4, 3.0, 0)
    with pytest.raises(InputError, match="Upload an image first"):
        page.image_to_layout(None, "", 4, 3.0, 0)


def test_the_page_in_a_browser(page, tmp_path):
    """Types a prompt and generates, paints a stroke and generates an image for it, uploads an
    image and segments it, in headless Chromium; checks what comes back on the page."""
    pytest.importorskip("selenium")
    page_driver = pytest.importorskip("page_driver")
    if page_driver.browser_paths() is None:
        pytest.skip("chromium / chromium-driver not installed (.ci/run installs them)")
    upload = np.broadcast_to(PALETTE[0], (48, 64, 3)).copy()
    upload[8:40, 8:32] = PALETTE[1]
    Image.fromarray(upload).save(tmp_path / "upload.png")
    port = page_driver.free_port()
    blocks = serve.launch(page, port, block=False)
    try:
        prompt = "A large red square on the left."
        result = page_driver.drive(
            f"http://127.0.0.1:{port}/", str(tmp_path), str(tmp_path / "upload.png"), prompt
        )
    finally:
        blocks.close()
    scale = page_lib.DISPLAY // 32
    assert (
        result["empty_prompt"].startswith(serve.ERROR_PREFIX.strip())
        and "Type a prompt" in result["empty_prompt"]
    )
    for key in ("t2i_status", "l2i_status", "i2l_status"):
        assert result[key].startswith("Done"), result[key]
    # Text -> image: two samples (the slider's default), each image | gap | layout at 8x.
    assert result["t2i_sizes"] == [((32 + 2 + 32) * scale, 32 * scale)] * 2
    # Layout -> image: the painted stroke reached the model as the known layout (kept exactly):
    # the layout shown is the brush's class (red square, the default brush) along the stroke and
    # background elsewhere, and nothing but palette colours.
    image, layout = result["l2i_pictures"]
    assert image.shape == layout.shape == (32 * scale, 32 * scale, 3)
    ids = files.layout_from_colours(layout, PALETTE, (32, 32))
    assert set(np.unique(ids)) == {0, 1}
    assert (ids == 1).sum() >= 20 and (ids[:8] == 0).all() and (ids[-8:] == 0).all()
    # Image -> layout: the overlay is half the uploaded image (bicubic to 32x32, kept exactly by
    # the sampler) and half the layout's colours.
    layout, shown = result["i2l_pictures"]
    assert layout.shape == shown.shape == (32 * scale, 32 * scale, 3)
    resized = np.asarray(
        Image.fromarray(upload).resize((32, 32), Image.Resampling.BICUBIC), np.float32
    )
    expected = 0.5 * resized + 0.5 * layout[::scale, ::scale].astype(np.float32)
    np.testing.assert_allclose(shown[::scale, ::scale], expected, atol=1.5)
    assert "Traceback" not in result["page_text"] and "Internal error" not in result["page_text"]
    assert all(
        (tmp_path / f"{n}.png").exists()
        for n in ("page", "text_to_image", "layout_to_image", "image_to_layout")
    )
