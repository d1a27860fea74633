"""INT8: real ONNX Runtime and NNCF/OpenVINO quantization of a tiny student, the recipe
through export.yaml and bundles, tampered files refused, bad requests in one line."""

import dataclasses
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from okdhp_edge.backends.recipe import QuantRecipe
from okdhp_edge.convert.quantize import QuantizationError
from okdhp_edge.export.exporter import export_student
from okdhp_edge.manifest import ManifestError, zoo_students
from okdhp_edge.targets import FORMATS, TOLERANCE, formats_for, get_target, targets_for
from okdhp_edge.utils.io import IntegrityError
from tests.conftest import okdhp

RECIPE = QuantRecipe(num_images=16)


@pytest.fixture(scope="module")
def student(tiny_zoo):
    return zoo_students(tiny_zoo)[-1][0] / "student.yaml"


@pytest.fixture(scope="module")
def int8_export(student, tmp_path_factory):
    out = tmp_path_factory.mktemp("int8")
    return out, export_student(student, out, formats=("onnx_int8", "openvino_int8"),
                               recipe=RECIPE)


def test_targets_table_is_the_one_place():
    assert get_target("openvino", "int8").export == "openvino_int8"
    assert FORMATS["tensorrt_int8"].source == "onnx_int8_s8"  # explicit quantization: QDQ
    assert FORMATS["tensorrt_fp16"].source == "onnx_fp16"  # a strongly typed fp16 file
    assert [t.precision for t in targets_for(("openvino",))] == ["fp32", "bf16", "fp16"]
    assert formats_for(targets_for(("tensorrt",), ("int8",))) == [
        "onnx", "onnx_int8_s8", "tensorrt_int8"]
    with pytest.raises(ValueError, match="torch has no int8 target"):
        get_target("torch", "int8")


@pytest.mark.parametrize("fmt", ["onnx_int8", "openvino_int8"])
def test_real_int8_on_both_cpu_backends(int8_export, fmt):
    out, rec = int8_export
    e = rec.formats[fmt]
    assert e.available and e.precision == "int8"
    par = e.parity
    assert par.passed, par  # within the stated INT8 tolerance against PyTorch fp32
    assert par.tolerance.mean_kpt_disp_px == TOLERANCE["int8"][1]
    assert e.quantization.recipe == RECIPE.as_dict()
    cal = e.quantization.calibration
    assert cal.num_images == 16 and len(cal.list_sha256) == 64
    if fmt == "openvino_int8":  # plain PTQ: every weighted layer in int8
        assert e.quantization.higher_precision_layers == []
    else:  # NNCF's placement on the ONNX graph: a shortcut convolution may stay float
        assert len(e.quantization.higher_precision_layers) <= 2
    assert e.file_bytes > 0  # (at width 8 the Q/DQ scales outweigh the int8 weights)


def test_int8_is_reproducible_and_cached(student, int8_export, tmp_path):
    out, rec = int8_export
    again = export_student(student, out, formats=("onnx_int8",), recipe=RECIPE)
    assert again.formats["onnx_int8"].sha256 == rec.formats["onnx_int8"].sha256
    ort_file = out / "model_int8.onnx"
    mtime = ort_file.stat().st_mtime_ns
    ov_only = QuantRecipe.from_record(dict(num_images=16, overflow_fix="enable", max_drop=0.01))
    kept = export_student(student, out, formats=("onnx_int8",), recipe=ov_only)
    assert ort_file.stat().st_mtime_ns == mtime  # OpenVINO-only fields: ORT's file stays
    assert kept.formats["onnx_int8"].quantization.recipe == RECIPE.as_dict()  # what made it
    other = export_student(student, tmp_path, formats=("onnx_int8",), recipe=RECIPE)
    # the same command gives the same calibration list
    assert other.formats["onnx_int8"].quantization == rec.formats["onnx_int8"].quantization


def test_keep_head_leaves_the_heatmap_conv_in_float(student, tmp_path):
    recipe = QuantRecipe(num_images=8, keep_head=True)
    rec = export_student(student, tmp_path, formats=("onnx_int8", "openvino_int8"),
                         recipe=recipe)
    for fmt in ("onnx_int8", "openvino_int8"):  # (and NNCF's own float shortcut, if any)
        assert "score/Conv" in rec.formats[fmt].quantization.higher_precision_layers[-1], fmt


def _int8_weight_range(xml) -> list[int]:
    """The largest |int8 weight| of each weight constant of an IR."""
    import openvino as ov

    model = ov.Core().read_model(str(xml))
    return [int(np.abs(op.get_data().astype(np.int16)).max()) for op in model.get_ordered_ops()
            if op.get_type_name() == "Constant" and op.get_element_type() == ov.Type.i8]


def test_overflow_fix_halves_every_weight_range(student, int8_export, tmp_path):
    """NNCF's overflow fix (CPUs without VNNI): by default only the first convolution's
    weights use half the int8 range; ``enable`` puts every one in [-64, 64]; a changed fix
    rebuilds the cached file, an old record without the field reads as the default."""
    import shutil

    shutil.copytree(int8_export[0], tmp_path, dirs_exist_ok=True)  # the default's file
    xml = tmp_path / int8_export[1].formats["openvino_int8"].file
    before = _int8_weight_range(xml)
    fixed_recipe = QuantRecipe.from_record(dict(num_images=16, overflow_fix="enable"))
    fixed = export_student(student, tmp_path, formats=("openvino_int8",), recipe=fixed_recipe)
    after = _int8_weight_range(xml)
    assert len(before) == len(after) > 2
    assert max(after) <= 64 < max(before) and min(before) <= 64
    assert fixed.formats["openvino_int8"].quantization.recipe["overflow_fix"] == "enable"
    old = {k: v for k, v in RECIPE.as_dict().items() if k != "overflow_fix"}
    assert RECIPE.same_as(old) and not fixed_recipe.same_as(old)
    with pytest.raises(QuantizationError, match="overflow_fix must be one of"):
        QuantRecipe.from_record(dict(overflow_fix="all"))


def test_tampered_cache_is_rebuilt_not_trusted(student, tmp_path, caplog):
    rec = export_student(student, tmp_path, formats=("onnx_int8",), recipe=RECIPE)
    f = tmp_path / "model_int8.onnx"
    f.write_bytes(f.read_bytes()[:-10])
    again = export_student(student, tmp_path, formats=("onnx_int8",), recipe=RECIPE)
    assert "sha256 differs" in caplog.text
    assert again.formats["onnx_int8"].sha256 == rec.formats["onnx_int8"].sha256


def test_int8_bundle_round_trip_and_tamper(student, tmp_path):
    from okdhp_edge.export.bundles import export_bundle
    from okdhp_edge.runtime.bundle import load_bundle

    out = export_bundle(student, "openvino", "int8", tmp_path / "b", recipe=RECIPE)
    pipe = load_bundle(out)
    q = pipe.manifest.quantization
    assert q.recipe == RECIPE.as_dict() and q.calibration.num_images == 16
    img = np.random.default_rng(0).integers(0, 255, (120, 160, 3), dtype=np.uint8)
    assert pipe(img, (20, 10, 60, 90)).shape == (17, 3)
    # the recipe bundle.yaml records is compared with the one the file carries
    text = (out / "bundle.yaml").read_text()
    (out / "bundle.yaml").write_text(text.replace("num_images: 16", "num_images: 64", 1))
    with pytest.raises(ManifestError, match="quantization recipe .* differs from the model"):
        load_bundle(out)
    (out / "bundle.yaml").write_text(text)
    model = out / pipe.manifest.model
    model.with_suffix(".bin").write_bytes(b"\0" + model.with_suffix(".bin").read_bytes()[1:])
    with pytest.raises(IntegrityError, match="sha256 mismatch"):
        load_bundle(out)


def test_too_few_calibration_images_is_one_line(tiny_zoo, tmp_path):
    proc = okdhp("zoo", "export", "--zoo", tiny_zoo, "--student", "hg2", "--backend",
                 "onnxruntime", "--precision", "int8", "--calib-images", "100000", "--out",
                 tmp_path / "b")
    assert proc.returncode == 1, proc.stderr
    assert "calibration asks for 100000 images" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "b" / "bundle.yaml").exists()


def test_recipe_is_checked():
    with pytest.raises(QuantizationError, match="calibration method 'kl'"):
        QuantRecipe(method="kl")
    base, ov = QuantRecipe(), QuantRecipe.from_record(dict(overflow_fix="enable"))
    assert ov.same_as(base.as_dict(), "onnxruntime") and ov.same_as(base.as_dict(), "tensorrt")
    assert not ov.same_as(base.as_dict(), "openvino") and not ov.same_as(base.as_dict())
    s8 = QuantRecipe.from_record(dict(ort_quantizer="ort", ort_activations="s8"))
    assert s8.same_as(base.as_dict(), "tensorrt") and not s8.same_as(base.as_dict(), "onnxruntime")
    assert not QuantRecipe(seed=1).same_as(base.as_dict(), "tensorrt")  # shared fields count


def test_schema_1_student_cannot_calibrate(student, tmp_path):
    from okdhp_edge.convert.quantize import calibration_set
    from okdhp_edge.data.errors import DataError
    from okdhp_edge.manifest import load_student_manifest

    man = load_student_manifest(student)
    man = man.replace(provenance=dataclasses.replace(man.provenance, splits={}))
    with pytest.raises(DataError, match="records no training split"):
        calibration_set(man, RECIPE)


def test_accuracy_control_on_the_selection_split(student, tmp_path):
    """NNCF's accuracy-controlled mode runs end to end, measured on the selection split,
    and records which layers it kept in float."""
    recipe = QuantRecipe.from_record(dict(num_images=8, max_drop=0.0))
    e = export_student(student, tmp_path, formats=("openvino_int8",),
                       recipe=recipe).formats["openvino_int8"]
    assert e.available and e.quantization.recipe["max_drop"] == 0.0
    assert isinstance(e.quantization.higher_precision_layers, list)
    written = yaml.safe_load((tmp_path / "export.yaml").read_text())["formats"]["openvino_int8"]
    assert written["quantization"]["recipe"] == recipe.as_dict()


def test_bench_int8_rows_chart_and_pick(report):
    """--precisions fp32,int8: quantized rows with their recipe and size; a backend that has
    no int8 says so and the bench goes on; the pick chooses among precisions (the shared
    report of conftest.py: ``bench --precisions fp32,int8 --calib-images 16``)."""
    import json

    from okdhp_edge.bench.report import load_report

    rep = load_report(report / "tiny.json")
    rows = {(r.student, r.backend, r.precision): r for r in rep.rows}
    for b in ("onnxruntime", "openvino"):
        r = rows[("hg3", b, "int8")]
        assert r.status == "ok" and r.quantization.recipe["num_images"] == 16
        assert r.file_bytes > 0 and r.accuracy.delta_vs_torch_fp32 is not None
        assert "--calib-images 16" in r.command
    assert rows[("hg3", "torch", "int8")].reason == (
        "torch has no int8 target (it has: fp32, bf16, fp16)")
    assert rows[("hg3", "tensorrt", "int8")].status == "unavailable"
    assert rep.quantization["num_images"] == 16
    assert "INT8 files" in (report / "tiny.md").read_text()
    base = ["zoo", "pick", "--report", report / "tiny.json", "--max-latency-ms", "1000",
            "--json"]
    only = okdhp(*base, "--precision", "int8")
    assert only.returncode == 0 and json.loads(only.stdout)["choice"]["precision"] == "int8"
    assert okdhp(*base, "--max-ap-drop", "0.5").returncode == 0


def test_pick_bounds_the_loss_against_fp32():
    from okdhp_edge.bench.decide import pick
    from okdhp_edge.records import BenchRow
    from okdhp_edge.schema import from_dict

    def row(precision, lat, acc, delta):
        return from_dict(BenchRow, {
            "student": "s", "backend": "openvino", "precision": precision, "status": "ok",
            "latency_ms": {"engine": {"median": lat, "p90": lat, "p99": lat}},
            "accuracy": {"value": acc, "delta_vs_torch_fp32": delta}}, "row")

    rows = [row("fp32", 3.0, 0.70, 0.0), row("int8", 1.0, 0.68, -0.02),
            row("bf16", 2.0, 0.699, -0.001)]
    assert pick(rows, 5.0).choice.precision == "fp32"
    assert pick(rows, 2.5).choice.precision == "bf16"
    assert pick(rows, 1.5).choice.precision == "int8"
    assert pick(rows, 1.5, max_drop=0.005).choice is None  # int8 loses 0.02: out of bounds
    assert pick(rows, 5.0, precision="int8").choice.precision == "int8"
    assert pick(rows, 5.0, ap_tolerance=0.005).choice.precision == "bf16"  # 0.001 tolerated


def test_fp16_onnx_for_strongly_typed_tensorrt(int8_export, tmp_path):
    """TensorRT 11 takes precision from the file: the fp16 ONNX keeps fp32 I/O."""
    import onnx

    from okdhp_edge.convert.onnx_export import convert_fp16

    out, _ = int8_export
    half = onnx.load(str(convert_fp16(out / "model.onnx", tmp_path / "model_fp16.onnx")))
    f32, f16 = onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16
    assert half.graph.input[0].type.tensor_type.elem_type == f32
    assert half.graph.output[0].type.tensor_type.elem_type == f32
    assert {i.data_type for i in half.graph.initializer if i.dims} == {f16}


@pytest.mark.slow  # ~27 s: overflow fix, accuracy control and resume each have a faster test
def test_calibration_sensitivity_report_resumes(tiny_zoo, tmp_path):
    """OpenVINO's cells: NNCF's default, with the overflow fix and with accuracy control
    (methods and image counts: the next test, on ONNX Runtime); a rerun measures nothing
    twice."""
    import json

    cmd = [sys.executable, "-m", "okdhp_edge.bench", "calibration", "--zoo", str(tiny_zoo),
           "--students", "hg2", "--backends", "openvino", "--calib-images", "8",
           "--calib-methods", "default", "--device-name", "box", "--int8-max-drops", "0",
           "--also-overflow-fix", "--out-root", str(tmp_path / "r"),
           "--work-dir", str(tmp_path / "w")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rep = json.loads((tmp_path / "r" / "box" / "tiny_calibration.json").read_text())
    assert set(rep["cells"]) == {f"hg2/openvino/{m}/8" for m in ("default", "ac0",
                                                                  "default+ofx")}
    ac = rep["cells"]["hg2/openvino/ac0/8"]
    assert ac["select_value"] is not None and isinstance(ac["higher_precision_layers"], list)
    assert rep["fp32"]["hg2/openvino"]["value"] is not None
    md = (tmp_path / "r" / "box" / "tiny_calibration.md").read_text()
    assert "| hg2 |" in md and "default @ 8" in md and "accuracy control" in md
    assert "default+ofx @ 8" in md and "--int8-max-drops 0 --also-overflow-fix" in md
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and "hg2/openvino/default/8:" not in again.stderr
    bad = subprocess.run(cmd[:6] + ["--backends", "torch"], capture_output=True, text=True)
    assert bad.returncode == 2 and "torch has no int8 target" in bad.stderr


# slow: the calibration experiment's resume, report and rebuilding command stay covered by
# test_calibration_sensitivity_report_resumes (OpenVINO: a rerun measures nothing twice)
@pytest.mark.slow
def test_calibration_experiment_resumes_and_says_how_to_rebuild(tiny_zoo, tmp_path):
    """``bench calibration``: every cell measured once (a rerun skips finished cells), the
    report split's accuracy beside fp32, and a Markdown whose one command rebuilds it."""
    import json

    # a process of its own: ONNX Runtime's percentile calibration crashed (SIGSEGV) in a
    # pytest process that had run other benches and INT8 builds before it
    cmd = [sys.executable, "-m", "okdhp_edge.bench", "calibration", "--zoo", str(tiny_zoo),
           "--students", "hg2", "--backends", "onnxruntime", "--calib-images", "4,8",
           "--calib-methods", "default,percentile", "--also-keep-head", "--device-name", "box",
           "--out-root", str(tmp_path / "reports"), "--work-dir", str(tmp_path / "work")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = tmp_path / "reports" / "box" / f"{tiny_zoo.name}_calibration.json"
    rep = json.loads(out.read_text())
    assert sorted(rep["cells"]) == ["hg2/onnxruntime/default+head/8",
                                    "hg2/onnxruntime/default/4", "hg2/onnxruntime/default/8",
                                    "hg2/onnxruntime/percentile/8"]
    assert rep["cells"]["hg2/onnxruntime/default+head/8"]["higher_precision_layers"]
    for key, cell in rep["cells"].items():
        assert cell["value"] is not None
        assert cell["calibration"]["num_images"] == int(key.split("/")[3])
    assert rep["fp32"]["hg2/onnxruntime"]["value"] is not None
    assert rep["cells"]["hg2/onnxruntime/percentile/8"]["calibration_method"] == "percentile"
    md = out.with_suffix(".md").read_text()
    assert ("--backends onnxruntime --calib-images 4,8 --calib-methods default,percentile "
            "--also-keep-head --students hg2" in md) and "default+head @ 8" in md
    # every cell: its interval, and the paired interval of its change from fp32; recipes
    # against the default one are paired in the Markdown
    for cell in rep["cells"].values():
        lo, hi = cell["delta_ci95"]
        ref = rep["fp32"]["hg2/onnxruntime"]["value"]
        assert lo - 1e-9 <= cell["value"] - ref <= hi + 1e-9 and cell["units"]
    assert "hg2, percentile @ 8 minus default @ 8: " in md
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0
    assert json.loads(out.read_text())["cells"] == rep["cells"]  # nothing measured twice


def test_onnx_runtime_int8_recipes(student, int8_export, tmp_path):
    """The ONNX Runtime file is NNCF's by default (activations per tensor, written as u8,
    every convolution with a quantized output fused by ONNX Runtime), runs within the INT8
    tolerance and records its recipe (in the export and the file); ONNX Runtime's own
    recipe and NNCF's per-channel activations are one option away, each another file."""
    import onnx
    from onnx import numpy_helper

    from okdhp_edge.backends.onnxruntime import file_metadata

    out, rec = int8_export
    e = rec.formats["onnx_int8"]
    assert e.available and e.parity.passed, e.parity
    q = e.quantization
    assert q.recipe["ort_quantizer"] == "nncf" and q.calibration_method == "nncf-default"
    assert q.recipe["ort_nncf_activations"] == "per_tensor" and "nncf" in q.activations
    assert '"ort_quantizer": "nncf"' in file_metadata(out / e.file)["okdhp_quant_recipe"]
    graph = onnx.load(str(out / e.file)).graph
    consts = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    acts = [n for n in graph.node if n.op_type == "DequantizeLinear"
            and n.input[0] not in consts]
    assert acts and all(consts[n.input[1]].size == 1 for n in acts)  # per tensor
    # NNCF's s8 activations are written as u8, and ONNX Runtime fuses every convolution that
    # has a quantized output (with s8 it left a MobileNetV2's residual-block convs float)
    assert all(consts[n.input[2]].dtype == np.uint8 for n in acts)
    assert _ort_float_convs(out / e.file) <= _convs_without_quantized_output(graph)
    own = QuantRecipe.from_record(dict(num_images=16, ort_quantizer="ort"))
    got = export_student(student, tmp_path / "ort", formats=("onnx_int8",), recipe=own)
    assert got.formats["onnx_int8"].available and got.formats["onnx_int8"].parity.passed
    assert got.formats["onnx_int8"].sha256 != e.sha256  # another file than NNCF's
    with pytest.raises(QuantizationError, match="only onnxruntime's INT8 reads it"):
        own.check_honoured({"openvino"})
    per_channel = QuantRecipe.from_record(dict(num_images=16, ort_nncf_activations="per_channel"))
    got = export_student(student, tmp_path / "pc", formats=("onnx_int8",), recipe=per_channel)
    assert got.formats["onnx_int8"].quantization.recipe["ort_nncf_activations"] == "per_channel"
    with pytest.raises(QuantizationError, match="add --ort-quantizer nncf"):
        QuantRecipe.from_record(dict(ort_quantizer="ort", ort_nncf_activations="per_channel"))
    with pytest.raises(QuantizationError, match="NNCF chooses the activation types"):
        QuantRecipe.from_record(dict(ort_activations="s8"))


def test_a_full_disk_while_quantizing_is_one_line_and_leaves_nothing(int8_export, tmp_path,
                                                                     monkeypatch):
    """ONNX Runtime's quantizer reads back the shape-inferred copy it could not finish: a
    protobuf DecodeError, which a nearly full disk turns into the one-line WriteError; its
    copy beside the source and our temporary are gone."""
    import shutil

    import onnxruntime.quantization as q
    from google.protobuf.message import DecodeError

    from okdhp_edge.backends.onnxruntime import quantize_onnx
    from okdhp_edge.errors import WriteError

    out, _ = int8_export
    src = tmp_path / "model.onnx"
    shutil.copyfile(out / "model.onnx", src)

    def torn(model_input, *args, **kwargs):
        src.with_name("model-inferred.onnx").write_bytes(b"\x08")
        raise DecodeError("Error parsing message")

    monkeypatch.setattr(q, "quantize_static", torn)
    full = shutil._ntuple_diskusage(1 << 30, 1 << 30, 0)  # total, used, free
    monkeypatch.setattr(shutil, "disk_usage", lambda p: full)
    images = np.zeros((2, 3, 32, 32), np.float32)
    with pytest.raises(WriteError, match="model_int8.onnx: the disk is full"):
        quantize_onnx(src, tmp_path / "model_int8.onnx", images, RECIPE)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]


@pytest.mark.parametrize("recipe", [
    QuantRecipe(), QuantRecipe(method="minmax", num_images=8, seed=3, keep_head=True),
    QuantRecipe.from_record(dict(max_drop=0.005, overflow_fix="enable", ort_activations="s8",
                ort_quantizer="ort")),
    QuantRecipe.from_record(dict(ort_quantizer="nncf", ort_nncf_activations="per_channel"))])
def test_recipe_options_round_trip(recipe):
    """A recipe's reproducing options parse back to that recipe (the recipe's fields are
    the request's keys: one definition for bench, zoo export and the API)."""
    import dataclasses

    from okdhp_edge.bench.command import BenchRequest
    from okdhp_edge.zoo import ExportRequest

    for request, base in ((BenchRequest, ["--zoo", "z"]),
                          (ExportRequest, ["--zoo", "z", "--out", "o", "--all"])):
        req = dataclasses.replace(request.parse(base), recipe=recipe)
        assert request.parse(req.argv()).recipe == recipe
        assert request.parse(base).recipe == QuantRecipe()


def _ort_float_convs(path: Path) -> set[str]:
    """The convolutions ONNX Runtime runs in float in ``path`` (its optimised graph)."""
    import onnx
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.optimized_model_filepath = str(path.with_suffix(".optimised.onnx"))
    ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    graph = onnx.load(opts.optimized_model_filepath).graph
    return {n.name for n in graph.node if n.op_type in ("Conv", "FusedConv")}


def _convs_without_quantized_output(graph) -> set[str]:
    """Convolutions of a QDQ graph whose output no QuantizeLinear reads (they stay float)."""
    quantized = {n.input[0] for n in graph.node if n.op_type == "QuantizeLinear"}
    return {n.name for n in graph.node if n.op_type == "Conv" and n.output[0] not in quantized}


def test_a_sweeps_report_is_filed_under_the_device_its_cells_ran_on(tmp_path, caplog):
    """Cells measured as jobs on a cluster's node file the report under that node's device
    id, not the submitting machine's; cells of several devices keep it where it is."""
    from okdhp_edge.bench.calibration import filed_where_measured
    from okdhp_edge.records import CalibrationReport

    def report(*devices):
        return CalibrationReport(calibration_version=1, zoo="z", fp32={"s/openvino": {
            "value": 0.5, "device": devices[0]}}, cells={
            f"s/openvino/default/{i}": {"value": 0.4, "device": d}
            for i, d in enumerate(devices)})

    out = tmp_path / "login-node" / "z_calibration.json"
    out.parent.mkdir()
    out.write_text("{}")
    assert filed_where_measured(report("login-node"), out) == out  # measured here
    assert filed_where_measured(report("gpu-1", "gpu-2"), out) == out
    assert "measured on 2 devices (gpu-1, gpu-2)" in caplog.text
    moved = filed_where_measured(report("gpu-1", "gpu-1"), out)
    assert moved == tmp_path / "gpu-1" / out.name and moved.is_file() and not out.exists()
    out.write_text("{}")  # gpu-1 has a report of this zoo now: this one stays
    assert filed_where_measured(report("gpu-1"), out) == out
