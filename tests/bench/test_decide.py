"""Picks and frontiers that honour the uncertainty of both axes."""

import numpy as np
import pytest

from okdhp_edge.bench.decide import accuracy_drop, latency_tied, pick
from okdhp_edge.evaluation.coco_eval import coco_keypoint_eval_units
from okdhp_edge.evaluation.uncertainty import accuracy_fields
from okdhp_edge.records import BenchRow, RowAccuracy
from okdhp_edge.schema import from_dict
from tests.evaluation.test_uncertainty import SIGMAS, _gt, _predictions


@pytest.fixture(scope="module")
def units(synthetic_root):
    """Per-image results of three prediction sets on one split: a reference, a copy
    jittered by a hair (tied with it), and a visibly worse one."""
    coco = _gt(synthetic_root / "annotations" / "person_keypoints_train.json")
    ref = _predictions(coco, 1.5)
    rng = np.random.default_rng(1)
    hair = [dict(p, keypoints=[v + (rng.normal(0, 0.3) if i % 3 != 2 else 0) for i, v in
                               enumerate(p["keypoints"])]) for p in ref]
    out = {}
    for name, preds in (("ref", ref), ("hair", hair), ("worse", _predictions(coco, 2.0))):
        stats, u = coco_keypoint_eval_units(coco, preds, sigmas=SIGMAS)
        out[name] = (stats["AP"], u)
    return out


def _row(student, precision, ms, ci_ms, ap_units, delta=None, delta_ci=None):
    ap, u = ap_units
    row = from_dict(BenchRow, {
        "student": student, "backend": "openvino", "precision": precision,
        "latency_ms": {"engine": {"median": ms, "p90": ms, "p99": ms, "ci95_median": ci_ms}}},
        "row")
    row.accuracy = RowAccuracy(metric="AP", value=ap, delta_vs_torch_fp32=delta,
                               delta_ci95=delta_ci, **accuracy_fields(u, 300))
    return row


def test_pick_takes_the_faster_of_two_tied_rows(units):
    slow = _row("hg4", "fp32", 0.97, [0.95, 0.99], units["ref"])
    fast = _row("hg4", "bf16", 0.74, [0.73, 0.75], units["hair"])
    assert units["ref"][0] != units["hair"][0]  # the points differ ...
    d = pick([slow, fast], 1.5)
    assert d.choice is fast and d.tie.other is slow  # ... the data cannot tell them apart
    assert d.tie.delta.low <= 0 <= d.tie.delta.high
    # the frontier marks the slower point as a tie, with what it adds over the faster one
    gain = units["ref"][0] - units["hair"][0]
    assert f"accuracy tied with the point above: {gain:+.4f}" in d.frontier_ties[1]


def test_pick_keeps_the_more_accurate_of_two_that_differ(units):
    slow = _row("hg4", "fp32", 0.97, [0.95, 0.99], units["ref"])
    fast = _row("hg3", "fp32", 0.50, [0.49, 0.51], units["worse"])
    d = pick([slow, fast], 1.5)
    assert d.choice is slow and d.tie is None
    # a tolerance the user sets lets the faster one stand in
    gap = units["ref"][0] - units["worse"][0]
    assert pick([slow, fast], 1.5, ap_tolerance=gap + 0.05).choice is fast


def test_latency_ties_go_to_the_more_accurate(units):
    a = _row("hg4", "fp32", 0.80, [0.70, 0.90], units["ref"])
    b = _row("hg4", "bf16", 0.78, [0.70, 0.90], units["hair"])
    assert latency_tied(a, b)
    more = a if units["ref"][0] >= units["hair"][0] else b
    assert pick([a, b], 1.5).choice is more


def test_max_drop_judges_the_interval_not_the_point(units):
    row = _row("hg4", "int8", 0.5, [0.49, 0.51], units["ref"], delta=-0.002,
               delta_ci=[-0.012, 0.008])
    assert accuracy_drop(row) == pytest.approx(0.012)
    assert accuracy_drop(row, worst_case=False) == pytest.approx(0.002)
    assert pick([row], 1.0, max_drop=0.005).choice is None
    assert pick([row], 1.0, max_drop=0.02).choice is row


def test_rows_without_per_image_results_compare_points():
    rows = [from_dict(BenchRow, {
        "student": s, "backend": "onnxruntime", "precision": "fp32",
        "latency_ms": {"engine": {"median": ms, "p90": ms, "p99": ms}},
        "accuracy": {"value": ap}}, "row") for s, ms, ap in (("a", 1.0, 0.60), ("b", 2.0, 0.61))]
    assert pick(rows, 5.0).choice.student == "b"
    assert np.isclose(pick(rows, 5.0, ap_tolerance=0.02).tie.point, 0.01)


def test_a_memory_budget_leaves_out_what_does_not_fit_and_the_pick_names_its_memory(units):
    from okdhp_edge.bench.decide import pick_lines
    from okdhp_edge.records import BenchReport, RowCost

    big = _row("hg4", "fp32", 0.97, [0.95, 0.99], units["ref"])
    small = _row("hg3", "fp32", 0.50, [0.49, 0.51], units["worse"])
    unmeasured = _row("hg2", "fp32", 0.30, [0.29, 0.31], units["worse"])
    big.cost = RowCost(runtime_peak_mb=50.0, peak_mb=250.0, load_ms=9.0, first_inference_ms=2.0)
    small.cost = RowCost(runtime_peak_mb=50.0, peak_mb=90.0, load_ms=5.0, first_inference_ms=1.0)
    rows = [big, small, unmeasured]
    assert pick(rows, 1.5).choice is big
    d = pick(rows, 1.5, max_memory_mb=100)  # big adds 200 MB; hg2 was never measured
    assert d.choice is small and d.frontier == [small]
    rep = BenchReport(report_version=1, zoo="z", device_id="box", device={}, created="",
                      command="", metric="AP", flip_test=False, timing={}, students=[],
                      rows=rows, wall_s=0.0)
    assert "model 40 MB (process peak 90 MB)" in pick_lines(rep, d, 1.5)[0]
    assert pick(rows, 1.5, max_memory_mb=10).choice is None


@pytest.mark.parametrize("bounds, flag", [
    ({"max_latency_ms": -1}, "--max-latency-ms"), ({"max_latency_ms": float("nan")},
                                                   "--max-latency-ms"),
    ({"max_drop": 2}, "--max-ap-drop"), ({"ap_tolerance": 2}, "--ap-tolerance"),
    ({"min_accuracy": 1.5}, "--min-accuracy"), ({"max_memory_mb": 0}, "--max-memory-mb")])
def test_a_bound_outside_its_range_is_refused_in_the_api_and_on_the_command_line(
        units, bounds, flag):
    from okdhp_edge.errors import UsageError

    row = _row("hg4", "fp32", 0.97, [0.95, 0.99], units["ref"])
    kwargs = {"max_latency_ms": 1.5, **bounds}
    with pytest.raises(UsageError, match=flag):
        pick([row], **kwargs)


def test_pick_cli_refuses_an_ap_drop_in_points(tmp_path):
    """Refused where it enters, before any report is read."""
    from tests.conftest import okdhp

    proc = okdhp("zoo", "pick", "--report", str(tmp_path / "tiny.json"), "--max-latency-ms", "9",
                 "--max-ap-drop", "2")
    assert proc.returncode == 2 and "2 points of AP is 0.02" in proc.stderr
    assert proc.stderr.count("\n") == 1  # one line, no traceback
