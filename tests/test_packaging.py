"""Packaging: a plain install is the torch-free runtime; training is the [train] extra."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from tests.conftest import ROOT

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11



def _project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def test_every_serial_test_is_in_make_tests_serial_run():
    """``make test`` runs the ``serial`` tests from the files its SERIAL_TESTS names (the
    parallel run leaves them out): a serial test elsewhere would run in neither."""
    line = next(x for x in (ROOT / "Makefile").read_text().splitlines()
                if x.startswith("SERIAL_TESTS :="))
    named = set(line.split(":=")[1].split())
    mark = "pytest.mark." + "serial"  # spelt apart: this file does not use it
    marked = {p.relative_to(ROOT).as_posix() for p in (ROOT / "tests").rglob("test_*.py")
              if mark in p.read_text()}
    assert marked and marked <= named, marked - named
    assert all((ROOT / f).is_file() for f in named)


def test_the_longest_files_named_first_exist():
    """conftest.LONGEST_FIRST orders the suite for its workers: a renamed file would drop
    out of that order without a word."""
    from tests.conftest import LONGEST_FIRST

    assert all((ROOT / f).is_file() for f in LONGEST_FIRST)


def test_plain_install_is_torch_free_and_train_extra_adds_it():
    proj = _project()
    names = [d.split(">")[0].split("=")[0].split("[")[0].strip() for d in proj["dependencies"]]
    assert "torch" not in names and "onnxruntime" in names and "openvino" in names
    assert "torch==2.13.0" in proj["optional-dependencies"]["train"]
    assert {"train", "dev", "tensorrt"} <= set(proj["optional-dependencies"])


def test_training_extra_modules_match_the_cli_message():
    from okdhp_edge.utils.cli import TRAIN_EXTRA

    modules = {"py-cpuinfo": "cpuinfo"}
    extra = [d.split("=")[0].split(">")[0].strip()
             for d in _project()["optional-dependencies"]["train"]]
    assert {modules.get(d, d) for d in extra} == set(TRAIN_EXTRA)


@pytest.mark.parametrize("module,args", [
    ("okdhp_edge.train", ["--config", "configs/quickstart.yaml"]),
    ("okdhp_edge.models", ["hg2"]),
    ("okdhp_edge", ["models", "hg2"]),
])
def test_torch_commands_without_torch_name_the_extra(module, args):
    block = textwrap.dedent(f"""
        import sys, runpy
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name == "torch" or name.startswith("torch."):
                    raise ModuleNotFoundError("No module named 'torch'", name="torch")
        sys.meta_path.insert(0, Block())
        sys.argv = [{module!r}, *{args!r}]
        runpy.run_module({module!r}, run_name="__main__", alter_sys=True)
    """)
    proc = subprocess.run([sys.executable, "-c", block], capture_output=True, text=True,
                          cwd=ROOT)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "pip install 'okdhp_edge[train]'" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_setup_py_shim_reads_the_same_metadata():
    """``pyproject.toml`` is the metadata; the one-line ``setup.py`` serves tools that
    still call it."""
    proc = subprocess.run([sys.executable, "setup.py", "--name", "--version"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split()[-2:] == [_project()["name"], _project()["version"]]


def test_a_32_bit_arm_os_is_refused_in_one_line_at_install_time():
    """setup.py runs when pip builds the package on the board: a 32-bit Arm user space
    (no runtime wheels exist for it) gets one line, not a compile of numpy that fails."""
    code = ("import platform, runpy; platform.machine = lambda: 'armv7l'; "
            f"runpy.run_path({str(ROOT / 'setup.py')!r})")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=ROOT)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        "okdhp_edge: no 32-bit Arm (armv7l) wheels exist for ONNX Runtime, OpenVINO or "
        "LiteRT; install a 64-bit (aarch64) OS on this board"]
