"""Deployable bundles: round trip, tampering, versions, a bundle set benched without torch."""

import subprocess
import sys

import numpy as np
import pytest

from okdhp_edge.bench.report import load_report
from okdhp_edge.manifest import ManifestError, zoo_students
from okdhp_edge.utils.io import IntegrityError
from tests.conftest import BLOCK_TORCH


def test_bundle_round_trip_and_tamper(tiny_zoo, tmp_path):
    from okdhp_edge.export.bundles import export_bundle
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
    model_file = out / pipe.manifest.model
    model_file.write_bytes(model_file.read_bytes()[:-100])
    with pytest.raises(IntegrityError, match="sha256 mismatch"):
        load_bundle(out)


def test_a_bundle_carries_the_students_manifest_and_version_1_still_loads(tiny_zoo, tmp_path):
    """bundle.yaml holds the student's own manifest (weights not shipped); a version-1
    bundle (a copy of some of its fields, the preprocessing beside them) is migrated."""
    import yaml

    from okdhp_edge.export.bundles import export_bundle
    from okdhp_edge.records import NO_WEIGHTS
    from okdhp_edge.runtime.bundle import load_bundle

    d, man = zoo_students(tiny_zoo)[0]
    out = export_bundle(d / "student.yaml", "onnxruntime", "fp32", tmp_path / "b")
    got = load_bundle(out).manifest
    assert got.student_manifest.weights == NO_WEIGHTS
    assert got.student_manifest.accuracy == man.accuracy and got.preprocessing == \
        man.preprocessing
    raw = yaml.safe_load((out / "bundle.yaml").read_text())
    old = dict(raw, bundle_version=1)
    student = old["student_manifest"]
    old["preprocessing"] = student.pop("preprocessing")
    for key in ("schema", "weights", "qat"):
        student.pop(key, None)
    (out / "bundle.yaml").write_text(yaml.safe_dump(old))
    assert load_bundle(out).manifest.student_manifest == got.student_manifest


def test_newer_bundle_version_refused(tiny_zoo, tmp_path):
    import yaml

    from okdhp_edge.export.bundles import export_bundle
    from okdhp_edge.runtime.bundle import load_bundle

    d, _ = zoo_students(tiny_zoo)[0]
    out = export_bundle(d / "student.yaml", "openvino", "fp32", tmp_path / "b")
    man = yaml.safe_load((out / "bundle.yaml").read_text())
    man["bundle_version"] = 99
    (out / "bundle.yaml").write_text(yaml.safe_dump(man))
    with pytest.raises(ManifestError, match="bundle version 99.*newer"):
        load_bundle(out)


def test_bundle_set_bench_without_torch(tiny_zoo, tmp_path):
    from okdhp_edge.export.bundles import export_all
    from okdhp_edge.runtime.bundle import read_set

    out = export_all(tiny_zoo, tmp_path / "set", ("onnxruntime", "openvino"), ("fp32",))
    read_set(out)
    proc = subprocess.run(
        [sys.executable, "-c", BLOCK_TORCH, "--bundles", str(out), "--threads", "1",
         "--cores", "0", "--min-iters", "4", "--min-time", "0.02", "--warmup-time", "0.02",
         "--rounds", "1", "--out-root",
         str(tmp_path / "reports"), "--device-name", "target"],
        capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rep = load_report(tmp_path / "reports" / "target" / "tiny.json")
    ok = [r for r in rep.rows if r.status == "ok"]
    assert {(r.student, r.backend) for r in ok} == {
        (s, b) for s in ("hg2", "hg3") for b in ("onnxruntime", "openvino")}
    assert all(r.accuracy.value is not None for r in ok)
    # each row's memory was measured in a worker that never imported torch: a board's figure
    assert all(r.cost is not None and not r.cost.torch_imported for r in ok)
    # --cores 0: every row's worker ran on CPU 0, and says so
    assert all(r.cpus == [0] and r.runner["cpus"] == [0] for r in ok)
    assert rep.device["cpus"] == [0]
    # a backend named with --backends that needs torch is a row saying so, not dropped
    named = subprocess.run(
        [sys.executable, "-c", BLOCK_TORCH, "--bundles", str(out), "--backends",
         "onnxruntime,executorch", "--students", "hg2", "--threads", "1", "--min-iters", "4",
         "--min-time", "0.02", "--warmup-time", "0.02", "--rounds", "1", "--no-accuracy",
         "--out-root", str(tmp_path / "named"), "--device-name", "target"],
        capture_output=True, text=True, timeout=600)
    assert named.returncode == 0, named.stderr[-3000:]
    rows = {r.backend: r for r in load_report(tmp_path / "named" / "target" / "tiny.json").rows}
    assert rows["onnxruntime"].status == "ok" and rows["executorch"].status != "ok"
    assert rows["executorch"].reason, rows["executorch"]
    # tampering with the report data is refused before anything runs
    victim = next((out / "report_data" / "images").iterdir())
    victim.write_bytes(b"x")
    with pytest.raises(IntegrityError):
        read_set(out)


def test_bundle_set_index_is_checked(tiny_zoo, tmp_path):
    """bundles.yaml is read through its schema: a bundle path leading outside the set or a
    missing field is refused in one line before anything is loaded."""
    import yaml

    from okdhp_edge.export.bundles import export_all
    from okdhp_edge.runtime.bundle import read_set

    out = export_all(tiny_zoo, tmp_path / "set", ("onnxruntime",), ("fp32",))
    idx = yaml.safe_load((out / "bundles.yaml").read_text())
    for bad, match in (({**idx, "bundles": [{**idx["bundles"][0], "path": "../../x"}]},
                        "lies outside"),
                       ({k: v for k, v in idx.items() if k != "zoo"}, "missing field 'zoo'"),
                       ({**idx, "bundles": [{"student": "hg2"}]}, r"bundles\[0\]\.backend")):
        (out / "bundles.yaml").write_text(yaml.safe_dump(bad))
        with pytest.raises(ManifestError, match=match):
            read_set(out)


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_edited_bundle_preprocessing_is_refused(tiny_zoo, tmp_path, backend):
    """bundle.yaml is not hashed by itself, but what it says about pre-processing is checked
    against the metadata the model file carries: an edited mean is refused, not run."""
    import yaml

    from okdhp_edge.export.bundles import export_bundle
    from okdhp_edge.runtime.bundle import load_bundle

    d, _ = zoo_students(tiny_zoo)[0]
    out = export_bundle(d / "student.yaml", backend, "fp32", tmp_path / "b")
    assert load_bundle(out).runner.model_metadata()["okdhp_num_joints"] == "17"
    man = yaml.safe_load((out / "bundle.yaml").read_text())
    man["student_manifest"]["preprocessing"]["mean"] = [0.5, 0.5, 0.5]
    (out / "bundle.yaml").write_text(yaml.safe_dump(man, sort_keys=False))
    with pytest.raises(ManifestError, match=r"mean \[0\.5, 0\.5, 0\.5\] differs from the model"):
        load_bundle(out)


def test_a_full_disk_while_bundling_is_one_line_and_leaves_no_torn_model(tiny_zoo, tmp_path,
                                                                         monkeypatch):
    import errno

    import okdhp_edge.export.bundles as bundles
    from okdhp_edge.errors import WriteError

    d, _ = zoo_students(tiny_zoo)[0]
    bundles.export_bundle(d / "student.yaml", "onnxruntime", "fp32", tmp_path / "warm")

    def half_then_full(src, dst):
        with open(dst, "wb") as fh:
            fh.write(open(src, "rb").read()[:100])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(bundles, "_copy", half_then_full)
    with pytest.raises(WriteError, match="the disk is full"):
        bundles.export_bundle(d / "student.yaml", "onnxruntime", "fp32", tmp_path / "b")
    assert not [p for p in (tmp_path / "b").rglob("*") if p.is_file()]
