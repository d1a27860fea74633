"""LiteRT: a tiny student converted to .tflite (fp32, fp16, int8), run by ai-edge-litert,
checked for parity; a LiteRT bundle loaded and run with torch blocked; tampering refused."""

import subprocess
import sys
import textwrap

import numpy as np
import pytest

from okdhp_edge.manifest import zoo_students
from tests.conftest import blocking, require

require("litert_torch", reason="the litert extra is not installed")


@pytest.fixture(scope="module")
def litert_export(tiny_zoo, tmp_path_factory):
    from okdhp_edge.backends.recipe import QuantRecipe
    from okdhp_edge.export.exporter import export_student

    d, man = zoo_students(tiny_zoo)[0]
    # into the student's own export folder: the bundle tests reuse the files
    rec = export_student(d / "student.yaml", recipe=QuantRecipe(num_images=8),
                         formats=("litert_fp32", "litert_fp16", "litert_int8"))
    return d, man, d / "export", rec


def test_tflite_files_run_with_parity(litert_export):
    from okdhp_edge.backends import make_runner

    _, man, out, rec = litert_export
    for fmt in ("litert_fp32", "litert_fp16", "litert_int8"):
        entry = rec.formats[fmt]
        assert entry.available, entry.reason
        assert entry.parity.passed, (fmt, entry.parity)
        assert entry.litert.layout == "NCHW"
    assert rec.formats["litert_fp32"].parity.random.max_abs_heatmap_err < 1e-4
    int8 = rec.formats["litert_int8"]
    q = int8.quantization
    assert q.recipe["num_images"] == 8 and len(q.calibration.list_sha256) == 64
    r = make_runner("litert", "int8", threads=1)
    r.load(str(out / int8.file))
    assert r.describe()["input_dtype"] == "int8"  # full integer: int8 in, int8 out
    assert r.model_metadata()["okdhp_student"] == man.name
    assert '"num_images": 8' in r.model_metadata()["okdhp_quant_recipe"]  # bound to the file
    w, h = man.preprocessing.input_size
    assert r.input_hw() == (h, w) and r.input_layout() == "NCHW"
    y = r.run(np.zeros((2, 3, h, w), np.float32))  # a batch runs one image at a time
    assert y.shape[0] == 2 and y.dtype == np.float32
    sizes = {f: rec.formats[f].file_bytes for f in ("litert_fp32", "litert_int8")}
    assert sizes["litert_int8"] < sizes["litert_fp32"]


def test_unsupported_recipe_is_an_unavailable_row(litert_export, tmp_path):
    import shutil

    from okdhp_edge.backends.recipe import QuantRecipe
    from okdhp_edge.export.exporter import export_student

    d, _, out, _ = litert_export
    for name in ("export.yaml", "model_fp32.tflite"):  # the fp32 file is reused, not rebuilt
        shutil.copyfile(out / name, tmp_path / name)
    rec = export_student(d / "student.yaml", tmp_path, formats=("litert_int8",),
                         recipe=QuantRecipe(method="entropy", num_images=8))
    entry = rec.formats["litert_int8"]
    assert entry.available is False and "min-max" in entry.reason
    assert rec.formats["litert_fp32"].available  # the rest of the export went on


LOAD_BUNDLE = blocking("torch") + textwrap.dedent("""
    import numpy as np
    from okdhp_edge.runtime.bundle import load_bundle
    pipe = load_bundle(sys.argv[1])
    img = np.random.default_rng(0).integers(0, 255, (120, 160, 3), dtype=np.uint8)
    kp = pipe(img, (20, 10, 60, 90), flip=True)
    assert "torch" not in sys.modules
    print(kp.shape, pipe.runner.describe()["backend"])
""")


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_litert_bundle_runs_without_torch_and_refuses_tampering(litert_export, tmp_path,
                                                                precision):
    from okdhp_edge.backends.recipe import QuantRecipe
    from okdhp_edge.export.bundles import export_bundle
    from okdhp_edge.runtime.bundle import load_bundle
    from okdhp_edge.utils.io import IntegrityError

    d = litert_export[0]
    out = export_bundle(d / "student.yaml", "litert", precision, tmp_path / "b",
                        recipe=QuantRecipe(num_images=8))
    proc = subprocess.run([sys.executable, "-c", LOAD_BUNDLE, str(out)], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "(17, 3) litert" in proc.stdout
    pipe = load_bundle(out)
    assert pipe.manifest.input_layout == "NCHW" and pipe.manifest.requires is None
    assert "requires" not in (out / "bundle.yaml").read_text()  # the plain install runs it
    model = out / pipe.manifest.model
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte in the weights
    model.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match="sha256 mismatch"):
        load_bundle(out)


def test_edited_tflite_metadata_check(litert_export, tmp_path):
    """The bundle's preprocessing is checked against the metadata the .tflite carries."""
    import yaml

    from okdhp_edge.export.bundles import export_bundle
    from okdhp_edge.manifest import ManifestError
    from okdhp_edge.runtime.bundle import load_bundle

    out = export_bundle(litert_export[0] / "student.yaml", "litert", "fp32", tmp_path / "b")
    man = yaml.safe_load((out / "bundle.yaml").read_text())
    man["student_manifest"]["preprocessing"]["mean"] = [0.5, 0.5, 0.5]
    (out / "bundle.yaml").write_text(yaml.safe_dump(man))
    with pytest.raises(ManifestError, match="mean"):
        load_bundle(out)


def test_missing_converter_is_one_line_with_its_extra(tiny_zoo, tmp_path, monkeypatch):
    from okdhp_edge.export.exporter import export_student

    monkeypatch.setitem(sys.modules, "litert_torch", None)  # import litert_torch -> ImportError
    d, _ = zoo_students(tiny_zoo)[0]
    rec = export_student(d / "student.yaml", tmp_path, formats=("litert_fp32",))
    entry = rec.formats["litert_fp32"]
    assert entry.available is False
    assert "litert_torch is not installed" in entry.reason
    assert "pip install 'okdhp_edge[litert]'" in entry.reason and "\n" not in entry.reason


def test_litert_bundle_set_benched_without_torch(litert_export, tiny_zoo, tmp_path):
    """``bench --bundles`` measures LiteRT rows (latency, AP through LiteRT) with torch
    blocked; ``zoo export --all --students`` exports only the named students."""
    from okdhp_edge.bench.report import load_report
    from okdhp_edge.utils.cli import UsageError
    from tests.conftest import BLOCK_TORCH, okdhp

    name = litert_export[1].name  # its .tflite files are made already
    proc = okdhp("zoo", "export", "--zoo", tiny_zoo, "--all", "--students", name,
                 "--backends", "litert", "--precisions", "fp32", "--out", tmp_path / "set")
    assert proc.returncode == 0, proc.stderr[-3000:]
    proc = subprocess.run(
        [sys.executable, "-c", BLOCK_TORCH, "--bundles", str(tmp_path / "set"), "--threads",
         "1", "--min-iters", "4", "--min-time", "0.02", "--warmup-time", "0.02", "--rounds",
         "1", "--out-root", str(tmp_path / "reports"), "--device-name", "target"],
        capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [r for r in load_report(tmp_path / "reports" / "target" / "tiny.json").rows
            if r.status == "ok"]
    assert [(r.student, r.backend, r.precision) for r in rows] == [(name, "litert", "fp32")]
    assert rows[0].accuracy.value is not None and rows[0].latency_ms["engine"].median > 0
    from okdhp_edge.export.bundles import export_all

    try:
        export_all(tiny_zoo, tmp_path / "x", ("litert",), students=("hg9",))
    except UsageError as exc:
        assert "no student 'hg9'" in str(exc) and "did you mean 'hg" in str(exc)
    else:
        raise AssertionError("an unknown student was exported")


def test_light_int8_through_pt2e_matches_its_float_student(synthetic_root, tmp_path):
    """A student with transposed convolutions (a light student's decoder; the encoder with
    the fewest operators, ResNet-18's, keeps the conversion short) gets its INT8 file from
    litert-torch's PT2E quantizer (ai-edge-quantizer's is refused by LiteRT or outputs
    zeros): it loads, its heatmaps follow the float student's, and the record says which
    quantizer made it and which layers stay float."""
    import torch

    from okdhp_edge.backends import make_runner
    from okdhp_edge.backends.litert import PT2E
    from okdhp_edge.backends.recipe import QuantRecipe
    from okdhp_edge.export.exporter import export_student
    from okdhp_edge.models.student import export_module
    from okdhp_edge.plan import write_plan_zoo
    from okdhp_edge.students import load_student
    from tests.conftest import LIGHT, ROOT, tiny_overrides

    overrides = tiny_overrides(synthetic_root, tmp_path, *LIGHT, "model.decoder_widths=[8]")
    zoo = write_plan_zoo([ROOT / "configs" / "quickstart.yaml"], overrides, tmp_path / "zoo")
    d, _ = zoo_students(zoo)[0]
    rec = export_student(d / "student.yaml", tmp_path / "out", formats=("litert_int8",),
                         recipe=QuantRecipe(num_images=8))
    e = rec.formats["litert_int8"]
    assert e.available, e.reason
    assert e.quantization.quantizer == PT2E and e.quantization.calibration_method == "minmax"
    assert e.quantization.higher_precision_layers and all(
        n.startswith("TRANSPOSE_CONV") for n in e.quantization.higher_precision_layers)
    model, man = load_student(d / "student.yaml")
    module, x = export_module(model, tuple(man.preprocessing.input_size))
    x = torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    r = make_runner("litert", "int8", threads=1)
    r.load(str(tmp_path / "out" / e.file))
    y, ref = r.run(x.numpy()).ravel(), module(x).detach().numpy().ravel()
    assert np.corrcoef(y, ref)[0, 1] > 0.95 and np.abs(y).max() > 0.5 * np.abs(ref).max()
