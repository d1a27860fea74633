"""The on-disk records: every published one loads through the one strict loader and is
written back byte for byte; bad fields are refused by name."""

from pathlib import Path

import pytest
import yaml

from okdhp_edge.records import (
    BundleSet,
    ManifestError,
    Preprocessing,
    StudentManifest,
    ZooManifest,
    read_record,
)
from okdhp_edge.schema import from_dict, to_dict
from tests.conftest import ROOT


def _tracked(pattern: str) -> list[Path]:
    """Files of the repository (committed) matching ``pattern``: a user's own zoos and
    reports beside them are not the published ones."""
    import subprocess

    if not (ROOT / ".git").exists():
        return []
    out = subprocess.run(["git", "ls-files", pattern], cwd=ROOT, capture_output=True,
                         text=True).stdout.split()
    return [ROOT / p for p in out]


PUBLISHED_ZOOS = sorted(p.parent for p in _tracked("student_zoo/*/zoo.yaml"))


@pytest.mark.parametrize("zoo", PUBLISHED_ZOOS, ids=lambda p: p.name)
def test_published_manifests_round_trip(zoo):
    """A published zoo's manifests load and dump to the very bytes on disk."""
    zm = read_record(ZooManifest, zoo / "zoo.yaml")
    assert yaml.safe_dump(zm.to_dict(), sort_keys=False) == (zoo / "zoo.yaml").read_text()
    for name in zm.students:
        path = zoo / name / "student.yaml"
        man = read_record(StudentManifest, path)
        assert yaml.safe_dump(man.to_dict(), sort_keys=False) == path.read_text()
        assert man.preprocessing.hw == (man.preprocessing.input_size[1],
                                        man.preprocessing.input_size[0])


def _student() -> dict:
    return yaml.safe_load((PUBLISHED_ZOOS[0] / "hg2" / "student.yaml").read_text()) \
        if PUBLISHED_ZOOS else pytest.skip("no published zoo in this checkout")


@pytest.mark.parametrize("edit,needle", [
    (lambda m: m["preprocessing"].update(sigmaa=2.0),
     "unknown field 'preprocessing.sigmaa'; did you mean 'preprocessing.sigma'"),
    (lambda m: m["preprocessing"]["flip_pairs"].__setitem__(0, ["a", 1]),
     r"preprocessing.flip_pairs\[0\]\[0\]: expected int"),
    (lambda m: m["preprocessing"].update(std=[1.0, 0.0, 1.0]), "std must be 3 finite"),
    (lambda m: m["preprocessing"].update(heatmap_stride=5), "must divide the input"),
    (lambda m: m["accuracy"].update(value=float("nan")), "accuracy.value: expected"),
    (lambda m: m.update(params=True), "params: expected int"),
])
def test_bad_fields_are_named(edit, needle):
    data = _student()
    edit(data)
    with pytest.raises(ManifestError, match=needle):
        StudentManifest.from_data(data, "student.yaml")


def test_records_are_frozen():
    man = StudentManifest.from_data(_student(), "student.yaml")
    with pytest.raises(AttributeError):
        man.name = "other"  # type: ignore[misc]
    assert man.replace(name="other").name == "other" and man.name == "hg2"


def test_nested_list_records_name_their_index():
    idx = {"set_version": 1, "bundle_version": 1, "okdhp_edge": "0", "zoo": "z", "metric": "AP",
           "bundles": [{"student": "hg2"}], "skipped": [], "report_files": {},
           "report_data": {"dataset": "coco", "ann": "", "images": "", "headboxes": ""}}
    with pytest.raises(ManifestError, match=r"missing field 'bundles\[0\]\.backend'"):
        BundleSet.from_data(idx, "bundles.yaml")
    with pytest.raises(ManifestError, match="set version 2 is newer"):
        BundleSet.from_data({**idx, "set_version": 2}, "bundles.yaml")


def test_preprocessing_keeps_written_number_types():
    """Records do not widen ints to floats: what is read is what is written."""
    pre = from_dict(Preprocessing, {"input_size": [64, 96], "mean": [0, 0.5, 1], "std": [1, 1, 1],
                                    "box_padding": 1.25, "heatmap_stride": 4, "sigma": 2,
                                    "flip_pairs": [[1, 2]]}, "p", ManifestError)
    assert pre.mean == [0, 0.5, 1] and isinstance(pre.sigma, int)
    assert to_dict(pre)["sigma"] == 2 and to_dict(pre)["flip_pairs"] == [[1, 2]]


def _published_reports() -> list[Path]:
    found = []
    for path in sorted([*_tracked("bench/reports/*/*.json"), *_tracked("docs/*.json")]):
        head = path.read_text()[:200]
        if ('"report_version"' in head or '"calibration_version"' in head) and \
                path.with_suffix(".md").is_file():
            found.append(path)
    return found


@pytest.mark.parametrize("path", _published_reports(),
                         ids=lambda p: f"{p.parent.name}/{p.name}")
def test_published_reports_re_render_byte_identically(path):
    """Every published bench and calibration report loads through its record and its
    Markdown is rebuilt from the JSON alone, byte for byte."""
    import re

    from okdhp_edge.bench import calibration
    from okdhp_edge.bench.report import load_report, markdown
    from okdhp_edge.records import CalibrationReport, read_json_record

    old = path.with_suffix(".md").read_text()
    if '"calibration_version"' in path.read_text()[:200]:
        rep = read_json_record(CalibrationReport, path)
        new = calibration.markdown(rep, calibration.reproduce_command(rep))
    else:
        chart = re.findall(r"!\[accuracy vs latency\]\((.*)\)", old)
        new = markdown(load_report(path), chart[0] if chart else None)
    assert new == old


EXPORT_V2 = """
schema: 2
student: s
weights_sha256: abc
preprocessing: {input_size: [64, 64], mean: [0.0, 0.0, 0.0], std: [1.0, 1.0, 1.0],
  heatmap_stride: 4, flip_pairs: [], box_padding: 1.25, sigma: 2.0}
formats:
  onnx_fp32: {backend: onnxruntime, precision: fp32, available: true, file: model.onnx}
  onnx_int8:
    backend: onnxruntime
    precision: int8
    available: true
    file: model_int8.onnx
    recipe: {method: default, num_images: 8, seed: 0, keep_head: false}
    calibration: {num_images: 8, seed: 0, list_sha256: ff, source: train split}
    calibration_method: nncf-default
    quantizer: nncf
    higher_precision_layers: []
  litert_fp32: {backend: litert, precision: fp32, available: true, file: model_fp32.tflite,
    layout: NCHW, converter: litert-torch 0.8}
  executorch_fp32: {backend: executorch, precision: fp32, available: true, file: model.pte,
    layout: NCHW, delegate: XNNPACK, executorch: 1.0.0, xnnpack_partitions: 1,
    outside_xnnpack: []}
"""


def test_a_version_2_export_record_reads_into_its_sections(tmp_path):
    """``export.yaml`` version 2 held a format's quantization and its builder's facts as
    flat fields (a 22-field union); version 3 reads them into typed sections."""
    from okdhp_edge.records import ExportRecord, read_record

    path = tmp_path / "export.yaml"
    path.write_text(EXPORT_V2)
    rec = read_record(ExportRecord, path)
    assert rec.schema == ExportRecord.VERSION == 3
    q = rec.formats["onnx_int8"].quantization
    assert q.recipe["num_images"] == 8 and q.calibration.list_sha256 == "ff"
    assert (q.calibration_method, q.quantizer, q.higher_precision_layers) == (
        "nncf-default", "nncf", [])
    assert rec.formats["onnx_fp32"].quantization is None
    assert rec.formats["litert_fp32"].litert.converter == "litert-torch 0.8"
    pte = rec.formats["executorch_fp32"].executorch
    assert (pte.version, pte.delegate, pte.xnnpack_partitions) == ("1.0.0", "XNNPACK", 1)
    again = rec.to_dict()
    assert "recipe" not in again["formats"]["onnx_int8"] and again["schema"] == 3
