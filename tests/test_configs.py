"""The experiment files' config-argument variants (``experiments/demo.py:tiny``): what ``run.py``'s
``--config`` flag loads is the config the tests and benchmarks import, variants compose, and an
unknown variant is a one-line error naming the known ones."""

import pytest
from absl import flags
from conftest import small_demo_config
from ml_collections import config_flags

from benchmarks import configs
from experiments import base, cityscapes, cityscapes_sr, demo, demo_sr


def parsed(*args) -> dict:
    """The config ``run.py ARGS`` runs with, parsed by its own flag parser on a fresh flag set."""
    argv = ["run.py", *args]
    flag_values = flags.FlagValues()
    config_flags.DEFINE_config_file(
        "config", None, flag_values=flag_values, sys_argv=argv, lock_config=True
    )
    flag_values(argv)
    return flag_values.config.to_dict()


def test_run_py_loads_the_tests_tiny_demo(tmp_path):
    expected = small_demo_config(tmp_path)
    config = parsed("--config=experiments/demo.py:tiny", f"--config.data.data_dir={tmp_path}")
    assert config == expected.to_dict()
    assert config == demo.get_config("tiny").to_dict() | {"data": expected.data.to_dict()}


def test_run_py_loads_the_tiny_unet_of_the_tests_and_benchmarks(tiny_config):
    assert parsed("--config=experiments/base.py:tiny") == tiny_config.to_dict()
    benchmark = configs.get("tiny")
    assert benchmark.to_dict() == tiny_config.to_dict()  # batch 8, float32: base's defaults
    assert demo.get_config().model.dim_mults == tiny_config.model.dim_mults


def test_variants_compose():
    both = demo.get_config("shapes,tiny")
    assert both.to_dict() == demo.get_config("tiny,shapes").to_dict()
    assert both.data.name == "demo_shapes" and both.model.dim == 16
    assert demo.get_config("shapes").model.dim == 32
    sr = demo_sr.get_config("tiny")
    assert sr.model.sr and sr.model.dim == 16 and sr.train.num_steps == 4
    assert parsed("--config=experiments/demo_sr.py:base,tiny") == (
        demo_sr.get_config("base,tiny").to_dict()
    )
    assert demo_sr.get_config("base,tiny").data.image_size == (16, 16)


def test_cityscapes_tiny_keeps_the_recipe_and_shrinks_the_networks():
    """``experiments/cityscapes(_sr).py:tiny``: the experiment's data, diffusion and optimizer
    fields, a one-level dim-16 U-Net and byte text instead of T5, at 16x32 (SR 32x64 from
    16x32)."""
    full, tiny = cityscapes.get_config(), cityscapes.get_config("tiny")
    for section in ("diffusion", "optim", "train", "sample"):
        assert tiny[section].to_dict() == full[section].to_dict(), section
    assert tiny.data.name == "cityscapes" and tiny.data.num_classes == 20
    assert tiny.data.image_size == (16, 32) and tiny.model.dim_mults == (1,)
    assert tiny.text.encoder == "learned" and full.text.encoder == "t5"
    sr = cityscapes_sr.get_config("tiny")
    assert sr.model.sr and sr.data.image_size == (32, 64) and sr.model.lowres_size == (16, 32)
    assert sr.diffusion.to_dict() == cityscapes_sr.get_config().diffusion.to_dict()
    assert parsed("--config=experiments/cityscapes_sr.py:tiny") == sr.to_dict()


@pytest.mark.parametrize(
    "module, arg, known",
    [
        (demo, "large", "shapes, tiny"),
        (demo, "tiny,big", "shapes, tiny"),
        (base, "x", "tiny"),
        (cityscapes, "small", "tiny"),
    ],
)
def test_an_unknown_variant_names_the_known_ones(module, arg, known):
    with pytest.raises(ValueError, match=rf"unknown variant .*; known: {known} \("):
        module.get_config(arg)


def test_one_sr_stage():
    with pytest.raises(ValueError, match="one stage"):
        demo_sr.get_config("base,sr")
