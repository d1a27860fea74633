"""The backends table: every backend is one module that the table names, its runner loads
without torch where the table says so, and no other module names a backend."""

import ast
import importlib
import subprocess
import sys

import pytest

from okdhp_edge.targets import BACKEND_INFO, FORMATS, TARGETS, default_backends
from tests.conftest import ROOT, blocking

PACKAGE = ROOT / "okdhp_edge"


@pytest.mark.parametrize("name", list(BACKEND_INFO))
def test_each_backend_module_has_the_contract(name):
    mod = importlib.import_module(BACKEND_INFO[name].module)
    assert mod.RUNNER.backend == name
    assert callable(mod.unavailable_reason)
    built = {f for f, spec in FORMATS.items() if spec.builder == name}
    assert set(mod.BUILDERS) == built, f"{name} builds {sorted(built)}"
    for t in TARGETS.values():
        if t.backend == name and t.export:
            assert FORMATS[t.export].runs_on == name


def test_no_module_outside_the_table_names_a_backend():
    """Backend names live in targets.py and backends/ only (``torch`` is also the package's
    name, so it is not looked for)."""
    names = set(BACKEND_INFO) - {"torch"}
    found = []
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE)
        if rel.parts[0] == "backends" or rel.name == "targets.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and node.value in names:
                found.append(f"{rel}:{node.lineno} {node.value!r}")
    assert not found, found


def test_torch_free_runners_load_without_torch():
    free = [b.name for b in BACKEND_INFO.values() if b.torch_free]
    script = blocking("torch") + (
        "from okdhp_edge.backends import backend_module, make_runner\n"
        f"for name in {free!r}:\n"
        "    backend_module(name); make_runner(name)\n"
        "assert 'torch' not in sys.modules\n")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_cli_defaults_come_from_the_table():
    from okdhp_edge.bench.command import BenchRequest

    assert BenchRequest.parse(["--zoo", "z"]).backends == default_backends()
    assert "executorch" not in default_backends() and "litert" in default_backends()
