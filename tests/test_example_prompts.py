"""Every example prompt (README, experiment files, the serve page) names only classes its dataset
has: a prompt like "A large red circle on the left." for the demo (whose classes are red square,
green circle, ...) names no class and would be drawn as an empty scene."""

import importlib
import pathlib
import re

import pytest

from gcd_jax.cli import page
from gcd_jax.data import classes

REPO = pathlib.Path(__file__).resolve().parents[1]

_PROMPTS = re.compile(r'--prompts\s+"([^"]*)"')


def readme_demo_prompts() -> list[str]:
    """Every ``--prompts "a;b"`` of a README command run with a demo config (commands joined
    across their ``\\`` line continuations)."""
    commands = (REPO / "README.md").read_text().replace("\\\n", " ").splitlines()
    out = []
    for command in commands:
        if re.search(r"--config experiments/demo(_sr)?\.py", command):
            for group in _PROMPTS.findall(command):
                out += [p.strip() for p in group.split(";") if p.strip()]
    return out


def experiment_prompts() -> list[tuple[str, str]]:
    """(experiment file, prompt) for every ``--prompts "a;b"`` written in experiments/*.py."""
    out = []
    for path in sorted((REPO / "experiments").glob("*.py")):
        for group in _PROMPTS.findall(path.read_text()):
            out += [(path.stem, p.strip()) for p in group.split(";") if p.strip()]
    return out


def problems(info: classes.DatasetInfo, prompt: str) -> list[str]:
    """Why ``prompt`` is not in ``info``'s vocabulary: it names no class, or a class word is left
    over once the classes it names are taken out ("red circle" -> "red", "circle")."""
    named = info.caption_classes(prompt)
    if not named:
        return [f"{prompt!r} names no class of {info.name}"]
    rest = prompt
    for k in named:
        rest = re.sub(info.keywords[k], " ", rest, flags=re.IGNORECASE)
    class_words = {
        w
        for k, name in enumerate(info.class_names)
        if k in info.keywords
        for w in name.lower().split()
    }
    left = class_words & set(re.findall(r"[a-z]+", rest.lower()))
    return [f"{prompt!r}: {sorted(left)} not part of a class of {info.name}"] if left else []


def test_the_check_catches_prompts_outside_the_vocabulary():
    demo = classes.dataset_info("demo")
    assert problems(demo, "A large red circle on the left.")  # no class named at all
    assert problems(demo, "A red square and a blue circle.")  # one class and a stray phrase
    assert not problems(demo, "A red square and a green circle at the top.")


@pytest.mark.parametrize("experiment,prompt", experiment_prompts())
def test_experiment_prompts(experiment, prompt):
    module = importlib.import_module(f"experiments.{experiment}")
    info = classes.dataset_info(module.get_config().data.name)
    assert problems(info, prompt) == []


@pytest.mark.parametrize("prompt", [*readme_demo_prompts(), page.EXAMPLE_PROMPT])
def test_demo_prompts(prompt):
    assert problems(classes.dataset_info("demo"), prompt) == []


def test_example_prompts_are_found():
    """The collectors see the demo cascade's example and the README's sampling commands (a parsing
    slip would skip every check)."""
    assert ("demo_sr", "A large red square on the left.") in experiment_prompts()
    assert {"A large red square on the left.", "A red square."} <= set(readme_demo_prompts())
