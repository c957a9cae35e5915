"""Clustering metrics on toy feature maps whose content is known (issue 30)."""

import functools

import jax
import jax.numpy as jnp
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
    assert features.majority_baseline(layouts) == 0.25  # one class of four equal quadrants


def _small_config(tiny_config):
    """The tiny U-Net with two levels at 16x16 and a short text: compiled in seconds."""
    tiny_config.data.image_size = (16, 16)
    m = tiny_config.model
    m.dim, m.dim_mults, m.num_res_blocks = 16, (1, 2), (1, 1)
    m.attn_levels = m.cross_attn_levels = (False, True)
    tiny_config.text.max_length = 8
    return tiny_config


def _unet_inputs(unet, config, key):
    from gcd_jax.models.unet import input_specs

    specs = input_specs(unet, 2, tuple(config.data.image_size), 4, config.text.embed_dim)
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
    return args


def test_capture_leaves_unet_outputs_unchanged(tiny_config):
    from gcd_jax.models.unet import build_unet

    config = _small_config(tiny_config)
    unet = build_unet(config)
    key = jax.random.PRNGKey(0)
    args = _unet_inputs(unet, config, key)
    rng = np.random.default_rng(0)  # random parameters (not init's zero heads), no init compile
    shapes = jax.eval_shape(unet.init, key, **args)["params"]
    params = jax.tree.map(lambda s: rng.normal(0, 0.1, s.shape).astype(s.dtype), shapes)
    plain = jax.jit(unet.apply)({"params": params}, **args)
    blocks = ("mid_block2", "up0_upsample")
    capture = jax.jit(features.capture_blocks, static_argnums=(0, 2))
    outputs, feats = capture(unet, params, blocks, *args.values())
    assert all(np.isfinite(np.asarray(a)).all() for a in jax.tree.leaves(plain))
    for a, b in zip(jax.tree.leaves(plain), jax.tree.leaves(outputs), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert set(feats) == set(blocks)
    assert feats["up0_upsample"].shape[:3] == (2, 16, 16)
    assert feats["mid_block2"].shape[:3] == (2, 4, 4)
    assert "mid_attn" not in features.block_names(params)  # its output is tokens, not a map
    assert set(features.default_blocks(2)) <= set(features.block_names(params))
    with pytest.raises(InputError, match=r"unknown U-Net block\(s\) \['up9_nowhere'\]"):
        features.capture_blocks(unet, params, ["up9_nowhere"], **args)


def test_capture_leaves_the_train_step_program_unchanged(tiny_config):
    """The train step's lowered program (StableHLO text) is the same before and after
    ``capture_blocks`` traced the same U-Net: capturing is a per-call option of ``apply``, not
    a change to the module or its parameters."""
    from gcd_jax.diffusion import joint
    from gcd_jax.models.networks import build_networks
    from gcd_jax.training import train_state, train_step

    config = _small_config(tiny_config)
    nets = build_networks(config)
    optimizer = train_state.make_optimizer(config.optim)
    state = train_state.abstract_state(nets, optimizer)
    b, (h, w), length = 2, config.data.image_size, config.text.max_length
    batch = {
        "image": jax.ShapeDtypeStruct((b, h, w, 3), np.float32),
        "label": jax.ShapeDtypeStruct((b, h, w), np.int32),
        "tokens": jax.ShapeDtypeStruct((b, length), np.int32),
        "mask": jax.ShapeDtypeStruct((b, length), bool),
        "has_text": jax.ShapeDtypeStruct((b,), bool),
    }
    step = functools.partial(
        train_step.train_step,
        nets=nets,
        process=joint.Process.from_config(config),
        optimizer=optimizer,
        config=config,
    )

    def lowered() -> str:
        return jax.jit(step).lower(state, batch, {}).as_text()

    before = lowered()
    args = _unet_inputs(nets.unet, config, jax.random.PRNGKey(0))

    def capture(params):
        return features.capture_blocks(nets.unet, params, ["up0_upsample"], *args.values())[1]

    found = jax.eval_shape(capture, state.params["unet"])
    assert found["up0_upsample"].shape == (b, h, w, config.model.dim)
    assert lowered() == before
