"""The bench's worker processes: a crash, an abort or a hang costs its own rows only, the
report is written, every row's memory is the worker's own, and no worker outlives the bench."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from okdhp_edge import api
from okdhp_edge.bench import report as report_module
from okdhp_edge.bench import worker as worker_module
from okdhp_edge.bench.report import load_report
from okdhp_edge.utils.isolate import LOG_DIR_PREFIX, remove_stale_log_dirs
from tests.bench.misbehaving import runner_for

FAST = dict(threads=1, min_iters=6, min_time=0.05, warmup_time=0.02, rounds=2, batch=1,
            accuracy=False, device_name="iso-box")


def _rows(rep, backend: str) -> list:
    return [r for r in rep.rows if r.backend == backend]


def test_a_segfault_while_loading_fails_its_rows_and_the_report_is_written(
        tiny_zoo, tmp_path, monkeypatch):
    runner_for(monkeypatch, "onnxruntime", "SegfaultOnLoad")
    rep, files = api.bench(tiny_zoo, out_root=tmp_path, backends="torch,onnxruntime",
                           precisions="fp32", students="hg2", **FAST)
    for r in _rows(rep, "onnxruntime"):
        assert r.status == "failed" and r.failure.stage == "load"
        assert r.failure.signal == "SIGSEGV"
        assert "SIGSEGV during load" in r.reason and "segfault" in r.reason  # the frame
    assert all(r.status == "ok" and r.latency("median") > 0 for r in _rows(rep, "torch"))
    on_disk = load_report(files["json"])
    assert [r.status for r in on_disk.rows] == [r.status for r in rep.rows]
    assert on_disk.rows[1].failure.log_tail[0].startswith("Fatal Python error")
    assert files["png"].is_file() and "SIGSEGV" in files["md"].read_text()


def test_an_abort_while_timed_fails_its_rows_in_the_time_stage(tiny_zoo, tmp_path,
                                                               monkeypatch):
    runner_for(monkeypatch, "onnxruntime", "AbortWhileTimed")
    rep, _ = api.bench(tiny_zoo, out_root=tmp_path, backends="onnxruntime,openvino",
                       precisions="fp32", students="hg2", **FAST)
    for r in _rows(rep, "onnxruntime"):
        assert (r.status, r.failure.stage, r.failure.signal) == ("failed", "time", "SIGABRT")
        assert r.cost is not None  # what was measured before the crash is kept
    assert all(r.status == "ok" for r in _rows(rep, "openvino"))


def test_a_hung_worker_is_stopped_at_its_timeout(tiny_zoo, tmp_path, monkeypatch):
    runner_for(monkeypatch, "onnxruntime", "HangWhileTimed")
    t0 = time.monotonic()
    rep, _ = api.bench(tiny_zoo, out_root=tmp_path, backends="torch,onnxruntime",
                       precisions="fp32", students="hg2", worker_timeout=3, **FAST)
    assert time.monotonic() - t0 < 60
    (hung,) = _rows(rep, "onnxruntime")
    assert (hung.status, hung.failure.stage, hung.failure.timeout_s) == ("failed", "time", 3)
    assert "stopped after its 3 s timeout during time" in hung.reason
    assert _rows(rep, "torch")[0].status == "ok"


def test_a_dying_converter_fails_the_rows_of_its_files(tiny_zoo, tmp_path, monkeypatch):
    from tests.bench.misbehaving import SegfaultingExport

    monkeypatch.setattr(worker_module, "ExportService", SegfaultingExport)
    rep, _ = api.bench(tiny_zoo, out_root=tmp_path, backends="torch,openvino",
                       precisions="fp32", students="hg2", **FAST)
    for r in _rows(rep, "openvino"):
        assert (r.status, r.failure.stage, r.failure.signal) == ("failed", "convert", "SIGSEGV")
    assert all(r.status == "ok" for r in _rows(rep, "torch"))


def test_a_crashing_chart_leaves_the_json_and_table_and_no_temporary(tiny_zoo, tmp_path,
                                                                     monkeypatch):
    from tests.bench.misbehaving import segfaulting_chart

    monkeypatch.setattr(report_module, "draw_report_chart", segfaulting_chart)
    rep, files = api.bench(tiny_zoo, out_root=tmp_path, backends="torch", precisions="fp32",
                           students="hg2", **FAST)
    assert "png" not in files and files["json"].is_file()
    assert "pareto" not in files["md"].read_text()
    assert sorted(p.name for p in files["json"].parent.iterdir()) == ["tiny.json", "tiny.md"]


# LiteRT's row (its converter's first load: ~11 s) is slow; the measurement is the same
@pytest.mark.parametrize("backend", ["torch", "onnxruntime", "openvino",
                                     pytest.param("litert", marks=pytest.mark.slow)])
def test_a_rows_peak_memory_is_its_workers_own(tiny_zoo, backend):
    """The cost a worker reports matches the kernel's VmHWM of that worker read from here."""
    from okdhp_edge.backends.recipe import QuantRecipe
    from okdhp_edge.bench.candidates import zoo_candidates
    from okdhp_edge.bench.run import BenchOptions, _row_spec, _target, model_path
    from okdhp_edge.bench.timing import TimingConfig
    from okdhp_edge.records import BenchRow
    from okdhp_edge.targets import targets_for
    from okdhp_edge.utils.isolate import Worker, import_path, vm_kb

    (c,) = zoo_candidates(tiny_zoo, ("hg3",), targets_for((backend,), ("fp32",)), QuantRecipe())
    row = BenchRow(c.name, backend, "fp32")
    path, reason = model_path(c, _target(row))
    assert path, reason
    with Worker(import_path(worker_module.RowService), _row_spec(c, row, BenchOptions(threads=1)),
                name="memory") as w:
        w.call("load", path, stage="load")
        cost = w.call("warm_up", "engine", TimingConfig(warmup_iters=3, warmup_s=0.01),
                      stage="warm-up")
        independent = vm_kb("VmHWM", w.pid) / 1024
    assert abs(cost.peak_mb - independent) <= 0.1 * independent
    assert 0 < cost.runtime_peak_mb < cost.peak_mb and cost.load_ms > 0
    assert cost.torch_imported == (backend == "torch")


def _spawned_children(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            cmd = (stat.parent / "cmdline").read_bytes()
        except OSError:
            continue
        if int(fields[1]) == pid and b"okdhp_edge.utils.isolate" in cmd:
            out.append(int(stat.parent.name))
    return out


def _running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_no_worker_outlives_a_killed_bench(tiny_zoo, tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "okdhp_edge", "bench", "--zoo", str(tiny_zoo),
                             "--backends", "onnxruntime", "--precisions", "fp32",
                             "--min-time", "60", "--no-accuracy", "--out-root", str(tmp_path)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline, kids = time.monotonic() + 120, []
        while not kids and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.2)
            kids = _spawned_children(proc.pid)
        assert kids, "the bench started no worker"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        deadline = time.monotonic() + 10  # the workers see their parent gone and exit
        while [k for k in kids if _running(k)] and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not [k for k in kids if _running(k)]
        # the killed bench's worker logs are swept by the next worker (here, or a test's)
        remove_stale_log_dirs()
        assert not list(Path(tempfile.gettempdir()).glob(f"{LOG_DIR_PREFIX}{proc.pid}-*"))
    finally:
        if proc.poll() is None:
            proc.kill()


def test_log_folders_of_dead_parents_are_swept_and_live_ones_kept(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    dead = tmp_path / f"{LOG_DIR_PREFIX}{gone.pid}-abc"
    live = tmp_path / f"{LOG_DIR_PREFIX}{os.getpid()}-def"
    for folder in (dead, live):
        folder.mkdir()
        (folder / "w.log").write_text("x")
    assert remove_stale_log_dirs() == [dead]
    assert not dead.exists() and live.is_dir()


@pytest.mark.slow
def test_memory_grows_with_the_student_on_every_cpu_runtime(tmp_path):
    """At 256x192, a MobileNetV2 student with a 128-channel decoder needs more memory than
    one with a 32-channel decoder, in every CPU runtime's row, fp32 and int8 (~5 min)."""
    from tests.conftest import ROOT, okdhp_process

    proc = okdhp_process(
        "bench", "--plan", ROOT / "configs/coco/mobilenetv2_okdhp_unbalanced_256x192.yaml",
        "model.decoder_widths=[32,128]", "--backends",
        "torch,onnxruntime,openvino,litert,executorch", "--precisions", "fp32,int8",
        "--min-time", "0.05", "--min-iters", "3", "--warmup-time", "0.02", "--batch", "1",
        "--out-root", tmp_path, "--plan-root", tmp_path / "plan", "--device-name", "box",
        timeout=1800)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (path,) = (tmp_path / "box").glob("*.json")
    rows = [r for r in load_report(path).rows if r.status == "ok"]
    pairs = {(r.backend, r.precision) for r in rows}
    assert len(pairs) == 9  # torch fp32 and four runtimes x two precisions
    for backend, precision in pairs:
        mb = {r.student: r.cost.model_mb for r in rows
              if (r.backend, r.precision) == (backend, precision)}
        assert mb["mbv2-d32"] < mb["mbv2-d128"], (backend, precision, mb)
