"""Planning a zoo before training it (``bench --plan``) and merging reports of several
families into one pick."""

from __future__ import annotations

import copy
import json
import subprocess
import sys

import pytest

from okdhp_edge.bench.report import ReportError, load_report
from okdhp_edge.manifest import zoo_students
from tests.conftest import BLOCK_TORCH, LIGHT, okdhp, okdhp_process

FAST = ["--threads", "1", "--min-iters", "4", "--min-time", "0.02", "--warmup-time", "0.02",
        "--rounds", "1", "--batch", "1"]


def _bench(*args):
    return okdhp_process("bench", *args)


@pytest.fixture(scope="module")
def plan(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("plan")
    # the plan's zoo holds both students; the smaller one is benched (what the tests read),
    # on PyTorch and ONNX Runtime: OpenVINO's rows, INT8 included, are the shared report's
    # (tests/convert/test_quantize.py::test_bench_int8_rows_chart_and_pick)
    proc = _bench("--plan", "configs/quickstart.yaml", *LIGHT, "--plan-root", str(tmp / "zoo"),
                  "--students", "r18x0.125-d8",
                  "--backends", "torch,onnxruntime", "--precisions", "fp32,int8",
                  "--calib-images", "16", "--out-root", str(tmp / "reports"), "--device-name",
                  "box", *FAST)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return tmp


def test_plan_zoo_holds_the_configs_untrained_students(plan):
    from okdhp_edge.config import load_config
    from okdhp_edge.plan import plan_students

    students = zoo_students(plan / "zoo" / "plan_quickstart")
    assert (plan / "zoo" / "plan_quickstart" / "quickstart.yaml").is_file()
    assert [m.name for _, m in students] == ["r18x0.125-d8", "r18x0.125-d16"]
    assert all(m.untrained and m.accuracy.value is None for _, m in students)
    # the names the trainer would give, from the same config
    cfg = load_config("configs/quickstart.yaml", LIGHT)
    assert list(plan_students(cfg)) == ["r18x0.125-d8", "r18x0.125-d16"]


def test_plan_report_has_latency_and_no_accuracy(plan):
    rep = load_report(plan / "reports" / "box" / "plan_quickstart.json")
    assert rep.untrained is True
    ok = [r for r in rep.rows if r.status == "ok"]
    assert {(r.backend, r.precision) for r in ok} == {
        ("torch", "fp32"), ("onnxruntime", "fp32"), ("onnxruntime", "int8")}
    assert all(r.latency_ms["engine"].median > 0 for r in ok)
    assert all(r.accuracy.value is None for r in ok)
    md = (plan / "reports" / "box" / "plan_quickstart.md").read_text()
    assert "untrained plan" in md
    assert (plan / "reports" / "box" / "plan_quickstart_pareto.png").stat().st_size > 1000


def test_plan_report_is_never_picked_nor_merged(plan):
    path = plan / "reports" / "box" / "plan_quickstart.json"
    proc = okdhp("zoo", "pick", "--report", path, "--max-latency-ms", "1000")
    assert proc.returncode == 2 and "untrained" in proc.stderr
    from okdhp_edge.bench.merge import merge_reports

    with pytest.raises(ReportError, match="untrained"):
        merge_reports([path, path], "x")


def test_plan_runs_torch_free_from_bundles(plan, tmp_path):
    from okdhp_edge.export.bundles import export_all

    out = export_all(plan / "zoo" / "plan_quickstart", tmp_path / "set", ("onnxruntime",),
                     ("fp32",))
    proc = subprocess.run(
        [sys.executable, "-c", BLOCK_TORCH, "--bundles", str(out), *FAST, "--out-root",
         str(tmp_path / "reports"), "--device-name", "target"],
        capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rep = load_report(tmp_path / "reports" / "target" / "plan_quickstart.json")
    assert rep.untrained is True
    ok = {(r.student, r.backend) for r in rep.rows if r.status == "ok"}
    assert ok == {("r18x0.125-d8", "onnxruntime"), ("r18x0.125-d16", "onnxruntime")}


def test_overrides_without_plan_are_refused():
    proc = _bench("--zoo", "student_zoo/none", "model.width=8")
    assert proc.returncode == 2 and "--plan" in proc.stderr


def _fake_report(zoo, device, students, acc, lat):
    rows = [{"student": s, "backend": "onnxruntime", "precision": "fp32", "status": "ok",
             "available": True, "params": 1, "macs": 1, "command": f"bench {zoo} {s}",
             "accuracy": {"value": a, "delta_vs_torch_fp32": 0.0},
             "latency_ms": {"engine": {"median": t, "p90": t, "p99": t}}}
            for s, a, t in zip(students, acc, lat)]
    return {"report_version": 0, "zoo": zoo, "device_id": device, "device": {},
            "metric": "AP", "flip_test": False, "timing": {}, "created": "now",
            "command": f"bench {zoo}",
            "students": [{"name": s, "params": 1, "macs": 1, "accuracy_torch_manifest": None}
                         for s in students], "rows": rows, "wall_s": 1.0}


def test_merge_joins_families_for_one_pick(tmp_path):
    from okdhp_edge.bench.decide import pick
    from okdhp_edge.bench.merge import merge_reports
    from okdhp_edge.records import BenchReport

    hg = _fake_report("hg_zoo", "box", ["hg2", "hg4"], [0.70, 0.78], [20.0, 40.0])
    light = _fake_report("light_zoo", "box", ["mbv2-d64", "hg2"], [0.66, 0.60], [4.0, 3.0])
    paths = []
    for rep in (hg, light):
        rep["report_version"] = BenchReport.VERSION
        paths.append(tmp_path / f"{rep['zoo']}.json")
        paths[-1].write_text(json.dumps(rep))
    merged = merge_reports(paths, "all")
    names = {r.student for r in merged.rows}
    assert names == {"hg_zoo/hg2", "hg4", "mbv2-d64", "light_zoo/hg2"}  # clash renamed
    assert [m["zoo"] for m in merged.merged_from] == ["hg_zoo", "light_zoo"]
    best = pick(merged.rows, 10.0).choice
    assert best.student == "mbv2-d64" and best.zoo == "light_zoo"
    assert pick(merged.rows, 25.0).choice.student == "hg_zoo/hg2"
    other = copy.deepcopy(light)
    other["device_id"] = "elsewhere"
    paths[1].write_text(json.dumps(other))
    with pytest.raises(ReportError, match="device_id"):
        merge_reports(paths, "all")


def test_several_configs_plan_as_one_zoo(tmp_path):
    from okdhp_edge.plan import write_plan_zoo

    hg = tmp_path / "hg.yaml"
    hg.write_text("model: {name: hg, num_stacks: 2, width: 8, stem_width: 8, depth: 1}\n"
                  "data: {input_size: [64, 64]}\n")
    light = tmp_path / "light.yaml"
    light.write_text("model: {name: light, encoder: shufflenetv2, width_mult: 0.5, "
                     "decoder_width: 8}\ndata: {input_size: [64, 64]}\n")
    zoo = write_plan_zoo([hg, light], [], tmp_path / "zoo")
    assert zoo.name == "plan_hg+light"
    names = {m.name: m for _, m in zoo_students(zoo)}
    assert set(names) == {"hg2", "sv2x0.5-d8"}
    assert names["sv2x0.5-d8"].architecture.family == "encoder_decoder"
    other = tmp_path / "other.yaml"
    other.write_text("data: {input_size: [96, 128]}\n")
    with pytest.raises(ValueError, match="input_size"):
        write_plan_zoo([hg, other], [], tmp_path / "zoo")
