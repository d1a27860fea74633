"""The import graph goes one way: no module imports one from a higher layer (imports made
inside functions count too). Run ``pytest tests/test_layers.py -v`` to see the layers."""

import ast
from pathlib import Path

import pytest

from tests.conftest import ROOT

PACKAGE = ROOT / "okdhp_edge"

# lowest first; a module is in the layer of the longest prefix that names it
LAYERS = (
    ("okdhp_edge.errors", "okdhp_edge.schema", "okdhp_edge.grammar", "okdhp_edge.utils",
     "okdhp_edge.targets", "okdhp_edge.families"),
    ("okdhp_edge.records", "okdhp_edge.config", "okdhp_edge.data"),
    ("okdhp_edge.models", "okdhp_edge.losses", "okdhp_edge.evaluation", "okdhp_edge.manifest"),
    ("okdhp_edge.backends.base", "okdhp_edge.export.onnx_export", "okdhp_edge.export.quantize",
     "okdhp_edge.export.qat_program", "okdhp_edge.export.subpixel",
     "okdhp_edge.runtime.pipeline", "okdhp_edge.students"),
    ("okdhp_edge.backends", "okdhp_edge.runtime"),
    ("okdhp_edge.export", "okdhp_edge.training", "okdhp_edge.plan"),
    ("okdhp_edge.bench", "okdhp_edge.zoo", "okdhp_edge.experiments", "okdhp_edge.evaluate",
     "okdhp_edge.visualize", "okdhp_edge.api"),
    ("okdhp_edge.train", "okdhp_edge.quickstart", "okdhp_edge.__main__",
     "okdhp_edge.models.__main__", "okdhp_edge.data.__main__", "okdhp_edge.bench.__main__",
     "okdhp_edge.experiments.__main__"),
)
# command-line entry points: nothing in the library imports them
CLI = ("okdhp_edge.__main__", "okdhp_edge.train", "okdhp_edge.evaluate",
       "okdhp_edge.visualize", "okdhp_edge.quickstart", "okdhp_edge.bench.__main__",
       "okdhp_edge.models.__main__", "okdhp_edge.data.__main__",
       "okdhp_edge.experiments.__main__")


def _name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer(module: str) -> int:
    best, found = -1, None
    for i, prefixes in enumerate(LAYERS):
        for p in prefixes:
            if (module == p or module.startswith(p + ".")) and len(p) > best:
                best, found = len(p), i
    if found is None:
        raise AssertionError(f"{module} is in no layer: add it to LAYERS")
    return found


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
