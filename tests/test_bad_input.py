"""The bad-input table of docs/errors.md, one test per row: each row's cause is produced here and
what the user sees (the one line ``run.py`` prints, or a warning) must match the row's text, where
``…`` stands for any text. A row without a case here, or a case without a row, fails."""

import importlib.util
import io
import json
import os
import pathlib
import pickle
import re
import zipfile

import jax
import ml_collections
import numpy as np
import pytest
from absl import flags
from checkpoint_faults import DAMAGE, abstract_train_state, copy_run, damage, failing_writes
from conftest import small_demo_config
from ml_collections import config_flags
from PIL import Image

from experiments import base
from gcd_jax import errors, sharding
from gcd_jax.cli import analyze, sample
from gcd_jax.convert import authors as convert
from gcd_jax.data import builder_lib, cityscapes, classes, pipeline, sources
from gcd_jax.diffusion import joint, sampling
from gcd_jax.inference import files, generation
from gcd_jax.inference.model import from_state, load
from gcd_jax.models import t5, text
from gcd_jax.models.networks import build_networks
from gcd_jax.training import checkpoint, loop

# pytest replaces sys.unraisablehook in each test, so the read errors of Orbax's abandoned
# coroutines after a damaged restore (dropped in a real run) would come back as warnings.
pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")

DEMO = classes.dataset_info("demo")  # K = 8
DOC = pathlib.Path(__file__).resolve().parents[1] / "docs" / "errors.md"
ROW = re.compile(r"\| `([a-z0-9-]+)` \| .+ \| (`+) ?(.+?) ?\2 \|")
CASES = {}


def case(row_id: str):
    def register(fn):
        CASES[row_id] = fn
        return fn

    return register


def documented() -> dict[str, str]:
    """{row id: what the user sees} of the table in docs/errors.md."""
    rows = [ROW.fullmatch(line.strip()) for line in DOC.read_text().splitlines()]
    return {m.group(1): m.group(3) for m in rows if m}


def as_pattern(text: str) -> str:
    return "".join(".*" if part == "…" else re.escape(part) for part in re.split("(…)", text))


def raised(fn, *args, **kwargs) -> str:
    """The one line ``run.py`` prints for the UserError ``fn(*args, **kwargs)`` raises."""
    with pytest.raises(errors.UserError) as info:
        fn(*args, **kwargs)
    return errors.one_line(info.value)


def png(path, array) -> str:
    Image.fromarray(np.asarray(array, np.uint8)).save(path)
    return str(path)


def test_every_row_has_a_case_and_every_case_a_row():
    assert sorted(documented()) == sorted(CASES)


@pytest.mark.parametrize("row", sorted(documented()))
def test_bad_input(row, request, tmp_path):
    """A case returns what the user sees, or a list of it (one per variant of the cause)."""
    seen = CASES[row](request, tmp_path)
    for line in [seen] if isinstance(seen, str) else seen:
        assert "\n" not in line and "Traceback" not in line
        assert re.fullmatch(as_pattern(documented()[row]), line), f"{row}: {line}"


# ------------------------------------------------------------------ data
def cityscapes_config(tmp_path, manual_dir):
    config = base.get_config()
    config.data.name, config.data.builder_config = "cityscapes", "full"
    config.data.data_dir, config.data.manual_dir = str(tmp_path / "tfds"), str(manual_dir)
    return config


@case("manual-dir-missing")
def _(request, tmp_path):
    return raised(sources.ensure_built, cityscapes_config(tmp_path, tmp_path / "nowhere"))


@case("manual-dir-empty")
def _(request, tmp_path):
    (tmp_path / "raw").mkdir()
    return raised(sources.ensure_built, cityscapes_config(tmp_path, tmp_path / "raw"))


@case("manual-dir-malformed")
def _(request, tmp_path):
    (tmp_path / "raw").mkdir()
    (tmp_path / "raw" / "README.txt").write_text("the zips are elsewhere")
    return raised(sources.ensure_built, cityscapes_config(tmp_path, tmp_path / "raw"))


@case("split-empty")
def _(request, tmp_path):
    """Cityscapes raw files with a train split and no validation images."""
    stem = tmp_path / "raw" / "{}" / "train" / "aachen" / "aachen_000000_000019_{}.png"
    for top, suffix, array in (
        ("leftImg8bit", "leftImg8bit", np.zeros((8, 16, 3))),
        ("gtFine", "gtFine_labelIds", np.full((8, 16), 7)),
    ):
        path = pathlib.Path(str(stem).format(top, suffix))
        path.parent.mkdir(parents=True)
        png(path, array)
    return raised(sources.ensure_built, cityscapes_config(tmp_path, tmp_path / "raw"))


@case("split-unknown")
def _(request, tmp_path):
    config = small_demo_config(request.getfixturevalue("demo_data_dir"))
    return raised(sources.open_split, config, "trian")


@case("dataset-not-built")
def _(request, tmp_path):
    config = base.get_config()
    config.data.name, config.data.data_dir = "celeba", str(tmp_path)
    return raised(sources.ensure_built, config)


@case("authors-caption-image-missing")
def _(request, tmp_path):
    """The authors' caption file names an image that neither train/ nor val/ holds."""
    raw = tmp_path / "raw"
    for top, suffix, array in (
        ("leftImg8bit", "leftImg8bit", np.zeros((8, 16, 3))),
        ("gtFine", "gtFine_labelIds", np.full((8, 16), 7)),
    ):
        for split, city in (("train", "aachen"), ("val", "frankfurt")):
            path = raw / top / split / city / f"{city}_000000_000019_{suffix}.png"
            path.parent.mkdir(parents=True)
            png(path, array)
    folder = raw / "caption_files" / "cityscapes"
    folder.mkdir(parents=True)
    record = {"file_name": "ulm_000000_000019_leftImg8bit.png", "text": ["x"]}
    (folder / "100_captions.jsonl").write_text(json.dumps(record) + "\n")
    return raised(sources.ensure_built, cityscapes_config(tmp_path, raw))


@case("image-unreadable")
def _(request, tmp_path):
    return raised(builder_lib.decode_image, b"not a png", "raw/leftImg8bit/x.png")


@case("label-out-of-range")
def _(request, tmp_path):
    return raised(cityscapes.map_label_ids, np.full((2, 2), 50, np.uint8), "raw/gtFine/y.png")


@case("image-label-size-mismatch")
def _(request, tmp_path):
    builder = cityscapes.CityscapesCaptions(config="full", data_dir=str(tmp_path / "tfds"))
    image, label = io.BytesIO(), io.BytesIO()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(image, format="PNG")
    Image.fromarray(np.full((8, 16), 7, np.uint8)).save(label, format="PNG")
    args = ("raw/x.png", "raw/y.png", image.getvalue(), label.getvalue(), None)
    return raised(builder._example, *args)


# ------------------------------------------------------------------ config
def flag_line(request, *args) -> str:
    """What ``run.py ARGS`` prints when its flags do not parse (on a fresh flag set: the global
    one parses a config file once per process)."""
    capsys = request.getfixturevalue("capsys")
    argv = ["run.py", *args]
    flag_values = flags.FlagValues()
    config_flags.DEFINE_config_file("config", None, flag_values=flag_values, sys_argv=argv)
    with pytest.raises(SystemExit):
        errors.parse_flags(argv, flag_values)
    return capsys.readouterr().err.strip()


@case("config-unknown-field")
def _(request, tmp_path):
    return flag_line(request, "--config=experiments/demo.py", "--config.train.nope=3")


@case("config-bad-value")
def _(request, tmp_path):
    return flag_line(request, "--config=experiments/demo.py", "--config.train.num_steps=many")


@case("config-file-fails")
def _(request, tmp_path):
    return flag_line(request, "--config=experiments/demo_sr.py:large")


@case("config-out-of-range")
def _(request, tmp_path):
    config = small_demo_config(tmp_path)
    config.data.caption_fraction = 1.5
    return raised(pipeline.create_train_iterator, config, None)


@case("config-unknown-name")
def _(request, tmp_path):
    config = small_demo_config(tmp_path)
    config.data.augment = "rotate"
    seen = [raised(pipeline.create_train_iterator, config, None)]
    assert seen[0] == (
        "error: Unknown data.augment 'rotate'; expected one of ['flip', 'none', 'resized_crop']."
    )
    config = small_demo_config(tmp_path)
    config.train.step_programs = "three"
    seen.append(raised(loop.validate_config, config, sharding.make_mesh()))
    assert "'three'" in seen[1] and "['auto', 'one', 'two']" in seen[1]
    config = small_demo_config(tmp_path)
    config.sample.final_step = "x1"
    seen.append(raised(sampling.Sampler.from_config, config))
    assert "['reference', 'x0']" in seen[2]
    return seen


@case("lowres-aug-groups")
def _(request, tmp_path):
    config = small_demo_config(tmp_path)
    config.model.sr, config.model.lowres_size = True, (4, 4)
    config.train.global_batch_size, config.diffusion.lowres_aug_groups = 8, 3
    return raised(joint.Process.from_config, config)


@case("batch-not-divisible")
def _(request, tmp_path):
    config = small_demo_config(tmp_path, global_batch_size=6)
    return raised(loop.validate_config, config, sharding.make_mesh())


@case("t5-missing")
def _(request, tmp_path):
    return raised(t5.resolve_model_dir, str(tmp_path / "t5-large"))


# ------------------------------------------------------------------ checkpoints
@case("checkpoint-missing")
def _(request, tmp_path):
    return raised(load, small_demo_config(tmp_path), str(tmp_path / "run"))


@case("checkpoint-step-missing")
def _(request, tmp_path):
    config, workdir = request.getfixturevalue("trained_demo")
    return raised(load, config, workdir, 3)


def analysis_config(config, **fields):
    config = ml_collections.ConfigDict(config.to_dict())
    for key, value in fields.items():
        setattr(config.analysis, key, value)
    return config


@case("analyze-unknown-block")
def _(request, tmp_path):
    config, workdir = request.getfixturevalue("trained_demo")
    config = analysis_config(config, blocks=("up9_nowhere",), num_images=2)
    return raised(analyze.analyze_main, config, workdir)


@case("analyze-step-missing")
def _(request, tmp_path):
    config, workdir = request.getfixturevalue("trained_demo")
    return raised(analyze.analyze_main, analysis_config(config, num_images=2), workdir, 3)


@case("analyze-too-many-images")
def _(request, tmp_path):
    config, workdir = request.getfixturevalue("trained_demo")
    return raised(analyze.analyze_main, analysis_config(config, num_images=1000), workdir)


@case("checkpoint-incompatible")
def _(request, tmp_path):
    config, workdir = request.getfixturevalue("trained_demo")
    other = small_demo_config(config.data.data_dir)
    other.model.dim = 8
    return raised(load, other, workdir)


@case("checkpoint-damaged")
def _(request, tmp_path):
    """Checkpoint 4's data files truncated, overwritten or deleted; --step 2 still samples."""
    config, workdir = request.getfixturevalue("trained_demo")
    lines = []
    for how in DAMAGE:
        damaged = copy_run(workdir, tmp_path / how)
        damage(damaged, 4, how)
        lines.append(raised(load, config, damaged))
    assert load(config, damaged, step=2).step == 2
    return lines


@case("checkpoint-damaged-resume")
def _(request, tmp_path):
    """Training's restore with checkpoint 4 truncated, overwritten or deleted: step 2 restored,
    one warning, ``4/`` renamed (kept) to ``4.damaged-*/``, which Orbax no longer lists."""
    config, workdir = request.getfixturevalue("trained_demo")
    caplog = request.getfixturevalue("caplog")
    lines = []
    for how in DAMAGE:
        caplog.clear()
        damaged = copy_run(workdir, tmp_path / how)
        damage(damaged, 4, how)
        ckpt = checkpoint.Checkpointer(damaged, config)
        try:
            state, next_batch = ckpt.restore_newest(abstract_train_state(config))
            assert int(state.step) == 2 and next_batch == 2 and ckpt.steps() == [2]
        finally:
            ckpt.close()
        (message,) = [
            r.getMessage() for r in caplog.records if r.levelname == "WARNING" and r.name == "absl"
        ]
        _, aside = sorted(os.listdir(os.path.join(damaged, "checkpoints")))
        assert aside.startswith("4.damaged-") and aside in message
        assert os.listdir(os.path.join(damaged, "checkpoints", aside, "state"))
        lines.append(f"(log warning) {message}")
    return lines


@case("checkpoint-none-restores")
def _(request, tmp_path):
    """Both checkpoints damaged: the error lists each step's cause; nothing is moved."""
    config, workdir = request.getfixturevalue("trained_demo")
    workdir = copy_run(workdir, tmp_path)
    damage(workdir, 4, "overwrite")
    damage(workdir, 2, "truncate")
    ckpt = checkpoint.Checkpointer(workdir, config)
    try:
        line = raised(ckpt.restore_newest, abstract_train_state(config))
    finally:
        ckpt.close()
    assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["2", "4"]
    return line


@case("checkpoint-write-failed")
def _(request, tmp_path):
    """The disk fills while checkpoint 6 is written (in the background)."""
    config, workdir = request.getfixturevalue("trained_demo")
    workdir = copy_run(workdir, tmp_path)
    failing_writes(request.getfixturevalue("monkeypatch"), step=6)
    ckpt = checkpoint.Checkpointer(workdir, config)
    state, next_batch = ckpt.restore(abstract_train_state(config))
    ckpt.save(6, state, next_batch)
    line = raised(ckpt.close)
    assert load(config, workdir).step == 4  # the latest good checkpoint restores
    return line


@case("nan-loss")
def _(request, tmp_path):
    return raised(loop._check_finite, {"loss": float("nan"), "grad_norm": 1.0}, 7)


# ------------------------------------------------------------------ sampling inputs
@case("prompts-empty")
def _(request, tmp_path):
    return raised(files.read_prompts, "")


@case("prompts-file-empty")
def _(request, tmp_path):
    (tmp_path / "prompts.txt").write_text("\n  \n")
    return raised(files.read_prompts, str(tmp_path / "prompts.txt"))


@case("prompt-list-empty")
def _(request, tmp_path):
    config = small_demo_config(tmp_path)
    model = from_state(config, build_networks(config), None, None, 0)
    return raised(generation.generate, model, [], jax.random.key(0))


@case("prompt-too-long")
def _(request, tmp_path):
    with pytest.warns(UserWarning) as record:
        text.tokenize_bytes(["x" * 300], 256)
    return f"({record[0].category.__name__}) {record[0].message}"


@case("layout-missing")
def _(request, tmp_path):
    return raised(files.read_layout, str(tmp_path / "layout.png"), DEMO)


@case("layout-not-an-image")
def _(request, tmp_path):
    (tmp_path / "layout.png").write_text("not an image")
    return raised(files.read_layout, str(tmp_path / "layout.png"), DEMO)


@case("layout-colours-outside-palette")
def _(request, tmp_path):
    return raised(files.read_layout, png(tmp_path / "layout.png", np.zeros((32, 32, 3))), DEMO)


@case("layout-values-out-of-range")
def _(request, tmp_path):
    return raised(files.read_layout, png(tmp_path / "layout.png", np.full((32, 32), 9)), DEMO)


@case("layout-wrong-size")
def _(request, tmp_path):
    path = png(tmp_path / "layout.png", np.zeros((16, 16)))
    config = small_demo_config(tmp_path)
    return raised(sample.outpaint_main, config, str(tmp_path), "a", 0, layout_path=path)


@case("image-not-an-image")
def _(request, tmp_path):
    (tmp_path / "image.png").write_bytes(os.urandom(64))
    return raised(files.read_image, str(tmp_path / "image.png"))


# ------------------------------------------------------------------ converting the authors' checkpoints
FIXTURES = pathlib.Path(__file__).resolve().parent / "fixtures"


def micro_config(case: str):
    """The config of the micro U-Nets in fixtures/gcdp_micro.pt (see test_convert.py)."""
    spec = importlib.util.spec_from_file_location("gcdp_micro", FIXTURES / "gcdp_micro_config.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(case)


def pickled_as_checkpoint(path: pathlib.Path, data: bytes) -> str:
    """A zip in torch.save's layout whose ``data.pkl`` is ``data``."""
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", data)
    return str(path)


class _RunsACommand:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


@case("convert-not-a-checkpoint")
def _(request, tmp_path):
    path = pickled_as_checkpoint(tmp_path / "weights.pt", pickle.dumps({"weight": 1}, protocol=2))
    return raised(convert.convert, path, micro_config("base"), str(tmp_path / "w"))


@case("convert-unsafe-pickle")
def _(request, tmp_path):
    path = pickled_as_checkpoint(tmp_path / "evil.pt", pickle.dumps(_RunsACommand(), protocol=2))
    return raised(convert.convert, path, micro_config("base"), str(tmp_path / "w"))


@case("convert-keys-mismatch")
def _(request, tmp_path):
    path = str(FIXTURES / "gcdp_micro.pt")
    return raised(convert.convert, path, micro_config("base"), str(tmp_path / "w"), unet=2)


@case("convert-shape-mismatch")
def _(request, tmp_path):
    config = micro_config("base")
    config.data.num_classes = 7
    return raised(convert.convert, str(FIXTURES / "gcdp_micro.pt"), config, str(tmp_path / "w"))
