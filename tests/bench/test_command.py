import json
import shutil
import subprocess
import sys

import pytest

from okdhp_edge.bench.decide import pick
from okdhp_edge.bench.report import load_report, pareto
from okdhp_edge.bench.timing import TimingConfig, interleaved, summarize
from okdhp_edge.records import BenchRow
from okdhp_edge.schema import from_dict


def test_summary_statistics():
    s = summarize([1.0, 2.0, 3.0, 4.0, 100.0], TimingConfig(bootstrap=200))
    assert s["median"] == 3.0 and s["min"] == 1.0 and s["max"] == 100.0
    assert s["ci95_median"][0] <= 3.0 <= s["ci95_median"][1]
    assert s["high_cv"] is True and s["iterations"] == 5


def test_interleaved_meets_minimums():
    calls = {"a": 0, "b": 0}

    def f(k):
        def g():
            calls[k] += 1
        return g

    cfg = TimingConfig(warmup_iters=3, warmup_s=0.0, min_iters=30, min_time_s=0.0, rounds=3)
    out = interleaved({"a": f("a"), "b": f("b")}, cfg)
    assert len(out["a"]) >= 30 and len(out["b"]) >= 30
    assert calls["a"] == len(out["a"]) + 3


def _row(student, backend, lat, acc, status="ok"):
    return from_dict(BenchRow, {
        "student": student, "backend": backend, "precision": "fp32", "status": status,
        "latency_ms": {"engine": {"median": lat, "p90": lat * 1.1, "p99": lat * 1.2}},
        "accuracy": {"value": acc}, "params": 1, "macs": 1, "command": "x"}, "row")


def test_pick_and_frontier_on_hand_made_report():
    rows = [_row("s", "onnxruntime", 1.0, 0.50), _row("m", "onnxruntime", 2.0, 0.60),
            _row("m", "torch", 4.0, 0.60), _row("l", "openvino", 3.0, 0.70),
            _row("l", "torch", 9.0, 0.71), _row("x", "tensorrt", 0.1, 0.9, "unavailable")]
    d = pick(rows, 3.5)
    assert (d.choice.student, d.choice.backend) == ("l", "openvino") and d.tie is None
    assert [r.student for r in d.frontier] == ["s", "m", "l", "l"]
    d = pick(rows, 0.5)
    assert d.choice is None
    assert (d.closest.student, d.closest.latency_ms["engine"].median) == ("s", 1.0)
    assert pick(rows, 10, min_accuracy=0.705).choice.backend == "torch"
    assert pick(rows, 10, backend="onnxruntime").choice.student == "m"
    assert pareto(rows)[0].student == "s"


def test_report_contents(report, tiny_zoo):
    rep = load_report(report / "tiny.json")
    assert (report / "tiny.md").is_file() and (report / "tiny_pareto.png").stat().st_size > 1000
    fp = rep.device
    for key in ("cpu_model", "cpu_flags", "cores", "threads", "versions", "git_commit", "os"):
        assert key in fp
    assert rep.timing["warmup_s"] == 0.02 and rep.timing["min_time_s"] == 0.05  # as asked
    rows = {(r.student, r.backend, r.precision): r for r in rep.rows}
    for s in ("hg2", "hg3"):
        for b, p in (("torch", "fp32"), ("onnxruntime", "fp32"), ("openvino", "fp32")):
            r = rows[(s, b, p)]
            assert r.status == "ok" and r.available
            lat = r.latency_ms["engine"]
            assert lat.iterations >= 6 and lat.min <= lat.median <= lat.max
            assert "e2e" in r.latency_ms and r.accuracy.metric == "AP"
            assert "--backends " + b in r.command
        ov = rows[(s, "openvino", "fp32")]
        assert ov.runner["inference_precision"] == "f32"
        assert ov.parity.passed and ov.parity.real.mean_kpt_disp_px <= 0.5
        assert rows[(s, "onnxruntime", "fp32")].accuracy.delta_vs_torch_fp32 == \
            pytest.approx(0.0, abs=0.02)
        for b in ("torch", "onnxruntime", "openvino"):  # --batch 4: images/s of that batch
            tp = rows[(s, b, "fp32")].throughput
            assert tp["batch"] == 4 and tp["images_per_s"] == pytest.approx(
                4e3 / tp["median_ms"]), tp
        trt = rows[(s, "tensorrt", "fp32")]
        assert trt.available is False and trt.status == "unavailable"
        assert "tensorrt" in trt.reason.lower() or "gpu" in trt.reason.lower()



def test_report_carries_intervals_and_load(report):
    """Every measured accuracy has its bootstrap interval over the report split's images,
    every backend's difference from PyTorch fp32 a paired one (exactly 0 for the baseline
    itself), and every row the load of other processes while it was timed."""
    rep = load_report(report / "tiny.json")
    measured = [r for r in rep.rows if r.status == "ok"]
    for r in measured:
        acc = r.accuracy
        assert acc.ci95[0] <= acc.value <= acc.ci95[1]
        assert acc.bootstrap.unit == "image" and acc.bootstrap.n_resamples == 1000
        lo, hi = acc.delta_ci95
        if (r.backend, r.precision) == ("torch", "fp32"):
            assert (lo, hi) == (0.0, 0.0)
        assert lo <= acc.delta_vs_torch_fp32 + 1e-9 and acc.delta_vs_torch_fp32 <= hi + 1e-9
        eng = r.latency_ms["engine"]
        assert eng.others_cores_max is not None and eng.others_cores_max >= 0
    assert rep.load["policy"] == "warn" and rep.load["threshold_cores"] == 0.25
    md = (report / "tiny.md").read_text()
    assert "paired 95% CI" in md and "bootstrap over the" in md
    ort = next(r for r in measured if r.backend == "onnxruntime")
    assert ort.runner["scheduling"] == {"allow_spinning": True}
    assert "onnxruntime allow_spinning on" in md


def test_compare_refuses_mismatched_zoos(report, tmp_path):
    rep = json.loads((report / "tiny.json").read_text())
    other = dict(rep, zoo="other", device_id="box2")
    p2 = tmp_path / "other.json"
    p2.write_text(json.dumps(other))
    proc = subprocess.run([sys.executable, "-m", "okdhp_edge.bench", "compare",
                           str(report / "tiny.json"), str(p2), "--out", str(tmp_path / "c")],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "zoo 'other' differs" in proc.stderr
    same = dict(rep, device_id="box2")
    p3 = tmp_path / "same.json"
    p3.write_text(json.dumps(same))
    proc = subprocess.run([sys.executable, "-m", "okdhp_edge.bench", "compare",
                           str(report / "tiny.json"), str(p3), "--out", str(tmp_path / "c")],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "box2" in (tmp_path / "c" / "compare.md").read_text()
    shutil.rmtree(tmp_path / "c")


def test_an_unknown_student_is_named_not_skipped(tiny_zoo):
    """--students with a name the zoo lacks: one line naming the closest (it used to be
    dropped silently when another name matched)."""
    from okdhp_edge.bench.candidates import zoo_candidates
    from okdhp_edge.errors import UsageError

    with pytest.raises(UsageError, match="no student 'hg33'.*did you mean 'hg3'"):
        zoo_candidates(tiny_zoo, ("hg2", "hg33"), [], None)
