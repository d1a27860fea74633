"""Shared fixtures: the tiny real data in ../shared/data and a tiny synthetic dataset."""

from __future__ import annotations

import io
import logging
import textwrap
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest

ROOT = Path(__file__).resolve().parents[1]  # the repository
SHARED = ROOT.parent / "shared" / "data"


# the files that take longest (their fixtures and processes: `--durations=0` on a 2-core
# machine, 2026-12-07), handed to the test workers first: a worker that starts one of them
# last keeps the run going while the other waits idle (`make test` passes
# --no-loadscope-reorder so that xdist keeps this order; the rest follow as collected)
LONGEST_FIRST = (
    "tests/convert/test_quantize.py", "tests/training/test_trainer.py",
    "tests/e2e/test_journey.py", "tests/bench/test_isolation.py", "tests/training/test_qat.py",
    "tests/test_integrity.py", "tests/bench/test_decoder_forms.py", "tests/test_plan.py",
    "tests/training/test_qat_quantizer.py", "tests/backends/test_litert.py",
    "tests/backends/test_executorch.py", "tests/experiments/test_ablation.py",
)


def pytest_collection_modifyitems(items: list) -> None:
    rank = {f: i for i, f in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::")[0], len(rank)))


def require(module: str, reason: str = "") -> None:
    """Skip the calling test module when ``module`` is not installed, without importing it:
    ``pytest.importorskip`` imports it while the suite is collected, in every test worker
    (litert_torch ~4 s, onnxscript ~1 s), whether or not that worker runs the module."""
    import importlib.util

    if importlib.util.find_spec(module) is None:
        pytest.skip(reason or f"{module} is not installed", allow_module_level=True)


def _shared(sub: str) -> Path:
    path = SHARED / sub
    if not path.is_dir():
        pytest.skip(f"{path} is absent: the tiny real COCO/MPII samples live in ../shared/data")
    return path


@pytest.fixture(scope="session")
def coco_tiny() -> Path:
    return _shared("coco_tiny")


@pytest.fixture(scope="session")
def mpii_tiny() -> Path:
    return _shared("mpii_tiny")


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory) -> Path:
    from okdhp_edge.data.synthetic import generate_dataset

    root = tmp_path_factory.mktemp("synthetic")
    generate_dataset(root, 48, 16, seed=3, image_size=(160, 120), workers=1)
    return root


TINY_OVERRIDES = [
    "data.input_size=[32,32]", "data.select_fraction=0.25", "data.workers=0",
    "model.width=8", "model.stem_width=8", "model.depth=1", "model.shared_stacks=1",
    "model.branches=[1,2]", "model.fau_kernels=[3]", "model.fau_hidden=8",
    "train.epochs=2", "train.batch_size=8", "train.lr=1e-3", "train.threads=1",
    "eval.batch_size=16", "eval.flip_test=false",
]

# a light student of the quickstart config's plan with the fewest operators (ResNet-18's
# encoder: a converter's time grows with them), decoders of 8 and 16 channels, at 64x64
LIGHT = ["model.name=okdhp_light", "model.encoder=resnet18", "model.width_mult=0.125",
         "model.decoder_widths=[8,16]", "model.fau_width=8", "data.input_size=[64,64]"]


def tiny_overrides(root, tmp, *extra):
    return [f"data.root={root}", f"train.out_dir={tmp}/runs", f"zoo.root={tmp}/zoo",
            *TINY_OVERRIDES, *extra]


@pytest.fixture(scope="session")
def tiny_zoo(synthetic_root, tmp_path_factory) -> Path:
    """A zoo of two tiny students trained for 2 epochs (session-wide)."""
    from okdhp_edge.config import load_config
    from okdhp_edge.training.trainer import Trainer
    from okdhp_edge.training.zoo_writer import write_zoo

    tmp = tmp_path_factory.mktemp("tinyzoo")
    cfg = load_config(overrides=tiny_overrides(synthetic_root, tmp, "zoo.name=tiny"))
    trainer = Trainer(cfg, config_name="tiny")
    return write_zoo(trainer.fit())


@dataclass(frozen=True)
class CliResult:
    """What a command did: its exit status and what it printed (the log is in stderr)."""

    returncode: int
    stdout: str
    stderr: str


def okdhp(*argv: str) -> CliResult:
    """``okdhp ARGV`` run in this process, as ``run_cli`` runs it from a shell (one-line
    errors, exit statuses): a command's checks tested without starting Python and importing
    torch, ONNX Runtime and OpenVINO again. A journey through processes is tests/e2e's."""
    from okdhp_edge.__main__ import main
    from okdhp_edge.utils.cli import run_cli

    out, err = io.StringIO(), io.StringIO()
    handler = logging.StreamHandler(err)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        with redirect_stdout(out), redirect_stderr(err):
            run_cli(main, [str(a) for a in argv])
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
    return CliResult(code, out.getvalue(), err.getvalue())


def okdhp_process(*argv: str, timeout: float = 900) -> CliResult:
    """``python -m okdhp_edge ARGV`` in a process of its own: for the commands whose exit
    status and output a test reads as a shell sees them. (The runtimes a bench drives live
    in its worker processes: no test needs a process of its own to survive a crash.)"""
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "okdhp_edge", *[str(a) for a in argv]],
                          capture_output=True, text=True, timeout=timeout)
    return CliResult(proc.returncode, proc.stdout, proc.stderr)


def blocking(package: str) -> str:
    """The start of a ``python -c`` script in which ``package`` cannot be imported (a target
    device without it): blocked in the script's process, and shadowed at the front of its
    ``sys.path`` by a package that refuses to import, which the bench's worker processes
    inherit (their ``PYTHONPATH`` is the parent's ``sys.path``)."""
    return textwrap.dedent(f"""
        import os, sys, tempfile
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name == "{package}" or name.startswith("{package}."):
                    raise ImportError("{package} is not installed here")
        sys.meta_path.insert(0, Block())
        _shadow = os.path.join(tempfile.mkdtemp(prefix="okdhp-block-"), "{package}")
        os.makedirs(_shadow)
        with open(os.path.join(_shadow, "__init__.py"), "w") as _f:
            _f.write('raise ImportError("{package} is not installed here")')
        sys.path.insert(0, os.path.dirname(_shadow))
    """)


# runs `python -m okdhp_edge.bench ARGS` with torch made unimportable (a target device)
BLOCK_TORCH = blocking("torch") + textwrap.dedent("""
    import runpy
    sys.argv = ["okdhp_edge.bench"] + sys.argv[1:]
    runpy.run_module("okdhp_edge.bench", run_name="__main__")
""")


def built_once(tmp_path_factory, name: str, build: Callable[[Path], None]) -> Path:
    """``build(folder)`` once for the whole run, whichever test worker asks first (the
    others wait on a lock in the workers' common temp root, then read the same folder):
    for read-only fixtures that take seconds to make."""
    import os
    import shutil

    from filelock import FileLock

    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent
    out = root / name
    with FileLock(str(out) + ".lock"):
        if not (out / ".built").is_file():
            shutil.rmtree(out, ignore_errors=True)
            out.mkdir(parents=True)
            build(out)
            (out / ".built").touch()
    return out


@pytest.fixture(scope="session")
def report(tiny_zoo, tmp_path_factory) -> Path:
    """A bench report of the tiny zoo (torch, ONNX Runtime, OpenVINO, TensorRT unavailable;
    fp32 and INT8 calibrated on 16 images; device 'test-box'), made once for all test
    workers; read only."""
    def build(out: Path) -> None:
        proc = okdhp_process("bench", "--zoo", tiny_zoo, "--backends",
                             "torch,onnxruntime,openvino,tensorrt", "--precisions", "fp32,int8",
                             "--calib-images", "16", "--threads", "1",
                             "--min-iters", "6", "--min-time", "0.05", "--warmup-time", "0.02",
                             "--rounds", "2", "--out-root", out, "--device-name", "test-box",
                             "--batch", "4")
        assert proc.returncode == 0, proc.stderr[-3000:]

    return built_once(tmp_path_factory, "tiny-report", build) / "test-box"
