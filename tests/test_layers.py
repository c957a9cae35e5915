"""The package's layers (docs/design.md §2): a module imports only from its own layer or lower
ones, and the drivers of ``gcd_jax/cli`` never import each other.

    python tests/test_layers.py      # prints each module's gcd_jax imports, by layer
"""

import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1]
# Lowest first. A top-level module (``gcd_jax/x.py``) is named by its file, a folder by its name.
LAYERS = (
    ("foundation", {"errors", "interfaces", "nearest", "sharding", "viz"}),
    ("maths", {"diffusion"}),
    ("data", {"data"}),
    ("models", {"models"}),
    ("training", {"training"}),
    ("inference", {"inference"}),
    ("evaluation", {"evaluation"}),
    ("conversion", {"convert"}),
    ("entry points", {"cli"}),
)
DRIVERS = {"train", "sample", "evaluate", "serve", "analyze", "convert"}  # gcd_jax/cli/<driver>.py


def layer_of(module: str) -> int:
    """``'gcd_jax.diffusion.joint'`` -> the index of its layer in ``LAYERS``. A package's
    ``__main__`` (``python -m gcd_jax.convert``) is an entry point."""
    if module.endswith(".__main__"):
        return len(LAYERS) - 1
    part = module.split(".")[1]
    for i, (_, names) in enumerate(LAYERS):
        if part in names:
            return i
    raise AssertionError(f"{module} is in no layer of tests/test_layers.py: add it to LAYERS")


def module_name(path: pathlib.Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: pathlib.Path) -> set[str]:
    """The gcd_jax modules (or packages) a file imports, at any depth of its code."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("gcd_jax.")}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("gcd_jax"):
            for alias in node.names:  # from gcd_jax.training import checkpoint: the module
                child = f"{node.module}.{alias.name}"
                is_module = (ROOT / (child.replace(".", "/") + ".py")).exists()
                found.add(child if is_module or node.module == "gcd_jax" else node.module)
    return found


def graph() -> dict[str, set[str]]:
    """``{module: its gcd_jax imports}`` for every module of the package except its root
    ``__init__`` (which re-exports the kernels for ``import gcd_jax`` users)."""
    files = sorted((ROOT / "gcd_jax").rglob("*.py"))
    return {module_name(f): imports_of(f) for f in files if f != ROOT / "gcd_jax" / "__init__.py"}


def violations(edges: dict[str, set[str]]) -> list[str]:
    found = []
    for module, imported in edges.items():
        for other in imported:
            if layer_of(other) > layer_of(module):
                found.append(f"{module} ({LAYERS[layer_of(module)][0]}) imports {other}")
            parts, other_parts = module.split("."), other.split(".")
            if (
                parts[1] == other_parts[1] == "cli"
                and len(parts) > 2
                and len(other_parts) > 2
                and {parts[2], other_parts[2]} <= DRIVERS
                and parts[2] != other_parts[2]
            ):
                found.append(f"driver {module} imports driver {other}")
    return sorted(found)


def test_lower_layers_never_import_higher_ones():
    assert violations(graph()) == []


def test_the_check_sees_a_violation():
    """The check itself: an upward import and a driver importing a driver are found."""
    edges = {
        "gcd_jax.diffusion.joint": {"gcd_jax.training.loop"},
        "gcd_jax.cli.sample": {"gcd_jax.cli.train", "gcd_jax.cli.page"},
    }
    assert violations(edges) == [
        "driver gcd_jax.cli.sample imports driver gcd_jax.cli.train",
        "gcd_jax.diffusion.joint (maths) imports gcd_jax.training.loop",
    ]


if __name__ == "__main__":
    edges = graph()
    for module in sorted(edges, key=lambda m: (layer_of(m), m)):
        targets = sorted(edges[module], key=lambda m: (layer_of(m), m))
        print(f"[{LAYERS[layer_of(module)][0]}] {module} <- " + (", ".join(targets) or "-"))
    problems = violations(edges)
    print("\n".join(problems) if problems else "no module imports a higher layer")
