import json
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from okdhp_edge.bench.report import load_report, pareto, pick
from okdhp_edge.bench.timing import TimingConfig, interleaved, summarize
from okdhp_edge.manifest import ManifestError, zoo_students
from okdhp_edge.utils.io import IntegrityError


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
    return {"student": student, "backend": backend, "precision": "fp32", "status": status,
            "latency_ms": {"engine": {"median": lat, "p90": lat * 1.1, "p99": lat * 1.2}},
            "accuracy": {"value": acc}, "params": 1, "macs": 1, "command": "x"}


def test_pick_and_frontier_on_hand_made_report():
    rows = [_row("s", "onnxruntime", 1.0, 0.50), _row("m", "onnxruntime", 2.0, 0.60),
            _row("m", "torch", 4.0, 0.60), _row("l", "openvino", 3.0, 0.70),
            _row("l", "torch", 9.0, 0.71), _row("x", "tensorrt", 0.1, 0.9, "unavailable")]
    best, closest, front = pick(rows, 3.5)
    assert (best["student"], best["backend"]) == ("l", "openvino")
    assert [r["student"] for r in front] == ["s", "m", "l", "l"]
    best, closest, _ = pick(rows, 0.5)
    assert best is None and (closest["student"], closest["latency_ms"]["engine"]["median"]) == \
        ("s", 1.0)
    best, _, _ = pick(rows, 10, min_accuracy=0.705)
    assert best["backend"] == "torch"
    best, _, _ = pick(rows, 10, backend="onnxruntime")
    assert best["student"] == "m"
    assert pareto(rows)[0]["student"] == "s"


@pytest.fixture(scope="module")
def report(tiny_zoo, tmp_path_factory):
    out = tmp_path_factory.mktemp("reports")
    proc = subprocess.run(
        [sys.executable, "-m", "okdhp_edge.bench", "--zoo", str(tiny_zoo), "--threads", "1",
         "--min-iters", "6", "--min-time", "0.05", "--rounds", "2", "--out-root", str(out),
         "--device-name", "test-box", "--batch", "4"],
        capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out / "test-box"


def test_report_contents(report, tiny_zoo):
    rep = load_report(report / "tiny.json")
    assert (report / "tiny.md").is_file() and (report / "tiny_pareto.png").stat().st_size > 1000
    fp = rep["device"]
    for key in ("cpu_model", "cpu_flags", "cores", "threads", "versions", "git_commit", "os"):
        assert key in fp
    rows = {(r["student"], r["backend"], r["precision"]): r for r in rep["rows"]}
    for s in ("hg2", "hg3"):
        for b, p in (("torch", "fp32"), ("onnxruntime", "fp32"), ("openvino", "fp32")):
            r = rows[(s, b, p)]
            assert r["status"] == "ok" and r["available"]
            lat = r["latency_ms"]["engine"]
            assert lat["iterations"] >= 6 and lat["min"] <= lat["median"] <= lat["max"]
            assert "e2e" in r["latency_ms"] and r["accuracy"]["metric"] == "AP"
            assert "--backends " + b in r["command"]
        ov = rows[(s, "openvino", "fp32")]
        assert ov["runner"]["inference_precision"] == "f32"
        assert ov["parity"]["passed"] and ov["parity"]["real"]["mean_kpt_disp_px"] <= 0.5
        assert rows[(s, "onnxruntime", "fp32")]["accuracy"]["delta_vs_torch_fp32"] == \
            pytest.approx(0.0, abs=0.02)
        trt = rows[(s, "tensorrt", "fp32")]
        assert trt["available"] is False and trt["status"] == "unavailable"
        assert "tensorrt" in trt["reason"].lower() or "gpu" in trt["reason"].lower()


def test_pick_cli_exit_codes(report, tiny_zoo):
    base = [sys.executable, "-m", "okdhp_edge.zoo", "pick", "--report",
            str(report / "tiny.json")]
    ok = subprocess.run(base + ["--max-latency-ms", "1000", "--json"], capture_output=True,
                        text=True)
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["choice"]["student"] in ("hg2", "hg3")
    none = subprocess.run(base + ["--max-latency-ms", "0.000001"], capture_output=True, text=True)
    assert none.returncode == 1 and "closest" in none.stdout


def test_bundle_round_trip_and_tamper(tiny_zoo, tmp_path):
    from okdhp_edge.bundles import export_bundle
    from okdhp_edge.runtime.bundle import load_bundle
    from okdhp_edge.students import load_student, torch_engine

    d, man = zoo_students(tiny_zoo)[0]
    out = export_bundle(d / "student.yaml", "onnxruntime", "fp32", tmp_path / "b")
    pipe = load_bundle(out)
    img = np.random.default_rng(0).integers(0, 255, (120, 160, 3), dtype=np.uint8)
    kp = pipe(img, (20, 10, 60, 90))
    assert kp.shape == (17, 3)
    model, _ = load_student(d / "student.yaml")
    x, c, s = pipe.preprocess(img, (20, 10, 60, 90))
    ref = torch_engine(model)(x)
    coords, _ = pipe.codec.decode_to_image(ref, c[None], s[None])
    assert np.abs(coords[0] - kp[:, :2]).max() < 0.5
    model_file = out / pipe.manifest["model"]
    model_file.write_bytes(model_file.read_bytes()[:-100])
    with pytest.raises(IntegrityError, match="sha256 mismatch"):
        load_bundle(out)


def test_newer_bundle_version_refused(tiny_zoo, tmp_path):
    import yaml

    from okdhp_edge.bundles import export_bundle
    from okdhp_edge.runtime.bundle import load_bundle

    d, _ = zoo_students(tiny_zoo)[0]
    out = export_bundle(d / "student.yaml", "openvino", "fp32", tmp_path / "b")
    man = yaml.safe_load((out / "bundle.yaml").read_text())
    man["bundle_version"] = 99
    (out / "bundle.yaml").write_text(yaml.safe_dump(man))
    with pytest.raises(ManifestError, match="bundle version 99.*newer"):
        load_bundle(out)


def test_unavailable_backend_reported(tiny_zoo):
    from okdhp_edge.runtime import BackendUnavailable, make_runner

    d, _ = zoo_students(tiny_zoo)[0]
    r = make_runner("tensorrt", "fp16")
    with pytest.raises(BackendUnavailable):
        r.load(str(d / "export" / "model_fp16.engine"))
    r = make_runner("onnxruntime", "fp32", device="cuda")
    with pytest.raises(BackendUnavailable, match="provider"):
        r.load(str(d / "export" / "model.onnx"))


def test_onnx_metadata(tiny_zoo):
    from okdhp_edge.export.exporter import export_student
    from okdhp_edge.export.onnx_export import read_onnx_metadata

    d, man = zoo_students(tiny_zoo)[0]
    export_student(d / "student.yaml", formats=("onnx", "onnx_dynamic"))
    meta = read_onnx_metadata(d / "export" / "model.onnx")
    assert meta["okdhp_student"] == man["name"]
    assert meta["okdhp_weights_sha256"] == man["weights"]["sha256"]
    assert json.loads(meta["okdhp_input_size"]) == man["preprocessing"]["input_size"]
    import onnx

    dyn = onnx.load(str(d / "export" / "model_dynamic.onnx"))
    assert dyn.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    assert dyn.opset_import[0].version >= 17


def test_export_without_openvino_reports_it_unavailable(tiny_zoo, tmp_path, monkeypatch):
    """A GPU box or an embedded target may lack OpenVINO: the export goes on without it."""
    from okdhp_edge.export.exporter import export_student

    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino -> ImportError
    d, _ = zoo_students(tiny_zoo)[0]
    rec = export_student(d / "student.yaml", tmp_path / "export",
                         formats=("onnx", "openvino_fp32"), force=True)
    assert rec["formats"]["onnx"]["available"] and rec["formats"]["onnx"]["parity"]["passed"]
    ov = rec["formats"]["openvino_fp32"]
    assert ov["available"] is False and "openvino is not installed" in ov["reason"]
    assert not list((tmp_path / "export").glob("*.xml"))


BLOCK_TORCH = textwrap.dedent("""
    import sys, runpy
    class Block:
        def find_spec(self, name, path=None, target=None):
            if name == "torch" or name.startswith("torch."):
                raise ImportError("torch is blocked in this test")
    sys.meta_path.insert(0, Block())
    sys.argv = ["okdhp_edge.bench"] + sys.argv[1:]
    runpy.run_module("okdhp_edge.bench", run_name="__main__")
""")


def test_bundle_set_bench_without_torch(tiny_zoo, tmp_path):
    from okdhp_edge.bundles import export_all, read_set

    out = export_all(tiny_zoo, tmp_path / "set", ("onnxruntime", "openvino"), ("fp32",))
    read_set(out)
    proc = subprocess.run(
        [sys.executable, "-c", BLOCK_TORCH, "--bundles", str(out), "--threads", "1",
         "--min-iters", "4", "--min-time", "0.02", "--rounds", "1", "--out-root",
         str(tmp_path / "reports"), "--device-name", "target"],
        capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rep = load_report(tmp_path / "reports" / "target" / "tiny.json")
    ok = [r for r in rep["rows"] if r["status"] == "ok"]
    assert {r["backend"] for r in ok} == {"onnxruntime", "openvino"}
    assert all(r["accuracy"]["value"] is not None for r in ok)
    # tampering with the report data is refused before anything runs
    victim = next((out / "report_data" / "images").iterdir())
    victim.write_bytes(b"x")
    with pytest.raises(IntegrityError):
        read_set(out)


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


def test_full_disk_and_read_only_folders_are_one_line(tmp_path, monkeypatch):
    import errno
    import shutil

    from okdhp_edge.utils import io
    from okdhp_edge.utils.io import WriteError, atomic_write, atomic_write_set

    target = tmp_path / "f.bin"
    target.write_bytes(b"old")

    def full(tmp):
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(WriteError, match="f.bin: the disk is full"):
        atomic_write(target, full)
    # torch's zip writer says "unexpected pos": the free space tells it was the disk
    monkeypatch.setattr(io.shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(1, 1, 0))

    def torch_like(tmp):
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 64")

    with pytest.raises(WriteError, match="the disk is full"):
        atomic_write(target, torch_like)
    monkeypatch.undo()
    # a set is written whole or not at all
    with pytest.raises(WriteError):
        atomic_write_set({tmp_path / "a.txt": lambda t: t.write_text("new"), target: full})
    assert not (tmp_path / "a.txt").exists() and target.read_bytes() == b"old"
    assert not list(tmp_path.glob(".*.tmp"))
    # an output folder that cannot be made fails at once (before any measuring)
    proc = subprocess.run([sys.executable, "-m", "okdhp_edge.bench", "--zoo", "nowhere",
                           "--out-root", str(target / "reports")], capture_output=True,
                          text=True)
    assert proc.returncode == 1 and "not a folder" in proc.stderr
    assert "Traceback" not in proc.stderr
