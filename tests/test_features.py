"""Clustering metrics on toy feature maps whose content is known (issue 30)."""

import numpy as np
import pytest

from gcd_jax.errors import InputError
from gcd_jax.evaluation import features

NUM_CLASSES = 4


def _layout(rng, h=16, w=16):
    layout = np.zeros((h, w), np.int64)  # four quadrants, one class each
    layout[: h // 2, w // 2 :] = 1
    layout[h // 2 :, : w // 2] = 2
    layout[h // 2 :, w // 2 :] = 3
    return layout


def test_features_that_encode_the_class_score_perfectly():
    layout = _layout(np.random.default_rng(0))
    rng = np.random.default_rng(0)
    feats = np.eye(NUM_CLASSES)[layout] * 10 + rng.normal(0, 0.1, layout.shape + (NUM_CLASSES,))
    s = features.cluster_scores(feats, layout, k=NUM_CLASSES, num_classes=NUM_CLASSES)
    assert s.nmi > 0.999 and s.ari > 0.999 and s.miou > 0.999


def test_features_that_encode_only_colour_score_near_zero():
    # Classes share colours: each pixel's colour is drawn independently of its class, so the
    # clusters (found by colour) carry no information about the class: NMI and ARI near 0.
    layout = _layout(None)
    rng = np.random.default_rng(1)
    colours = rng.integers(0, NUM_CLASSES, layout.shape)
    feats = np.eye(NUM_CLASSES)[colours] * 10
    s = features.cluster_scores(feats, layout, k=NUM_CLASSES, num_classes=NUM_CLASSES)
    assert s.nmi < 0.05 and abs(s.ari) < 0.05
    assert s.miou < 0.3  # a perfect map gives 1; random assignment about 1/7


def test_hungarian_match_relabels_permuted_clusters():
    layout = _layout(None)
    permuted = np.array([2, 0, 3, 1])[layout]
    assert np.array_equal(features.hungarian_match(permuted, layout, NUM_CLASSES), layout)
    assert features.matched_miou(permuted, layout, NUM_CLASSES) == 1.0


def test_linear_probe_separates_class_features_not_colour():
    rng = np.random.default_rng(2)
    layouts = np.stack([_layout(None)] * 4)
    by_class = np.eye(NUM_CLASSES)[layouts] + rng.normal(0, 0.1, layouts.shape + (NUM_CLASSES,))
    by_colour = np.eye(NUM_CLASSES)[rng.integers(0, NUM_CLASSES, layouts.shape)]
    assert features.linear_probe_accuracy(by_class, layouts) == 1.0
    assert features.linear_probe_accuracy(by_colour, layouts) < 0.4  # chance is 0.25


def test_capture_leaves_unet_outputs_unchanged(tiny_config):
    import jax
    import jax.numpy as jnp

    from gcd_jax.models.unet import build_unet, input_specs

    unet = build_unet(tiny_config)
    specs = input_specs(unet, 2, tuple(tiny_config.data.image_size), 4, tiny_config.text.embed_dim)
    key = jax.random.PRNGKey(0)
    args = {}
    for i, (k, s) in enumerate(specs.items()):
        if s is None:
            args[k] = None
        elif s.dtype == jnp.bool_:
            args[k] = jnp.ones(s.shape, bool) if k == "text_mask" else jnp.zeros(s.shape, bool)
        elif s.dtype == jnp.int32:
            args[k] = jax.random.randint(jax.random.fold_in(key, i), s.shape, 0, unet.num_classes)
        else:
            args[k] = jax.random.normal(jax.random.fold_in(key, i), s.shape)
    params = unet.init(key, **args)["params"]
    plain = unet.apply({"params": params}, **args)
    outputs, feats = features.capture_blocks(unet, params, ["mid_attn", "up0_upsample"], **args)
    for a, b in zip(jax.tree.leaves(plain), jax.tree.leaves(outputs), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert set(feats) == {"mid_attn", "up0_upsample"}
    assert feats["up0_upsample"].shape[:3] == (2,) + tuple(tiny_config.data.image_size)
    with pytest.raises(InputError, match="unknown U-Net block"):
        features.capture_blocks(unet, params, ["up9_nowhere"], **args)
