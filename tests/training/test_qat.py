"""Quantization-aware online distillation: a tiny OKDHP run fine-tuned fake-quantized, its
zoo of int8 programs, their INT8 files on ONNX Runtime and OpenVINO, resume mid-run."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import okdhp, require

require("executorch", reason="quantization-aware training needs okdhp_edge[qat]")
require("onnxscript", reason="the QDQ ONNX of a QAT program needs okdhp_edge[qat]")

QAT = ["qat.epochs=1", "train.max_iters_per_epoch=3", "train.threads=1"]


def _float_run(tiny_zoo: Path) -> Path:
    import yaml

    return Path(yaml.safe_load((tiny_zoo / "zoo.yaml").read_text())["run"])


@pytest.fixture(scope="module")
def qat_zoo(tiny_zoo, tmp_path_factory) -> Path:
    """A QAT zoo of the tiny run, fine-tuned 3 iterations with KD, written by the command;
    hg3 fake-quantized, hg2 left float (teaching, and out of the zoo)."""
    tmp = tmp_path_factory.mktemp("qat")
    res = okdhp("train", "--qat-from", _float_run(tiny_zoo), *QAT, "qat.branches=[hg3]",
                f"train.out_dir={tmp}/runs", f"zoo.root={tmp}/zoo")
    assert res.returncode == 0, res.stderr[-3000:]
    zoo = Path(next(line for line in res.stdout.splitlines() if line.startswith("zoo: "))[5:])
    assert zoo.name == f"{_float_run(tiny_zoo).name}-qat"
    return zoo


def test_qat_zoo_records_its_recipe_and_program(qat_zoo, tiny_zoo):
    from okdhp_edge.manifest import zoo_students
    from okdhp_edge.students import load_student
    from okdhp_edge.utils.io import sha256_file

    students = list(zoo_students(qat_zoo))
    assert [m.name for _, m in students] == ["hg3"]  # qat.branches
    for d, man in students:
        q = man.qat
        assert q.from_run == str(_float_run(tiny_zoo))
        assert q.recipe["quantizer"] == "xnnpack-pt2e-qat" and q.recipe["kd"] is True
        assert q.recipe["activations"] == "int8 asymmetric per tensor"
        assert q.recipe["branches"] == ["hg3"]
        assert sha256_file(d / q.program.file) == q.program.sha256
        assert q.accuracy is not None
        assert man.provenance.run.endswith("-qat") and man.provenance.distillation["distill"]
        model, again = load_student(d / "student.yaml")  # the float weights, bound fields
        assert again.qat == q and not model.training


def test_edited_qat_record_is_refused(qat_zoo, tmp_path):
    import shutil

    from okdhp_edge.errors import ManifestError
    from okdhp_edge.students import load_student

    d = tmp_path / "hg3"
    shutil.copytree(qat_zoo / "hg3", d)
    text = (d / "student.yaml").read_text().replace("kd: true", "kd: false")
    (d / "student.yaml").write_text(text)
    with pytest.raises(ManifestError, match="'qat' differs"):
        load_student(d / "student.yaml")


@pytest.mark.parametrize("fmt, backend", [
    ("onnx_int8", "onnxruntime"),
    # slow: OpenVINO's file is the same QDQ ONNX export (~10 s) read by OpenVINO; the default
    # suite has that IR's arithmetic (test_openvino.py::test_qdq_ir_runs_the_programs_arithmetic)
    pytest.param("openvino_int8", "openvino", marks=pytest.mark.slow),
    # slow: LiteRT's conversion of the program (~20 s); LiteRT's PT2E INT8 path stays in the
    # default suite (test_litert.py::test_light_int8_through_pt2e_matches_its_float_student)
    pytest.param("litert_int8", "litert", marks=pytest.mark.slow)])
def test_int8_files_run_the_program_on_every_cpu_runtime(qat_zoo, fmt, backend):
    from okdhp_edge.convert.qat_program import load_program, run_program
    from okdhp_edge.export.exporter import export_student
    from okdhp_edge.manifest import load_student_manifest
    from okdhp_edge.runtime import make_runner
    from okdhp_edge.targets import TOLERANCE

    if backend == "litert" and importlib.util.find_spec("litert_torch") is None:
        pytest.skip("the litert extra is not installed")
    d = qat_zoo / "hg3"
    man = load_student_manifest(d / "student.yaml")
    rec = export_student(d / "student.yaml", formats=(fmt,))
    x = np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32)
    ref = run_program(load_program(d / man.qat.program.file, man.qat.program.sha256), x)
    entry = rec.formats[fmt]
    assert entry.available and entry.parity.passed, entry
    q = entry.quantization
    assert q.recipe == man.qat.recipe and q.quantizer == "xnnpack-pt2e-qat"
    assert entry.quantization.calibration is None  # made from the program, not calibrated here
    with make_runner(backend, "int8") as runner:
        runner.load(str(d / "export" / entry.file))
        out = np.concatenate([runner.run(x[i:i + 1]) for i in range(len(x))])
    assert np.abs(out - ref).max() <= TOLERANCE["int8"][0]
    again = export_student(d / "student.yaml", formats=(fmt,))  # cached: the same file
    assert again.formats[fmt].sha256 == entry.sha256


# slow: resuming is the Trainer's (test_trainer.py::test_interrupt_mid_epoch_then_resume);
# what QAT keeps at a best epoch is its Selection's (test_qat_zoo_records_its_recipe_and_program)
@pytest.mark.slow
def test_qat_resumes_mid_run(tiny_zoo, tmp_path):
    from okdhp_edge.config import load_config
    from okdhp_edge.training.qat import QatTrainer, qat_run_config

    run = _float_run(tiny_zoo)
    cfg = qat_run_config(load_config(overrides=[
        f"qat.from_run={run}", "qat.epochs=2", "train.max_iters_per_epoch=2",
        "train.threads=1", "qat.freeze_observers=0.25", f"train.out_dir={tmp_path}"],
        base=run / "config.yaml"))
    first = QatTrainer(cfg)
    try:
        first._epoch()  # epoch 1 of 2: the ranges freeze at its second iteration
        state = {k: v.clone() for k, v in first.model.state_dict().items()}
    finally:
        first.close()
    assert bool(state["observers_frozen"])
    second = QatTrainer(cfg, run_dir=first.run_dir, resume=True)
    try:
        assert second.state.epoch == 1 and second.state.iteration == 2
        now = second.model.state_dict()
        assert all(torch.equal(now[k], v) for k, v in state.items())
        second._epoch()
        assert second.state.epoch == 2
    finally:
        second.close()


def test_qat_from_needs_a_trained_run(tmp_path):
    res = okdhp("train", "--qat-from", tmp_path)
    assert res.returncode == 2 and "no config.yaml there" in res.stderr
    res = okdhp("train", "--qat-from", tmp_path, "--resume", tmp_path)
    assert res.returncode == 2 and "give one of them" in res.stderr


# slow: its arms are `train --qat-from` runs (the qat_zoo fixture) whose INT8 files are
# exported and run on every CPU runtime (test_int8_files_run_the_program_on_every_cpu_runtime);
# its refusals stay in the default suite (test_ablation_refuses_what_it_cannot_run)
@pytest.mark.slow
def test_ablation_scores_and_reports_every_arm(qat_zoo, tiny_zoo, tmp_path):
    """The ``experiments qat`` scoring and report on real files (here, beside the QAT zoo
    it reads: one QAT run per file is what a test can afford)."""
    import argparse
    import json

    from okdhp_edge.experiments.qat import Scores, render, score_all

    args = argparse.Namespace(zoo=tiny_zoo, work_dir=tmp_path, calib_images=32)
    scores = Scores(tmp_path / "scores.json")
    score_all(args, "onnxruntime", {("qat_kd", 0): qat_zoo, ("qat_labels", 0): qat_zoo}, scores)
    kept = json.loads((tmp_path / "scores.json").read_text())
    assert set(kept) == {f"onnxruntime/{split}/{arm}/{st}" for split in ("select", "report")
                         for arm in ("fp32", "ptq", "qat_kd-s0", "qat_labels-s0")
                         for st in ("hg2", "hg3") if st == "hg3" or "qat" not in arm}
    assert all(v["value"] is not None and v["parity"] and v["files"] for v in kept.values())
    # a kept score is reused while its file is the one it was measured on, else measured again
    kept["onnxruntime/report/ptq/hg2"]["value"] = -1.0
    kept["onnxruntime/report/qat_kd-s0/hg3"].update(value=-1.0, files={"model.onnx": "0"})
    (tmp_path / "scores.json").write_text(json.dumps(kept))
    scores = Scores(tmp_path / "scores.json")
    score_all(args, "onnxruntime", {("qat_kd", 0): qat_zoo, ("qat_labels", 0): qat_zoo}, scores)
    assert scores.data["onnxruntime/report/ptq/hg2"]["value"] == -1.0
    again = scores.data["onnxruntime/report/qat_kd-s0/hg3"]
    assert again == scores.data["onnxruntime/report/qat_labels-s0/hg3"]  # the same file
    kept = scores.data
    text = render({"run": "r", "zoo": str(tiny_zoo), "seeds": [0], "overrides": [],
                   "backends": ["onnxruntime"], "scores": kept})
    row = next(line for line in text.splitlines() if line.startswith("| hg3 |"))
    assert row.count("|") == 8 and "+0.0000 [+0.0000, +0.0000]" in row  # kd - labels: same zoo
    row = next(line for line in text.splitlines() if line.startswith("| hg2 |"))
    assert row.endswith("| - | - | - | - |")  # left float: no QAT file


def test_ablation_refuses_what_it_cannot_run(tmp_path):
    res = okdhp("experiments", "qat", "--qat-from", tmp_path, "--zoo", tmp_path)
    assert res.returncode == 2 and "no last.pt there" in res.stderr


def test_qat_refusals_are_one_line_before_anything_is_loaded(tiny_zoo, tmp_path):
    """A plain run, or a model config that does not fit the run's checkpoint, is refused in
    one line naming why (it was a ValueError traceback, or a size mismatch deep in
    load_state_dict)."""
    import shutil

    import yaml

    run = _float_run(tiny_zoo)
    plain = tmp_path / "plain"
    plain.mkdir()
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    cfg["model"]["name"] = "hg2"
    (plain / "config.yaml").write_text(yaml.safe_dump(cfg))
    shutil.copy(run / "last.pt", plain / "last.pt")
    res = okdhp("train", "--qat-from", plain, f"train.out_dir={tmp_path}/runs")
    assert res.returncode == 2 and "'hg2' is a plain network" in res.stderr, res.stderr
    assert res.stderr.count("\n") == 1 and not (tmp_path / "runs").exists()
    res = okdhp("train", "--qat-from", run, "model.width=16", f"train.out_dir={tmp_path}/runs")
    assert res.returncode == 2 and "model.width is 16 here but" in res.stderr, res.stderr
    assert res.stderr.count("\n") == 1


LIGHT = ["model.name=okdhp_light", "model.width_mult=0.25", "model.decoder_widths=[8,16]",
         "model.fau_width=8", "data.input_size=[64,64]"]


@pytest.mark.slow  # a light run trained, fine-tuned and lowered (~1 min); the rewrite of a
# program itself is in the default suite
# (test_qat_quantizer.py::test_transposed_convolutions_quantize_per_output_channel)
def test_a_light_qat_students_program_exports_in_sub_pixel_form(synthetic_root, tmp_path):
    """A quantization-aware MobileNetV2 student's INT8 files in the decoder form each
    backend runs fastest: its int8 program rewritten (the same int8 weights), checked against
    the program as it was fine-tuned, and as close to it as the files of the program left
    as it is (this barely trained student's heatmaps have no peaks to judge keypoints on, so
    the two forms are compared, not the tolerance)."""
    from okdhp_edge.export.exporter import export_student
    from okdhp_edge.manifest import zoo_students
    from tests.conftest import tiny_overrides

    base = tiny_overrides(synthetic_root, tmp_path, *LIGHT, "train.epochs=1",
                          "train.max_iters_per_epoch=2")
    res = okdhp("train", *base, "train.run_name=light")
    assert res.returncode == 0, res.stderr[-3000:]
    res = okdhp("train", "--qat-from", tmp_path / "runs" / "light", *QAT,
                f"train.out_dir={tmp_path}/qruns", f"zoo.root={tmp_path}/qzoo")
    assert res.returncode == 0, res.stderr[-3000:]
    zoo = Path(next(line for line in res.stdout.splitlines() if line.startswith("zoo: "))[5:])
    d, man = next((d, m) for d, m in zoo_students(zoo) if m.qat is not None)
    fmts = ("executorch_int8", "onnx_int8")
    sub = export_student(d / "student.yaml", formats=fmts, decoder="subpixel")
    kept = export_student(d / "student.yaml", formats=fmts)
    assert sub.decoder == "subpixel" and kept.decoder == "transposed"
    for fmt in fmts:
        s, k = sub.formats[fmt], kept.formats[fmt]
        assert s.available and s.quantization.recipe == man.qat.recipe, (fmt, s.reason)
        assert abs(s.parity.real.max_abs_heatmap_err - k.parity.real.max_abs_heatmap_err) \
            <= 1e-3, (fmt, s.parity, k.parity)
    assert not sub.formats["executorch_int8"].executorch.outside_xnnpack
    assert sub.formats["executorch_int8"].sha256 != kept.formats["executorch_int8"].sha256
