"""Export of a student: ONNX metadata, formats that are unavailable."""

import json
import sys

from okdhp_edge.manifest import zoo_students


def test_onnx_metadata(tiny_zoo):
    from okdhp_edge.convert.onnx_export import read_onnx_metadata
    from okdhp_edge.export.exporter import export_student

    d, man = zoo_students(tiny_zoo)[0]
    export_student(d / "student.yaml", formats=("onnx", "onnx_dynamic"))
    meta = read_onnx_metadata(d / "export" / "model.onnx")
    assert meta["okdhp_student"] == man.name
    assert meta["okdhp_weights_sha256"] == man.weights.sha256
    assert json.loads(meta["okdhp_input_size"]) == man.preprocessing.input_size
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
    assert rec.formats["onnx"].available and rec.formats["onnx"].parity.passed
    ov = rec.formats["openvino_fp32"]
    assert ov.available is False and "openvino is not installed" in ov.reason
    assert not list((tmp_path / "export").glob("*.xml"))


def test_a_runtime_missing_here_gets_no_sources_built(tiny_zoo, tmp_path, monkeypatch):
    """TensorRT absent (a CPU box): its INT8 and fp16 files are recorded unavailable, and
    the QDQ ONNX and fp16 ONNX they would be built from are not made for them (a second
    calibration per student, in every bench that lists tensorrt, which the default does)."""
    from okdhp_edge.bench.candidates import _formats
    from okdhp_edge.export.exporter import export_student
    from okdhp_edge.targets import get_target

    monkeypatch.setitem(sys.modules, "tensorrt", None)  # import tensorrt -> ImportError
    d, _ = zoo_students(tiny_zoo)[0]
    rec = export_student(d / "student.yaml", tmp_path / "export",
                         formats=("tensorrt_int8", "tensorrt_fp16"), force=True)
    assert set(rec.formats) == {"tensorrt_int8", "tensorrt_fp16"}
    assert all(not e.available and "tensorrt is not installed" in e.reason
               for e in rec.formats.values())
    assert not list((tmp_path / "export").glob("*.onnx"))
    targets = [get_target(b, p) for b, p in (("onnxruntime", "fp32"), ("tensorrt", "int8"),
                                             ("tensorrt", "fp16"))]
    assert _formats(targets, throughput=False) == ("onnx", "tensorrt_int8", "tensorrt_fp16")


def test_export_record_read_through_its_schema(tiny_zoo, tmp_path):
    """export.yaml has one reader: a record it does not understand (wrong type, an entry
    that is not a format's record, another schema) is refused by name, and the export
    rebuilds instead of trusting it."""
    import pytest
    import yaml

    from okdhp_edge.export.exporter import export_student, read_export_record
    from okdhp_edge.manifest import ManifestError

    d, _ = zoo_students(tiny_zoo)[0]
    out = tmp_path / "export"
    export_student(d / "student.yaml", out, formats=("onnx",), force=True)
    rec = read_export_record(out / "export.yaml")
    assert rec.formats["onnx"].available is True
    data = rec.to_dict()
    for bad, match in (({**data, "schema": 4}, "schema 4 is newer"),
                       ({**data, "formats": {"onnx": "yes"}}, "formats.onnx"),
                       ({**data, "formats": {"onnx_x": data["formats"]["onnx"]}},
                        "formats.onnx_x is not a known format"),
                       ({**data, "student": 5}, "student: expected str")):
        (out / "export.yaml").write_text(yaml.safe_dump(bad))
        with pytest.raises(ManifestError, match=match):
            read_export_record(out / "export.yaml")
    again = export_student(d / "student.yaml", out, formats=("onnx",))
    assert again.formats["onnx"].available and again.student == rec.student


def test_a_builder_that_fails_unexpectedly_is_its_rows_reason(tiny_zoo, tmp_path, monkeypatch):
    """A builder error that is no user error (a converter writing a file its runtime then
    refuses) makes that format unavailable with the reason in one line and removes what it
    wrote; the other formats are built."""
    import okdhp_edge.export.exporter as exporter
    from okdhp_edge.targets import FORMATS

    d, _ = zoo_students(tiny_zoo)[0]

    def broken(ctx, spec):
        ctx.path(spec.name).write_bytes(b"half a model")
        raise ValueError("num_scales must be 1\nsecond line")

    real = exporter.format_builder
    monkeypatch.setattr(exporter, "format_builder",
                        lambda fmt: broken if fmt == "onnx_dynamic" else real(fmt))
    rec = exporter.export_student(d / "student.yaml", tmp_path / "x",
                                  formats=("onnx", "onnx_dynamic"))
    bad = rec.formats["onnx_dynamic"]
    assert not bad.available
    assert bad.reason == "building onnx_dynamic failed: ValueError: num_scales must be 1"
    assert not (tmp_path / "x" / FORMATS["onnx_dynamic"].model_file).exists()
    assert rec.formats["onnx"].available


def test_parity_fails_an_output_that_collapsed():
    """A file that runs to zeros is within the INT8 error tolerance of an untrained student's
    small heatmaps; the spread of its heatmaps gives it away."""
    import numpy as np

    from okdhp_edge.export.exporter import PARITY_STD_RATIO, parity
    from okdhp_edge.targets import TOLERANCE

    ref = np.random.default_rng(0).normal(0, 0.02, (2, 17, 16, 12)).astype(np.float32)
    zero = parity(ref, np.zeros_like(ref), 4)
    assert zero["max_abs_heatmap_err"] < TOLERANCE["int8"][0] and zero["std_ratio"] == 0.0
    assert not PARITY_STD_RATIO[0] <= zero["std_ratio"]
    assert parity(ref, ref, 4)["std_ratio"] == 1.0


def test_int8_keypoint_displacement_is_judged_on_real_crops():
    """Noise has no real peaks for int8 rounding to keep in place: an INT8 file's keypoints
    are judged on real crops where there are some, every other file's on every input."""
    from okdhp_edge.export.exporter import _displacement_judged_on

    both = {"random": {}, "real": {}}
    assert _displacement_judged_on("int8", both) == {"real"}
    assert _displacement_judged_on("int8", {"random": {}}) == {"random"}
    assert _displacement_judged_on("fp16", both) == {"random", "real"}
