"""The import graph goes one way: no module imports one from a higher layer (imports made
inside functions count too). Run ``pytest tests/test_layers.py -v`` to see the layers."""

import ast
from pathlib import Path

import pytest

from tests.conftest import ROOT

PACKAGE = ROOT / "okdhp_edge"

# lowest first: package folders and top-level modules, nothing finer. A module named
# ``__main__`` is a command-line entry point wherever it lives (the last layer).
LAYERS = (
    ("errors", "schema", "grammar", "utils", "targets", "families"),
    ("records", "config", "data"),
    ("models", "losses", "evaluation", "manifest", "students"),
    ("convert",),
    ("backends",),
    ("runtime", "export", "training", "plan"),
    ("bench", "zoo", "experiments", "evaluate", "visualize", "api"),
    ("train", "quickstart", "__main__"),
)
# command-line entry points: nothing in the library imports them
CLI = ("okdhp_edge.__main__", "okdhp_edge.train", "okdhp_edge.evaluate",
       "okdhp_edge.visualize", "okdhp_edge.quickstart", "okdhp_edge.bench.__main__",
       "okdhp_edge.models.__main__", "okdhp_edge.experiments.__main__")


def _name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer(module: str) -> int:
    """The layer of ``module``: its top-level folder's or module's, the last for any
    ``__main__``."""
    if module.split(".")[-1] == "__main__":
        return len(LAYERS) - 1
    top = module.split(".")[1] if module.count(".") else module
    for i, names in enumerate(LAYERS):
        if top in names:
            return i
    raise AssertionError(f"{module} is in no layer: add {top} to LAYERS")


def imports() -> list[tuple[str, str, int]]:
    """(importer, imported, line) of every okdhp_edge import in the package."""
    out = []
    for path in sorted(PACKAGE.rglob("*.py")):
        src = _name(path)
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            out += [(src, n, node.lineno) for n in names if n.startswith("okdhp_edge")]
    return out


def test_every_module_has_a_layer():
    for path in PACKAGE.rglob("*.py"):
        if _name(path) != "okdhp_edge":
            layer(_name(path))


def test_no_upward_import():
    """The package root (``okdhp_edge``: ``__version__`` and the lazy model registry) is
    importable from anywhere; every other import goes to the importer's layer or below."""
    bad = [f"{src}:{line} imports {dst} (layer {layer(dst)} > {layer(src)})"
           for src, dst, line in imports()
           if src != "okdhp_edge" and dst != "okdhp_edge" and layer(dst) > layer(src)]
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("cli", CLI)
def test_no_library_module_imports_a_cli(cli):
    users = sorted({src for src, dst, _ in imports() if dst == cli and src not in CLI})
    assert not users, f"{cli} is imported by {users}"


def test_tests_mirror_the_package():
    """tests/<area>/ for a package folder okdhp_edge/<area>/; tests/e2e/ for the journeys
    that cross areas; top-level modules' tests directly under tests/."""
    tests = ROOT / "tests"
    areas = [d.name for d in tests.iterdir() if d.is_dir() and not d.name.startswith((".", "_"))]
    assert all(a == "e2e" or (PACKAGE / a).is_dir() for a in areas), areas
    for t in tests.glob("test_*.py"):
        name = t.stem.removeprefix("test_")
        assert (PACKAGE / f"{name}.py").is_file() or name in ("cli", "fuzz", "integrity",
                                                              "layers", "packaging",
                                                              "readme"), t
