"""Quantization-aware online distillation: a tiny OKDHP run fine-tuned fake-quantized, its
zoo of int8 programs, their INT8 files on ONNX Runtime and OpenVINO, resume mid-run."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import okdhp

pytest.importorskip("executorch", reason="quantization-aware training needs okdhp_edge[qat]")
pytest.importorskip("onnxscript", reason="the QDQ ONNX of a QAT program needs okdhp_edge[qat]")

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
    ("onnx_int8", "onnxruntime"), ("openvino_int8", "openvino"),
    # slow: LiteRT's conversion of the program (~20 s); LiteRT's PT2E INT8 path stays in the
    # default suite (test_litert.py::test_mobilenetv2_int8_through_pt2e_matches_its_float_student)
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
    assert entry.recipe == man.qat.recipe and entry.quantizer == "xnnpack-pt2e-qat"
    assert entry.calibration is None  # made from the program, not calibrated here
    with make_runner(backend, "int8") as runner:
        runner.load(str(d / "export" / entry.file))
        out = np.concatenate([runner.run(x[i:i + 1]) for i in range(len(x))])
    assert np.abs(out - ref).max() <= TOLERANCE["int8"][0]
    again = export_student(d / "student.yaml", formats=(fmt,))  # cached: the same file
    assert again.formats[fmt].sha256 == entry.sha256


def test_fau_and_ensemble_stay_float(tiny_zoo):
    """The FAU and the ensemble's weighted sum compute in float (on the students' tensors,
    which are quantized as the students deploy them)."""
    from okdhp_edge.config import load_config
    from okdhp_edge.models.registry import create_model, model_kwargs_from_config
    from okdhp_edge.training.qat import QatNetwork, _module_path

    cfg = load_config(base=_float_run(tiny_zoo) / "config.yaml")
    net = create_model(cfg.model.name, **model_kwargs_from_config(cfg.model, 17))
    qnet = QatNetwork(net, (32, 32), cfg.qat)
    fq = [n for n in qnet.graph.graph.nodes if n.op == "call_module"
          and "activation_post_process" in str(n.target)]
    assert fq
    students = tuple(f"net.{m}." for b in range(2) for m in net.student_modules(b))
    for node in fq:  # every quantized value is made by a student's operator (or is an input)
        made_by = node.args[0]
        if made_by.op == "call_function":
            assert (_module_path(made_by) + ".").startswith(students), (node, made_by)
    assert set(qnet.float_state()) == set(net.state_dict())
    snapshot = {k: v.clone() for k, v in qnet.state_dict().items()}
    assert set(qnet.float_state(snapshot)) == set(net.state_dict())
    out = qnet.eval()(torch.zeros(2, 3, 32, 32))
    assert len(out.branch_heatmaps) == 2 and out.weights.shape == (2, 2, 17)


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


def test_symmetric_activations_have_zero_points_of_zero():
    """qat.activations=symmetric: what TensorRT's explicit quantization reads."""
    from torch import nn
    from torchao.quantization.pt2e import FakeQuantizeBase
    from torchao.quantization.pt2e.quantize_pt2e import prepare_qat_pt2e

    from okdhp_edge.config import QatConfig
    from okdhp_edge.convert.qat_program import symmetric_activations
    from okdhp_edge.records import QatRecord, WeightsRef
    from okdhp_edge.training.qat import quantizer, recipe

    class Net(nn.Module):  # as QatNetwork exports: the network under the name "net"
        def __init__(self) -> None:
            super().__init__()
            self.net = nn.Module()
            self.net.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(),
                                          nn.Conv2d(8, 4, 1))

        def forward(self, x):
            return self.net.body(x)

    qcfg = QatConfig(activations="symmetric")
    x = torch.randn(2, 3, 8, 8)
    ep = torch.export.export(Net().train(), (x,))
    net = prepare_qat_pt2e(ep.module(), quantizer(qcfg, ("body",)))
    net(x)
    fqs = [m for m in net.modules() if isinstance(m, FakeQuantizeBase)
           and m.qscheme == torch.per_tensor_symmetric]
    assert fqs and all(int(m.zero_point.abs().max()) == 0 for m in fqs)
    rec = QatRecord("run", recipe(qcfg, ["b"]), WeightsRef("qat_int8.pt2", ""))
    assert symmetric_activations(rec) and not symmetric_activations(
        QatRecord("run", recipe(QatConfig(), ["b"]), WeightsRef("qat_int8.pt2", "")))


def test_transposed_convolutions_quantize_per_output_channel(tmp_path):
    """A transposed convolution's weights [C_in, C_out, k, k] are quantized per output
    channel (axis 1) in the converted program, and ExecuTorch lowers it to XNNPACK (axis 0,
    what torchao's QAT path made of XNNPACK's annotation, does not lower)."""
    import io

    from torch import nn
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_qat_pt2e

    from okdhp_edge.backends.executorch import _lower
    from okdhp_edge.config import QatConfig
    from okdhp_edge.convert.qat_program import program_bytes
    from okdhp_edge.training.qat import quantizer

    class Net(nn.Module):  # a decoder's upsampling step, under the name "net"
        def __init__(self) -> None:
            super().__init__()
            self.net = nn.Module()
            self.net.body = nn.Sequential(
                nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(),
                nn.ConvTranspose2d(8, 4, 4, 2, 1, bias=False), nn.BatchNorm2d(4), nn.ReLU())

        def forward(self, x):
            return (self.net.body(x),)

    x = torch.randn(1, 3, 8, 8)  # the batch the program is traced at
    net = prepare_qat_pt2e(torch.export.export(Net().train(), (x,)).module(),
                           quantizer(QatConfig(), ("body",)))
    net(x)
    converted = convert_pt2e(net)
    axes = {tuple(getattr(converted, n.args[0].target).shape): n.args[3]
            for n in converted.graph.nodes if "dequantize_per_channel" in str(n.target)}
    assert axes == {(8, 3, 3, 3): 0, (8, 4, 4, 4): 1}, axes
    program = torch.export.load(io.BytesIO(program_bytes(converted, (8, 8))))
    lowered = _lower(program, tmp_path / "m.pte")
    assert lowered["xnnpack_partitions"] >= 1 and not any(
        "dequantize_per_channel" in op for op in lowered["outside_xnnpack"]), lowered
    # ONNX Runtime's file: the transposed convolution as a sub-pixel one (no quantized
    # ConvTranspose there), the same int8 weights rearranged, the program's outputs
    import onnx
    import onnxruntime as ort

    from okdhp_edge.backends.onnxruntime import _uint8_activations
    from okdhp_edge.convert.qat_program import program_onnx, run_program
    from okdhp_edge.convert.subpixel import subpixel_program

    path = program_onnx(program, tmp_path / "m.onnx", {}, rewrite=_uint8_activations,
                        module_rewrite=subpixel_program)
    ops = [n.op_type for n in onnx.load(str(path)).graph.node]
    assert "DepthToSpace" in ops and "ConvTranspose" not in ops
    xs = torch.randn(3, 3, 8, 8, generator=torch.Generator().manual_seed(0)).numpy()
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = np.concatenate([sess.run(None, {sess.get_inputs()[0].name: xs[i:i + 1]})[0]
                          for i in range(len(xs))])
    step = float(max(n.args[1] for n in converted.graph.nodes
                     if "quantize_per_tensor" in str(n.target)))
    assert np.abs(got - run_program(program, xs)).max() <= step + 1e-6


def test_relu6_is_quantized_as_the_convolutions_clamp(tmp_path):
    """Convolution + batch norm + ReLU6 (MobileNetV2's block) quantized as one operator (the
    int8 range after the ReLU6 only), and ONNX Runtime's file of the program rewritten for
    its kernels (uint8 activations): every convolution fused into a QLinearConv, no float
    Clip, the program's heatmaps within a rounding step."""
    import collections
    import io

    import onnx
    import onnxruntime as ort
    from torch import nn
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_qat_pt2e

    from okdhp_edge.backends.onnxruntime import _uint8_activations
    from okdhp_edge.config import QatConfig
    from okdhp_edge.convert.qat_program import program_bytes, program_onnx, run_program
    from okdhp_edge.training.qat import quantizer

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = nn.Module()
            self.net.body = nn.Sequential(
                nn.Conv2d(3, 8, 3, 1, 1, bias=False), nn.BatchNorm2d(8), nn.ReLU6(),
                nn.Conv2d(8, 8, 3, 1, 1, groups=8, bias=False), nn.BatchNorm2d(8), nn.ReLU6(),
                nn.ConvTranspose2d(8, 8, 4, 2, 1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
                nn.Conv2d(8, 4, 1))

        def forward(self, x):
            return (self.net.body(x),)

    torch.manual_seed(0)
    net = prepare_qat_pt2e(torch.export.export(Net().train(), (torch.zeros(1, 3, 16, 16),))
                           .module(), quantizer(QatConfig(), ("body",)))
    for _ in range(4):
        net(torch.randn(1, 3, 16, 16))
    program = torch.export.load(io.BytesIO(program_bytes(convert_pt2e(net), (16, 16))))
    x = np.random.default_rng(0).standard_normal((2, 1, 3, 16, 16)).astype(np.float32)
    ref = run_program(program, x[:, 0])
    outs = {}
    for name, rewrite in (("s8", None), ("u8", _uint8_activations)):
        path = program_onnx(program, tmp_path / f"{name}.onnx", {}, rewrite=rewrite)
        opts = ort.SessionOptions()
        opts.optimized_model_filepath = str(tmp_path / f"{name}_optimised.onnx")
        sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        outs[name] = np.concatenate([sess.run(None, {sess.get_inputs()[0].name: xi})[0]
                                     for xi in x])
    graph = onnx.load(str(tmp_path / "u8_optimised.onnx")).graph
    ops = collections.Counter(n.op_type for n in graph.node)
    assert ops["QLinearConv"] == 3 and not ops["Clip"] and not ops["Conv"], ops
    step = 0.05 * np.abs(ref).max()
    assert np.abs(outs["u8"] - ref).max() <= step and np.abs(outs["s8"] - ref).max() <= step


def test_branches_left_float_compute_in_float(tiny_zoo, tmp_path):
    """qat.branches=[hg2]: hg2 (stem, shared stacks, its own chain) is fake-quantized, hg3's
    own chain computes in float (the qat_zoo fixture: such a branch stays out of the zoo)."""
    from okdhp_edge.config import load_config
    from okdhp_edge.errors import ConfigError
    from okdhp_edge.models.registry import create_model, model_kwargs_from_config
    from okdhp_edge.training.qat import QatNetwork, QatTrainer, _module_path, qat_run_config

    run = _float_run(tiny_zoo)
    over = [f"qat.from_run={run}", "train.threads=1", f"train.out_dir={tmp_path}"]
    with pytest.raises(ConfigError, match="no student 'hg22'.*did you mean 'hg2'"):
        QatTrainer(qat_run_config(load_config(overrides=[*over, "qat.branches=[hg22]"],
                                              base=run / "config.yaml")))
    assert not list(tmp_path.iterdir())  # refused before the run folder
    cfg = load_config(overrides=["qat.branches=[hg2]"], base=run / "config.yaml")
    net = create_model(cfg.model.name, **model_kwargs_from_config(cfg.model, 17))
    qnet = QatNetwork(net, (32, 32), cfg.qat)
    assert qnet.quantized == [0] and qnet.quantized_names() == ["hg2"]
    made_by = [_module_path(n.args[0]) for n in qnet.graph.graph.nodes
               if n.op == "call_module" and "activation_post_process" in str(n.target)
               and n.args[0].op == "call_function"]
    assert any(p.startswith("net.branch_stacks.0.") for p in made_by)
    assert not any(p.startswith(("net.branch_stacks.1.", "net.fau")) for p in made_by)


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
