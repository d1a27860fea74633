"""Nothing reaches outside its folder, nothing unverified is trusted: every path a manifest
or config names stays inside its folder, and what a bundle says is bound to its model."""

import shutil

import pytest
import yaml

from okdhp_edge.errors import ConfigError, ManifestError, UsageError
from okdhp_edge.manifest import zoo_students
from tests.conftest import ROOT, okdhp, okdhp_process


def _student_copy(tiny_zoo, tmp_path):
    """A copy of the tiny zoo's first student (weights and manifest, no export cache)."""
    d = tmp_path / "zoo" / "s"
    shutil.copytree(zoo_students(tiny_zoo)[0][0], d, ignore=shutil.ignore_patterns("export"))
    return d


def _edit(path, fn):
    data = yaml.safe_load(path.read_text())
    fn(data)
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def test_weights_outside_the_student_folder_are_never_opened(tiny_zoo, tmp_path):
    from okdhp_edge.students import load_student

    d = _student_copy(tiny_zoo, tmp_path)
    outside = tmp_path / "elsewhere.safetensors"
    shutil.copy(d / "weights.safetensors", outside)  # the right hash, the wrong place
    for rel in ("../../elsewhere.safetensors", "/etc/passwd"):
        _edit(d / "student.yaml", lambda m, r=rel: m["weights"].update(file=r))
        with pytest.raises(ManifestError, match="lies outside"):
            load_student(d / "student.yaml")


def test_a_zoo_cannot_list_another_zoos_student(tiny_zoo, tmp_path):
    zoo = tmp_path / "z"
    shutil.copytree(tiny_zoo, zoo, ignore=shutil.ignore_patterns("export"))
    other = tmp_path / "other"
    shutil.copytree(tiny_zoo, other, ignore=shutil.ignore_patterns("export"))
    _edit(zoo / "zoo.yaml", lambda z: z.update(students=["../other/hg2"]))
    with pytest.raises(ManifestError, match="not a folder of this zoo"):
        zoo_students(zoo)


@pytest.mark.parametrize("override", ["zoo.name=../../escaped_zoo", "train.run_name=../x",
                                      "zoo.name=..", "train.run_name=a/b"])
def test_names_from_a_config_stay_inside_their_folder(override):
    from okdhp_edge.config import load_config

    with pytest.raises(ConfigError, match="must be a plain name"):
        load_config(None, [override])
    load_config(None, ["zoo.root=/tmp/anywhere", "train.out_dir=../runs"])  # chosen: free


def test_edited_accuracy_in_student_yaml_is_refused(tiny_zoo, tmp_path):
    from okdhp_edge.students import load_student

    d = _student_copy(tiny_zoo, tmp_path)
    _edit(d / "student.yaml", lambda m: m["accuracy"].update(value=0.99))
    with pytest.raises(ManifestError, match="'accuracy' differs"):
        load_student(d / "student.yaml")


@pytest.mark.parametrize("edit,needle", [
    (lambda b: b["student_manifest"]["preprocessing"].update(box_padding=2.0),
     "box_padding 2.0 differs"),
    (lambda b: b["student_manifest"]["accuracy"].update(value=0.99), "student_sha256"),
    (lambda b: b.update(backend="openvino"), "runs 'openvino_fp32/model.xml', but the bundle"),
])
def test_what_a_bundle_says_is_bound_to_its_model(tiny_zoo, tmp_path, edit, needle):
    from okdhp_edge.export.bundles import export_bundle
    from okdhp_edge.runtime.bundle import load_bundle

    d, _ = zoo_students(tiny_zoo)[0]
    out = export_bundle(d / "student.yaml", "onnxruntime", "fp32", tmp_path / "b")
    load_bundle(out)
    _edit(out / "bundle.yaml", edit)
    with pytest.raises(ManifestError, match=needle):
        load_bundle(out)


def test_a_failed_parity_check_refuses_the_bundle(tiny_zoo, tmp_path, monkeypatch):
    from okdhp_edge.export import exporter
    from okdhp_edge.export.bundles import export_bundle
    from okdhp_edge.runtime.bundle import load_bundle

    d = _student_copy(tiny_zoo, tmp_path)
    monkeypatch.setitem(exporter.TOLERANCE, "fp32", (-1.0, -1.0))  # nothing can pass
    with pytest.raises(UsageError, match="parity check against PyTorch fp32 failed"):
        export_bundle(d / "student.yaml", "onnxruntime", "fp32", tmp_path / "b")
    out = export_bundle(d / "student.yaml", "onnxruntime", "fp32", tmp_path / "b2",
                        allow_parity_failure=True)
    assert load_bundle(out).manifest.parity_failure_allowed is True
    assert "parity_failure_allowed: true" in (out / "bundle.yaml").read_text()


# the cache's check is one for every backend (exporter._cached reads the builder's
# file_metadata); OpenVINO's rt_info metadata is read back in the default suite by
# test_openvino.py::test_qdq_ir_runs_the_programs_arithmetic, its INT8 rounds here are slow
@pytest.mark.parametrize("fmts", [
    pytest.param(("onnx_int8",), id="onnx_int8"),
    pytest.param(("onnx_int8", "openvino_int8"), marks=pytest.mark.slow, id="and_openvino")])
def test_the_int8_recipe_travels_with_the_file(tiny_zoo, tmp_path, fmts):
    """The cache compares the recipe a quantized file carries in its own metadata, not
    export.yaml's: an edited record neither passes an old file off for another recipe nor
    gets recorded for a file it did not make."""
    import json

    from okdhp_edge.backends import backend_module
    from okdhp_edge.backends.recipe import QuantRecipe
    from okdhp_edge.export.exporter import RECIPE_KEY, export_student
    from okdhp_edge.targets import FORMATS

    d = _student_copy(tiny_zoo, tmp_path)

    def made(fmt):
        spec = FORMATS[fmt]
        meta = backend_module(spec.builder).file_metadata(d / "export" / spec.model_file)
        return json.loads(meta[RECIPE_KEY])["num_images"]

    def set_yaml_images(n):
        _edit(d / "export" / "export.yaml",
              lambda r: [r["formats"][f]["quantization"]["recipe"].update(num_images=n)
                         for f in fmts])

    export_student(d / "student.yaml", formats=fmts, recipe=QuantRecipe(num_images=8))
    assert [made(f) for f in fmts] == [8] * len(fmts)
    set_yaml_images(16)  # the record now claims what the asked recipe is: rebuilt anyway
    rec = export_student(d / "student.yaml", formats=fmts, recipe=QuantRecipe(num_images=16))
    assert [made(f) for f in fmts] == [16] * len(fmts)
    assert all(rec.formats[f].quantization.calibration.num_images == 16 for f in fmts)
    mtimes = [(d / "export" / FORMATS[f].model_file).stat().st_mtime_ns for f in fmts]
    set_yaml_images(32)  # a wrong record of the right file: reused, recorded as made
    rec = export_student(d / "student.yaml", formats=fmts, recipe=QuantRecipe(num_images=16))
    assert [(d / "export" / FORMATS[f].model_file).stat().st_mtime_ns for f in fmts] == mtimes
    assert all(rec.formats[f].quantization.recipe["num_images"] == 16 for f in fmts)


@pytest.mark.parametrize("override,needle", [
    ("data.rot_prob=5", "data.rot_prob: expected a value in \\[0, 1\\]"),
    ("data.flip_prob=-1", "data.flip_prob: expected a value in \\[0, 1\\]"),
    ("loss.lambda_kd=.nan", "loss.lambda_kd: expected a finite number"),
    ("train.lr_steps=[-5]", "train.lr_steps: expected increasing epochs >= 1"),
    ("model.fau_kernels=[]", "model.fau_kernels: expected odd kernel sizes"),
    ("model.decoder_widths=[]", "model.decoder_widths: expected a non-empty list"),
    ("model.encoder=foo", "model.encoder: expected one of"),
])
def test_out_of_range_config_values_are_refused_at_load(override, needle):
    """Whatever the family: an hourglass config with a light key set wrong is refused too."""
    from okdhp_edge.config import load_config

    with pytest.raises(ConfigError, match=needle):
        load_config(None, [override])


def test_a_recipe_option_no_quantizing_backend_reads_is_refused():
    from okdhp_edge.backends.recipe import QuantRecipe
    from okdhp_edge.errors import QuantizationError

    with pytest.raises(QuantizationError, match="--int8-max-drop 0.01: only openvino"):
        QuantRecipe.from_record(dict(max_drop=0.01)).check_honoured({"onnxruntime"})
    QuantRecipe.from_record(dict(max_drop=0.01)).check_honoured({"onnxruntime", "openvino"})
    QuantRecipe().check_honoured({"litert"})


def test_negative_latency_in_a_report_is_refused(tmp_path):
    import json

    from okdhp_edge.bench.report import load_report
    from okdhp_edge.errors import ReportError

    src = ROOT / "bench" / "reports" / \
        "amd-epyc-2c-avx512bf16" / "quickstart.json"
    if not src.is_file():
        pytest.skip("no published quickstart report here")
    rep = json.loads(src.read_text())
    row = next(r for r in rep["rows"] if r["status"] == "ok")
    row["latency_ms"]["engine"]["median"] = -1.0
    (tmp_path / "r.json").write_text(json.dumps(rep))
    with pytest.raises(ReportError, match="finite number >= 0"):
        load_report(tmp_path / "r.json")


def test_a_bench_that_measures_nothing_leaves_the_report_alone(tiny_zoo, tmp_path):

    report = tmp_path / "box" / "tiny.json"
    report.parent.mkdir()
    report.write_text("{}")
    proc = okdhp_process("bench", "--zoo", tiny_zoo, "--backends", "torch", "--precisions",
                         "int8", "--out-root", tmp_path, "--device-name", "box")
    assert proc.returncode == 2 and "nothing could be measured" in proc.stderr
    assert "torch has no int8 target" in proc.stderr and report.read_text() == "{}"


def test_a_killed_writers_temporaries_are_removed_by_the_next_run(tiny_zoo, tmp_path):
    """Temporaries carry their writer's pid: the next run that touches the folder removes
    those of a writer that is gone (a file and a half-built zoo folder) and leaves a live
    writer's alone."""
    import os
    import subprocess
    import sys

    from okdhp_edge.utils.io import remove_stale_temporaries, temp_prefix

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    torn = tmp_path / f".model_int8.onnx.{dead}~abc.tmp"
    half = tmp_path / f".tiny.partial-{dead}~xyz"
    old = tmp_path / ".last.pt.k2j3.tmp"  # an older writer's name, without a pid
    live = tmp_path / f"{temp_prefix('report.json')}def.tmp"
    for p in (torn, old, live):
        p.write_bytes(b"")
    half.mkdir()
    (half / "zoo.yaml").write_text("half")
    assert str(os.getpid()) in live.name
    assert set(remove_stale_temporaries(tmp_path)) == {torn, half, old}
    assert live.exists() and not torn.exists() and not half.exists()
    # the export of a student sweeps its export folder before it writes
    d = _student_copy(tiny_zoo, tmp_path / "s")
    (d / "export").mkdir()
    stale = d / "export" / f".model.onnx.{dead}~q.tmp"
    stale.write_bytes(b"torn")
    from okdhp_edge.export.exporter import export_student

    export_student(d / "student.yaml", formats=("onnx",))
    assert not stale.exists() and (d / "export" / "model.onnx").is_file()


def test_cuda_asked_without_cuda_is_one_line_and_leaves_no_run(tmp_path):

    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    proc = okdhp("train", "train.device=cuda", f"train.out_dir={tmp_path / 'runs'}")
    assert proc.returncode == 2 and "no CUDA device is available" in proc.stderr
    assert "Traceback" not in proc.stderr and not any((tmp_path / "runs").glob("*"))


def test_an_unwritable_zoo_root_is_refused_before_training(tmp_path):
    from okdhp_edge import api
    from okdhp_edge.config import load_config
    from okdhp_edge.errors import WriteError

    (tmp_path / "a_file").write_text("")
    root = tmp_path / "a_file" / "zoo"  # a file in the way: unwritable, even for root
    cfg = load_config(None, [f"train.out_dir={tmp_path / 'runs'}", f"zoo.root={root}"])
    with pytest.raises(WriteError, match="a part of the path is a file"):
        api.train(cfg)
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_zoo_export_out_naming_a_file_is_one_line(tiny_zoo, tmp_path):

    (tmp_path / "taken").write_text("mine")
    for args in (["--student", "hg2", "--backend", "onnxruntime"], ["--all"]):
        proc = okdhp("zoo", "export", "--zoo", tiny_zoo, *args, "--out", tmp_path / "taken")
        assert proc.returncode == 2 and "a file is there, not a folder" in proc.stderr
        assert "Traceback" not in proc.stderr and (tmp_path / "taken").read_text() == "mine"


def test_a_rebench_of_one_student_keeps_the_fuller_report(tiny_zoo, tmp_path):

    base = ["bench", "--zoo", str(tiny_zoo),
            "--backends", "onnxruntime", "--threads", "1", "--min-iters", "4", "--min-time",
            "0.02", "--warmup-time", "0.02",
            "--rounds", "1", "--batch", "1", "--no-accuracy", "--out-root",
            str(tmp_path), "--device-name", "box"]

    def bench(*extra):
        return okdhp(*base, *extra)

    assert bench().returncode == 0
    report = (tmp_path / "box" / "tiny.json").read_text()
    proc = bench("--students", "hg2")
    assert proc.returncode == 2 and "measured row(s) this run would drop (hg3" in proc.stderr
    assert (tmp_path / "box" / "tiny.json").read_text() == report
    # a report of another training of the zoo (other weights) describes none of these
    # students: it is replaced without --replace
    import json

    other = json.loads(report)
    assert all(len(s["weights_sha256"]) == 64 for s in other["students"])
    other["students"][0]["weights_sha256"] = "0" * 64
    (tmp_path / "box" / "tiny.json").write_text(json.dumps(other))
    proc = bench("--students", "hg2")
    assert proc.returncode == 0 and "another training of zoo 'tiny'" in proc.stderr
    assert bench("--students", "hg2", "--replace").returncode == 0


def test_rows_that_cannot_be_measured_now_do_not_replace_measured_ones(tiny_zoo, tmp_path,
                                                                      monkeypatch):
    """A re-bench in which a backend the report measured is gone (here: the ONNX Runtime
    rows' workers cannot import it) refuses to write a report with less than it had. (A
    machine without the package, blocked in the bench's workers too, is
    test_packaging.py's and test_bundles.py's.)"""
    from tests.bench.misbehaving import runner_for

    args = ["--zoo", str(tiny_zoo), "--backends", "torch,onnxruntime", "--precisions", "fp32",
            "--students", "hg2", "--threads", "1", "--min-iters", "4", "--min-time", "0.02",
            "--warmup-time", "0.02", "--rounds", "1", "--batch", "1", "--no-accuracy",
            "--out-root", str(tmp_path), "--device-name", "box"]
    run = okdhp("bench", *args)
    assert run.returncode == 0, run.stderr[-2000:]
    report = (tmp_path / "box" / "tiny.json").read_text()
    runner_for(monkeypatch, "onnxruntime", "RuntimeGone")
    proc = okdhp("bench", *args)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "1 row(s) the earlier report measured could not be measured now (hg2 onnxruntime " \
           "fp32: onnxruntime is not installed here" in proc.stderr
    assert (tmp_path / "box" / "tiny.json").read_text() == report


@pytest.mark.parametrize("fmt", ["onnx", "openvino_fp32"])
def test_another_students_file_is_not_reused_by_an_edited_export_yaml(tiny_zoo, tmp_path, fmt):
    """hg3's file copied over hg2's and export.yaml's sha256 line edited to match: the
    cache reads the student the file itself names, and rebuilds (it reused and shipped
    hg3's network as hg2's)."""
    import shutil

    from okdhp_edge.backends import backend_module
    from okdhp_edge.export.exporter import export_student
    from okdhp_edge.targets import FORMATS
    from okdhp_edge.utils.io import sha256_file

    (a, _), (b, _) = zoo_students(tiny_zoo)[:2]
    hg2, hg3 = tmp_path / "zoo" / a.name, tmp_path / "zoo" / b.name
    for src, dst in ((a, hg2), (b, hg3)):
        shutil.copytree(src, dst, ignore=shutil.ignore_patterns("export"))
    rec2 = export_student(hg2 / "student.yaml", formats=(fmt,)).formats[fmt]
    rec3 = export_student(hg3 / "student.yaml", formats=(fmt,)).formats[fmt]
    for rel in rec3.sha256:
        shutil.copyfile(hg3 / "export" / rel, hg2 / "export" / rel)
    text = (hg2 / "export" / "export.yaml").read_text()
    for rel in rec2.sha256:
        text = text.replace(rec2.sha256[rel], sha256_file(hg2 / "export" / rel))
    (hg2 / "export" / "export.yaml").write_text(text)
    again = export_student(hg2 / "student.yaml", formats=(fmt,)).formats[fmt]
    meta = backend_module(FORMATS[fmt].builder).file_metadata(hg2 / "export" / again.file)
    assert meta["okdhp_student"] == a.name != b.name  # rebuilt: hg2's own file again
