"""The joint U-Net: reference parameter counts, agreement with the authors' PyTorch implementation,
shapes, dtypes, initialisation, text dropout and classifier-free guidance.

XLA:CPU compiles are the cost here, so every numerical test reuses the two micro models of the
reference fixture with the fixture's inputs (one compiled forward each); shapes and dtypes are
checked abstractly with ``jax.eval_shape``.
"""

import functools
import importlib.util
import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import cityscapes, cityscapes_sr
from gcd_jax.diffusion import sampling
from gcd_jax.models import build_unet, input_specs
from gcd_jax.models.networks import Apply
from gcd_jax.models.scanned import stack_blocks, unstack_blocks

FIXTURES = pathlib.Path(__file__).parent / "fixtures"
_spec = importlib.util.spec_from_file_location(
    "make_unet_fixture", FIXTURES / "make_unet_fixture.py"
)
make_unet_fixture = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(make_unet_fixture)
FIXTURE = np.load(FIXTURES / "unet_reference.npz")
MICRO = json.loads(str(FIXTURE["micro_json"]))

# docs/design.md §4, counted on the reference implementation (imagen-pytorch's JointUnet as GCDP builds it,
# T5-large text width 1024, 256 text tokens).
REFERENCE_PARAMS = {"tiny": 3_850_003, "cityscapes": 697_353_097, "cityscapes_sr": 717_241_511}


@functools.partial(jax.jit, static_argnums=0)
def apply(model, variables, inputs):
    return model.apply(variables, **inputs)


def param_shapes(model, image_size, text_len, text_dim):
    specs = input_specs(model, 1, image_size, text_len, text_dim)
    return jax.eval_shape(lambda k, s: model.init(k, **s), jax.random.key(0), specs)["params"]


def micro(config, case):
    """The fixture's micro model, its parameters (seeded as in the fixture) and inputs."""
    spec = MICRO[case]
    config.model.update(
        {k: tuple(v) if isinstance(v, list) else v for k, v in spec["model"].items()}
    )
    config.data.num_classes = spec["num_classes"]
    config.text.max_length = spec["max_text_len"]
    model = build_unet(config)
    shapes = param_shapes(model, tuple(spec["image_size"]), spec["text_len"], spec["text_dim"])
    params = make_unet_fixture.reference_params(shapes, seed=list(MICRO).index(case))
    names = [k.split("/", 1)[1] for k in FIXTURE.files if k.startswith(case + "/")]
    inputs = {n: FIXTURE[f"{case}/{n}"] for n in names if not n.startswith(("eps", "logits"))}
    return model, {"params": params}, inputs


def count(config, image_size):
    shapes = param_shapes(build_unet(config), image_size, text_len=256, text_dim=1024)
    return sum(x.size for x in jax.tree.leaves(shapes))


def test_tiny_parameter_count_matches_reference(tiny_config):
    assert count(tiny_config, (32, 32)) == REFERENCE_PARAMS["tiny"]


@pytest.mark.parametrize("module", [cityscapes, cityscapes_sr], ids=lambda m: m.__name__)
def test_experiment_parameter_counts_match_reference(module):
    config = module.get_config()
    name = module.__name__.split(".")[-1]
    assert count(config, tuple(config.data.image_size)) == REFERENCE_PARAMS[name]


@pytest.mark.parametrize("case", ["base", "sr"])
def test_matches_pytorch_reference(tiny_config, case):
    """Same weights and inputs as the authors' JointUnet (fixture) → same ε and logits."""
    model, variables, inputs = micro(tiny_config, case)
    for tag, drop in (("cond", False), ("null", True)):
        eps, logits = apply(model, variables, dict(inputs, drop_text=np.full(2, drop)))
        np.testing.assert_allclose(eps, FIXTURE[f"{case}/eps_{tag}"], atol=1e-4)
        np.testing.assert_allclose(logits, FIXTURE[f"{case}/logits_{tag}"], atol=1e-4)


@pytest.mark.parametrize(
    "sr,joint,dtype",
    [(False, True, "float32"), (True, True, "bfloat16"), (True, False, "float32")],
)
def test_rectangular_shapes_and_dtypes(tiny_config, sr, joint, dtype):
    tiny_config.model.update(sr=sr, joint=joint, dtype=dtype)
    model = build_unet(tiny_config)
    specs = input_specs(model, 2, (16, 32), text_len=5, text_dim=12)
    variables = jax.eval_shape(lambda k, s: model.init(k, **s), jax.random.key(0), specs)
    assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(variables))
    eps, logits = jax.eval_shape(lambda v, s: model.apply(v, **s), variables, specs)
    assert eps.shape == (2, 16, 32, 3) and eps.dtype == jnp.float32
    if joint:
        assert logits.shape == (2, 16, 32, 8) and logits.dtype == jnp.float32
    else:
        assert logits is None and specs["y_t"] is None
        assert not set(variables["params"]) & {"label_embed", "lowres_label_embed", "label_head"}
        x_t, logsnr = specs.pop("x_t"), specs.pop("logsnr")
        del specs["y_t"]
        cond = {k: v for k, v in specs.items() if v is not None}
        guided = lambda v, x, lam, c: sampling.guided(  # noqa: E731
            Apply(model), {"unet": v["params"]}, 3.0, x, None, lam, c
        )
        eps, logits = jax.eval_shape(guided, variables, x_t, logsnr, cond)
        assert eps.shape == (2, 16, 32, 3) and logits is None


def test_zero_output_at_initialisation(tiny_config):
    """The heads initialise to zero, so ε̂ = 0 and the logits are uniform whatever the rest."""
    model, variables, inputs = micro(tiny_config, "base")
    inputs = dict(inputs, drop_text=np.array([False, True]))
    head_names = ("eps_head", "label_head")
    heads = jax.jit(lambda k: {n: model.init(k, **inputs)["params"][n] for n in head_names})(
        jax.random.key(0)
    )
    assert all(not np.any(np.asarray(x)) for x in jax.tree.leaves(heads))
    eps, logits = apply(model, variables, inputs)
    assert np.abs(np.asarray(eps)).max() > 0.1  # the fixture's weights give non-zero outputs
    eps, logits = apply(model, {"params": {**variables["params"], **heads}}, inputs)
    assert not np.any(np.asarray(eps)) and not np.any(np.asarray(logits))


def test_guided_is_null_plus_scaled_difference(tiny_config):
    model, variables, inputs = micro(tiny_config, "base")
    w = 3.0
    x_t, y_t, logsnr = inputs["x_t"], inputs["y_t"], inputs["logsnr"]
    cond = {k: v for k, v in inputs.items() if k not in ("x_t", "y_t", "logsnr", "drop_text")}
    params = {"unet": variables["params"]}
    eps, logits = jax.jit(sampling.guided, static_argnums=0)(
        Apply(model), params, w, x_t, y_t, logsnr, cond
    )
    cond = apply(model, variables, dict(inputs, drop_text=np.zeros(2, bool)))
    null = apply(model, variables, dict(inputs, drop_text=np.ones(2, bool)))
    for guided, c, n in zip((eps, logits), cond, null, strict=True):
        assert np.abs(np.asarray(c - n)).max() > 1e-2  # the text matters, so the check can fail
        np.testing.assert_allclose(guided, n + w * (c - n), rtol=1e-4, atol=1e-4)


def test_dropped_text_is_ignored_and_kept_text_is_not(tiny_config):
    model, variables, inputs = micro(tiny_config, "base")
    inputs = dict(inputs, drop_text=np.array([True, False]))
    other = dict(inputs, text=inputs["text"] + 1.0, text_mask=~inputs["text_mask"])
    out_a = apply(model, variables, inputs)
    out_b = apply(model, variables, other)
    for a, b in zip(out_a, out_b, strict=True):
        np.testing.assert_array_equal(a[0], b[0])
        assert np.abs(np.asarray(a[1] - b[1])).max() > 1e-2


def _one_level(config, blocks: int = 1):
    """A one-level model that still has every kind of block, its parameters and a loss."""
    m = config.model
    m.update(dim=8, dim_mults=(1,), num_res_blocks=(blocks,), attn_levels=(True,), num_groups=2)
    m.update(cross_attn_levels=(True,), attn_dim_head=4, num_latents=2, resampler_depth=1)
    m.update(mid_cross_attn_heads=2, mid_cross_attn_dim_head=4)
    config.text.max_length = 4
    model = build_unet(config)
    params = make_unet_fixture.reference_params(param_shapes(model, (4, 6), 3, 5), seed=4)
    keys = jax.random.split(jax.random.key(0), 4)
    inputs = dict(
        x_t=jax.random.normal(keys[0], (2, 4, 6, 3)),
        y_t=jax.random.randint(keys[1], (2, 4, 6), 0, model.num_classes),
        logsnr=jnp.array([-2.0, 4.0]),
        text=jax.random.normal(keys[2], (2, 3, 5)),
        text_mask=jnp.array([[True, True, False], [True, False, False]]),
        drop_text=jnp.array([False, True]),
    )

    def loss(params):
        eps, logits = model.apply({"params": params}, **inputs)
        return jnp.mean(eps**2) + jnp.mean(jax.nn.log_softmax(logits)[..., 0])

    return model, params, loss


def test_grad_through_the_model(tiny_config):
    """jit(value_and_grad) on a one-level model that still has every kind of block."""
    model, params, loss = _one_level(tiny_config)
    value, grads = jax.jit(jax.value_and_grad(loss))(params)
    assert np.isfinite(value)
    assert jax.tree.structure(grads) == jax.tree.structure(params)
    assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))
    # Gradients reach the first layer, the text projection and the middle of the network.
    for path in [
        ("init_conv", "conv_15", "kernel"),
        ("text", "text_to_cond", "kernel"),
        ("mid_block1", "cross_attn", "to_kv", "kernel"),
        ("down0_attn", "attn", "to_context", "kernel"),
    ]:
        g = grads
        for key in path:
            g = g[key]
        assert np.abs(np.asarray(g)).max() > 0, path


@pytest.mark.parametrize("remat", ["blocks", "dots_with_no_batch_dims_saveable"])
def test_remat_keeps_parameters_and_gradients(tiny_config, remat):
    """model.remat changes what the backward pass stores, not the parameters or the gradients."""
    _, params, loss = _one_level(tiny_config)
    tiny_config.model.remat = remat
    model, remat_params, remat_loss = _one_level(tiny_config)
    assert model.remat == remat
    assert jax.tree.structure(remat_params) == jax.tree.structure(params)
    grads = jax.jit(jax.grad(loss))(params)
    remat_grads = jax.jit(jax.grad(remat_loss))(params)
    for g, r in zip(jax.tree.leaves(grads), jax.tree.leaves(remat_grads), strict=True):
        np.testing.assert_allclose(r, g, rtol=1e-4, atol=1e-6)  # float32 reassociation
    # The rematerialised program really recomputes: its backward pass holds a remat region.
    assert "remat" in str(jax.make_jaxpr(jax.grad(remat_loss))(params))


@pytest.mark.parametrize("case", ["base", "sr"])
def test_scanned_blocks_match_pytorch_reference(tiny_config, case):
    """model.scan_blocks: the fixture's per-block weights, stacked by ``stack_blocks``, give the
    authors' outputs (the micro cases have a level of two residual blocks)."""
    model, variables, inputs = micro(tiny_config, case)
    tiny_config.model.scan_blocks = True
    scanned = build_unet(tiny_config)
    spec = MICRO[case]
    shapes = param_shapes(scanned, tuple(spec["image_size"]), spec["text_len"], spec["text_dim"])
    stacked = stack_blocks(variables["params"])
    assert "down1_blocks" in stacked and "down1_block0" not in stacked
    assert jax.tree.map(jnp.shape, stacked) == jax.tree.map(jnp.shape, shapes)
    eps, logits = apply(scanned, {"params": stacked}, dict(inputs, drop_text=np.zeros(2, bool)))
    np.testing.assert_allclose(eps, FIXTURE[f"{case}/eps_cond"], atol=1e-4)
    np.testing.assert_allclose(logits, FIXTURE[f"{case}/logits_cond"], atol=1e-4)
    back = unstack_blocks(stacked)
    assert jax.tree.structure(back) == jax.tree.structure(variables["params"])
    for a, b in zip(jax.tree.leaves(back), jax.tree.leaves(variables["params"]), strict=True):
        np.testing.assert_array_equal(np.float32(a), np.float32(b))  # the fixture draws float64


def test_scanned_blocks_give_the_same_gradients_with_remat(tiny_config):
    """Two residual blocks in one level, scanned and rematerialised: the gradient of each
    block's parameters equals the per-block model's."""
    _, params, loss = _one_level(tiny_config, blocks=2)
    tiny_config.model.update(scan_blocks=True, remat="blocks")
    _, _, scanned_loss = _one_level(tiny_config, blocks=2)
    grads = jax.jit(jax.grad(loss))(params)
    scanned_grads = unstack_blocks(jax.jit(jax.grad(scanned_loss))(stack_blocks(params)))
    assert jax.tree.structure(scanned_grads) == jax.tree.structure(grads)
    for g, s in zip(jax.tree.leaves(grads), jax.tree.leaves(scanned_grads), strict=True):
        np.testing.assert_allclose(s, g, rtol=1e-4, atol=1e-5)  # float32 reassociation
    assert np.abs(np.asarray(grads["down0_block1"]["block1"]["project"]["kernel"])).max() > 0


def test_rejects_unknown_remat(tiny_config):
    tiny_config.model.remat = "everything"
    with pytest.raises(ValueError, match="model.remat"):
        build_unet(tiny_config)


def test_rejects_sizes_not_divisible_by_the_downsampling(tiny_config):
    with pytest.raises(ValueError, match="divisible"):
        param_shapes(build_unet(tiny_config), (12, 32), text_len=4, text_dim=12)


def test_bfloat16_compute_gives_a_close_finite_train_step(tiny_config):
    """model.dtype='bfloat16': float32 parameters, bfloat16 compute; the loss and the gradient
    of one step agree with float32 within bfloat16's precision (8 bits of mantissa: loss within
    3 %, gradient direction cosine > 0.99), and every gradient is finite and float32."""
    _, params, loss = _one_level(tiny_config)
    tiny_config.model.dtype = "bfloat16"
    model, _, bf16_loss = _one_level(tiny_config)
    assert model.dtype == jnp.bfloat16
    assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(param_shapes(model, (4, 6), 3, 5)))
    value, grads = jax.jit(jax.value_and_grad(loss))(params)
    bf16_value, bf16_grads = jax.jit(jax.value_and_grad(bf16_loss))(params)
    assert np.isfinite(bf16_value) and abs(bf16_value - value) <= 0.03 * abs(value)
    assert all(g.dtype == jnp.float32 and np.isfinite(g).all() for g in jax.tree.leaves(bf16_grads))
    flat = np.concatenate([np.ravel(g) for g in jax.tree.leaves(grads)])
    bf16_flat = np.concatenate([np.ravel(g) for g in jax.tree.leaves(bf16_grads)])
    cosine = flat @ bf16_flat / (np.linalg.norm(flat) * np.linalg.norm(bf16_flat))
    assert cosine > 0.99, cosine


def test_auto_dtype_is_float32_on_cpu_and_names_bad_values(tiny_config):
    from gcd_jax.models import unet

    assert jax.default_backend() == "cpu"
    assert unet.compute_dtype("auto") == jnp.float32
    assert unet.compute_dtype("bfloat16") == jnp.bfloat16
    with pytest.raises(ValueError, match="model.dtype must be 'auto' or one of"):
        unet.compute_dtype("float16")
