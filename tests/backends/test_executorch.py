"""ExecuTorch: a tiny student lowered to XNNPACK .pte programs (fp32 and PT2E int8), run by
the ExecuTorch runtime and checked for parity; bundles name their extra."""

import subprocess
import sys
import textwrap

import numpy as np
import pytest

from okdhp_edge.manifest import zoo_students
from tests.conftest import blocking, require

require("executorch", reason="the executorch extra is not installed")


@pytest.fixture(scope="module")
def et_export(tiny_zoo):
    from okdhp_edge.export.exporter import export_student

    d, man = zoo_students(tiny_zoo)[0]
    # into the student's own export folder: the bundle test below reuses the file (a
    # lowering takes ~20 s even for this tiny student)
    rec = export_student(d / "student.yaml", formats=("executorch_fp32",))
    return d, man, d / "export", rec


def test_pte_program_runs_with_parity(et_export):
    from okdhp_edge.backends import make_runner

    _, man, out, rec = et_export
    entry = rec.formats["executorch_fp32"]
    assert entry.available, entry.reason
    assert entry.parity.passed and entry.parity.random.max_abs_heatmap_err < 1e-4
    # the hourglass's upsampling lowered inside XNNPACK: one partition, nothing outside
    built = entry.executorch
    assert built.xnnpack_partitions == 1 and built.outside_xnnpack == [], entry
    r = make_runner("executorch", "fp32", threads=1)
    r.load(str(out / entry.file))
    w, h = man.preprocessing.input_size
    assert r.input_hw() == (h, w) and r.describe()["delegate"] == "XNNPACK"
    assert r.run(np.zeros((2, 3, h, w), np.float32)).shape[0] == 2


def test_a_program_of_an_older_builder_is_rebuilt(et_export):
    import dataclasses

    from okdhp_edge.backends.recipe import QuantRecipe
    from okdhp_edge.export.exporter import _cached

    _, _, out, rec = et_export
    entry = rec.formats["executorch_fp32"]
    from okdhp_edge.backends.executorch import BUILD_REVISION

    assert entry.build_revision == BUILD_REVISION == 2
    assert _cached(rec.formats, "executorch_fp32", out, QuantRecipe()) == entry
    older = {"executorch_fp32": dataclasses.replace(entry, build_revision=None)}
    assert _cached(older, "executorch_fp32", out, QuantRecipe()) is None


@pytest.mark.slow  # PT2E convert + a second lowering: ~40 s on the tiny student
def test_pte_int8_runs_with_parity(et_export):
    from okdhp_edge.backends.recipe import QuantRecipe
    from okdhp_edge.export.exporter import export_student

    d, _, _, _ = et_export
    rec = export_student(d / "student.yaml", formats=("executorch_int8",),
                         recipe=QuantRecipe(method="minmax", num_images=8))
    int8 = rec.formats["executorch_int8"]
    assert int8.available, int8.reason
    assert int8.parity.passed, int8.parity
    q = int8.quantization
    assert q.calibration_method == "minmax" and q.calibration.num_images == 8
    assert int8.quantization.higher_precision_layers == []  # every convolution reads int8


NO_EXECUTORCH = blocking("executorch") + textwrap.dedent("""
    from okdhp_edge.runtime.bundle import load_bundle
    from okdhp_edge.utils.cli import run_cli
    run_cli(lambda argv: load_bundle(sys.argv[1]) and 0)
""")


def test_bundle_names_its_extra_and_refuses_tampering(et_export, tmp_path):
    from okdhp_edge.export.bundles import export_bundle
    from okdhp_edge.runtime.bundle import load_bundle
    from okdhp_edge.utils.io import IntegrityError

    d, _, _, _ = et_export
    out = export_bundle(d / "student.yaml", "executorch", "fp32", tmp_path / "b")
    pipe = load_bundle(out)
    assert pipe.manifest.requires == "executorch"
    img = np.random.default_rng(0).integers(0, 255, (120, 160, 3), dtype=np.uint8)
    assert pipe(img, (20, 10, 60, 90)).shape == (17, 3)
    proc = subprocess.run([sys.executable, "-c", NO_EXECUTORCH, str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1
    err = proc.stderr.strip()
    assert len(err.splitlines()) == 1 and "okdhp_edge[executorch]" in err, err
    pte = out / pipe.manifest.model
    data = bytearray(pte.read_bytes())
    data[len(data) // 2] ^= 0xFF
    pte.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match="sha256 mismatch"):
        load_bundle(out)


def test_a_pte_names_its_student_and_another_students_is_refused(et_export, tmp_path):
    """A ``.pte`` carries its student's metadata as constant methods, so a bundle whose
    record and program name different students (a program swapped for another student's,
    or the record edited) is refused at load, as an ONNX file's is (it ran: an ExecuTorch
    program carried nothing)."""
    import yaml

    from okdhp_edge.backends.executorch import file_metadata
    from okdhp_edge.export.bundles import export_bundle
    from okdhp_edge.manifest import ManifestError
    from okdhp_edge.runtime.bundle import load_bundle
    from okdhp_edge.utils.io import sha256_file

    d, man, out, rec = et_export
    meta = file_metadata(out / rec.formats["executorch_fp32"].file)
    assert meta["okdhp_student"] == man.name and len(meta["okdhp_student_sha256"]) == 64
    bundle = export_bundle(d / "student.yaml", "executorch", "fp32", tmp_path / "b")
    assert load_bundle(bundle).manifest.student == man.name
    doc = yaml.safe_load((bundle / "bundle.yaml").read_text())
    doc["student_manifest"]["name"] = "hg9"  # the program names hg2: the record now differs
    (bundle / "bundle.yaml").write_text(yaml.safe_dump(doc))
    model = doc["model"]
    assert sha256_file(bundle / model) == doc["files"][model]
    with pytest.raises(ManifestError, match="differs from the model file"):
        load_bundle(bundle)
