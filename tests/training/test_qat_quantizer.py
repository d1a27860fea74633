"""Quantization-aware training's quantizer: what it annotates, what stays float, how a
student's operators are quantized (no QAT zoo needed: each builds its own network)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.conftest import require

require("executorch", reason="quantization-aware training needs okdhp_edge[qat]")
require("onnxscript", reason="the QDQ ONNX of a QAT program needs okdhp_edge[qat]")

from tests.training.test_qat import _float_run  # noqa: E402


class _TwoConvs(torch.nn.Module):
    """Two convolutions as QatNetwork exports a network: under the name "net"."""

    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Module()
        self.net.body = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1),
                                            torch.nn.ReLU(), torch.nn.Conv2d(8, 4, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.body(x)


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


def test_symmetric_activations_have_zero_points_of_zero():
    """qat.activations=symmetric: what TensorRT's explicit quantization reads."""
    from torchao.quantization.pt2e import FakeQuantizeBase
    from torchao.quantization.pt2e.quantize_pt2e import prepare_qat_pt2e

    from okdhp_edge.config import QatConfig
    from okdhp_edge.convert.qat_program import symmetric_activations
    from okdhp_edge.records import QatRecord, WeightsRef
    from okdhp_edge.training.qat import quantizer, recipe

    qcfg = QatConfig(activations="symmetric")
    x = torch.randn(2, 3, 8, 8)
    ep = torch.export.export(_TwoConvs().train(), (x,))
    net = prepare_qat_pt2e(ep.module(), quantizer(qcfg, ("body",)))
    net(x)
    fqs = [m for m in net.modules() if isinstance(m, FakeQuantizeBase)
           and m.qscheme == torch.per_tensor_symmetric]
    assert fqs and all(int(m.zero_point.abs().max()) == 0 for m in fqs)
    rec = QatRecord("run", recipe(qcfg, ["b"]), WeightsRef("qat_int8.pt2", ""))
    assert symmetric_activations(rec) and not symmetric_activations(
        QatRecord("run", recipe(QatConfig(), ["b"]), WeightsRef("qat_int8.pt2", "")))


def test_half_weight_range_keeps_every_weight_within_63():
    """qat.weight_range=half: the converted program's int8 weights stay within +-63, which
    no u8 x s8 kernel of a CPU without VNNI saturates on, and the recipe says so."""
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_qat_pt2e

    from okdhp_edge.config import QatConfig
    from okdhp_edge.training.qat import quantizer, recipe

    x = torch.randn(2, 3, 8, 8)
    limits = {}
    for weights in ("full", "half"):
        torch.manual_seed(0)
        net = prepare_qat_pt2e(torch.export.export(_TwoConvs().train(), (x,)).module(),
                               quantizer(QatConfig(weight_range=weights), ("body",)))
        net(x)
        converted = convert_pt2e(net, fold_quantize=True)
        limits[weights] = max(int(t.abs().max()) for t in converted.state_dict().values()
                              if t.dtype == torch.int8)
    assert limits == {"full": 127, "half": 63}, limits
    assert "7 bits" in recipe(QatConfig(weight_range="half"), ["b"])["weights"]


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

    from okdhp_edge.backends.onnxruntime import qat_rewrite
    from okdhp_edge.convert.qat_program import program_onnx, run_program
    from okdhp_edge.convert.subpixel import subpixel_program

    path = program_onnx(program, tmp_path / "m.onnx", {}, rewrite=qat_rewrite,
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
    # the program itself in sub-pixel form (LiteRT's and ExecuTorch's choice): the same int8
    # values, and XNNPACK takes all of it
    from okdhp_edge.convert.qat_program import program_in_form

    sub = program_in_form(program, "subpixel")
    assert not any("conv_transpose" in str(n.target) for n in sub.graph.nodes)
    assert np.abs(run_program(sub, xs) - run_program(program, xs)).max() <= step + 1e-6
    lowered = _lower(sub, tmp_path / "sub.pte")
    assert lowered["xnnpack_partitions"] >= 1 and not lowered["outside_xnnpack"], lowered


def test_relu6_is_quantized_as_the_convolutions_clamp(tmp_path, monkeypatch):
    """Convolution + batch norm + ReLU6 (MobileNetV2's block) quantized as one operator (the
    int8 range after the ReLU6 only), and ONNX Runtime's file of the program rewritten for
    its kernels (uint8 activations; uint8 weights too on a CPU without VNNI, whose U8S8 and
    S8S8 kernels saturate: 0.038 off on an AVX2 EPYC): every convolution fused into a
    QLinearConv, no float Clip, the program's heatmaps within a rounding step."""
    import collections
    import io

    import onnx
    import onnxruntime as ort
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_qat_pt2e

    from okdhp_edge.backends.onnxruntime import qat_rewrite
    from okdhp_edge.config import QatConfig
    from okdhp_edge.convert.qat_program import program_bytes, program_onnx, run_program
    from okdhp_edge.training.qat import quantizer
    from okdhp_edge.utils.cpu import cpu_has_int8_dot
    from tests.convert.test_pt2e import StudentBlocks

    torch.manual_seed(0)
    net = prepare_qat_pt2e(torch.export.export(StudentBlocks().train(),
                                               (torch.zeros(1, 3, 16, 16),))
                           .module(), quantizer(QatConfig(), ("body",)))
    for _ in range(4):
        net(torch.randn(1, 3, 16, 16))
    program = torch.export.load(io.BytesIO(program_bytes(convert_pt2e(net), (16, 16))))
    x = np.random.default_rng(0).standard_normal((2, 1, 3, 16, 16)).astype(np.float32)
    ref = run_program(program, x[:, 0])
    outs = {}
    from okdhp_edge.utils import cpu

    vnni = cpu_has_int8_dot()
    for name, rewrite, dot in (("s8", None, vnni), ("u8", qat_rewrite, vnni),
                               ("u8u8", qat_rewrite, False)):  # U8U8 here whatever the CPU
        monkeypatch.setattr(cpu, "cpu_has_int8_dot", lambda dot=dot: dot)
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
    assert np.abs(outs["u8"] - ref).max() <= step and np.abs(outs["u8u8"] - ref).max() <= step
    if vnni:  # the program's own s8 file is exact only where nothing saturates
        assert np.abs(outs["s8"] - ref).max() <= step


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


def test_a_cached_onnx_runtime_file_of_another_cpus_weight_form_is_rebuilt(monkeypatch):
    """A QAT zoo's export carried between a VNNI machine and one without: ONNX Runtime's
    cached INT8 file is kept only in the weight form this CPU needs (u8 where full-range
    weights would saturate it, s8 elsewhere); TensorRT's file is never rewritten."""
    from types import SimpleNamespace

    from okdhp_edge.backends.onnxruntime import QAT_U8_WEIGHTS, qat_file_fits_here
    from okdhp_edge.config import QatConfig
    from okdhp_edge.targets import FORMATS
    from okdhp_edge.training.qat import recipe
    from okdhp_edge.utils import cpu

    def entry(weights):
        return SimpleNamespace(quantization=SimpleNamespace(weights=weights))

    full, half = (SimpleNamespace(qat=SimpleNamespace(recipe=recipe(QatConfig(weight_range=w),
                                                                    ["b"])))
                  for w in ("full", "half"))
    ort = FORMATS["onnx_int8"]
    monkeypatch.setattr(cpu, "cpu_has_int8_dot", lambda: False)
    assert qat_file_fits_here(ort, entry(QAT_U8_WEIGHTS), full)
    assert not qat_file_fits_here(ort, entry(None), full)
    assert qat_file_fits_here(ort, entry(None), half)
    monkeypatch.setattr(cpu, "cpu_has_int8_dot", lambda: True)
    assert not qat_file_fits_here(ort, entry(QAT_U8_WEIGHTS), full)
    assert qat_file_fits_here(ort, entry(None), full)
    trt = next(f for f in FORMATS.values() if f.runs_on == "tensorrt" and f.precision == "int8")
    assert qat_file_fits_here(trt, entry(None), full)
