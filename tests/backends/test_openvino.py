"""OpenVINO's IR of a QDQ ONNX runs the QDQ arithmetic: a PT2E int8 program of a MobileNetV2-
like stack (1x1 expand, ReLU6, depthwise stride 2, ReLU6, 1x1 project), converted to its IR
through the kit's path, against the program in PyTorch."""

from __future__ import annotations

import io

import numpy as np

from tests.conftest import require

require("openvino")
require("executorch", reason="the XNNPACK quantizer comes with okdhp_edge[qat]")
require("onnxscript", reason="the QDQ ONNX of a program needs okdhp_edge[qat]")


def _program(seed: int = 0, weight_limit: int = 127):
    """A converted PT2E program (XNNPACK's quantizer: int8 per-channel weights within
    +-``weight_limit``, int8 asymmetric per-tensor activations) returning a 1-tuple, as a
    student's program does."""
    import dataclasses

    import torch
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )
    from torch import nn
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    from okdhp_edge.convert.qat_program import program_bytes

    torch.manual_seed(seed)

    def block(cin: int, c: int, stride: int) -> list:
        return [nn.Conv2d(cin, c, 1), nn.BatchNorm2d(c), nn.ReLU6(),
                nn.Conv2d(c, c, 3, stride, 1, groups=c), nn.BatchNorm2d(c), nn.ReLU6(),
                nn.Conv2d(c, 8, 1)]

    class Tuple(nn.Module):
        def __init__(self, body: nn.Module) -> None:
            super().__init__()
            self.body = body

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor]:
            return (self.body(x),)

    net = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.ReLU6(), *block(8, 16, 1),
                        *block(8, 24, 2)).eval()
    graph = torch.export.export(net, (torch.zeros(1, 3, 32, 32),)).module()
    config = get_symmetric_quantization_config(is_per_channel=True)
    config = dataclasses.replace(config, weight=dataclasses.replace(
        config.weight, quant_min=-weight_limit, quant_max=weight_limit))
    quantizer = XNNPACKQuantizer().set_global(config)
    prepared = prepare_pt2e(graph, quantizer)
    for _ in range(8):
        prepared(2 * torch.randn(1, 3, 32, 32))
    data = program_bytes(Tuple(convert_pt2e(prepared)), (32, 32))
    return torch.export.load(io.BytesIO(data))


def test_qdq_ir_runs_the_programs_arithmetic(tmp_path):
    """With weights this CPU's int8 kernels do not saturate on: full-range on a CPU with
    VNNI, within +-63 without (qat.weight_range=half; full-range weights were 28 output steps
    off on an AVX2 EPYC, which the builder warns of: test_saturation_is_told_by_the_cpu)."""
    import onnx
    from onnx import numpy_helper

    from okdhp_edge.backends.openvino import file_metadata, qdq_ir
    from okdhp_edge.convert.qat_program import (
        SATURATION_FREE_WEIGHT,
        program_onnx,
        run_program,
    )
    from okdhp_edge.runtime import make_runner
    from okdhp_edge.utils.cpu import cpu_has_int8_dot

    program = _program(weight_limit=127 if cpu_has_int8_dot() else SATURATION_FREE_WEIGHT)
    onnx_path = program_onnx(program, tmp_path / "q.onnx", {"okdhp_probe": "kept"})
    xml = qdq_ir(onnx_path, tmp_path / "ir" / "model.xml")
    assert file_metadata(xml) == {"okdhp_probe": "kept"}
    x = 2 * np.random.default_rng(1).standard_normal((2, 3, 32, 32)).astype(np.float32)
    ref = run_program(program, x)
    with make_runner("openvino", "int8") as runner:
        runner.load(str(xml))
        out = np.concatenate([runner.run(x[i:i + 1]) for i in range(len(x))])
    model = onnx.load(str(onnx_path))
    last_q = [n for n in model.graph.node if n.op_type == "QuantizeLinear"][-1]
    step = float(numpy_helper.to_array(
        next(i for i in model.graph.initializer if i.name == last_q.input[1])))
    off = (out - ref) / step  # in the output's int8 steps
    # ov.convert_model's graph of this file: up to 2 steps off, mean -0.07 (OpenVINO 2026.4)
    assert np.abs(off).max() <= 0.5 and abs(off.mean()) < 0.01, (off.max(), off.mean())


def test_saturation_is_told_by_the_cpu(tmp_path, monkeypatch):
    """Full-range int8 weights saturate a CPU without VNNI, weights within +-63 never, and
    nothing saturates one with VNNI (what the QAT builders of OpenVINO and ONNX Runtime
    read)."""
    import onnx

    from okdhp_edge.convert.qat_program import program_onnx, saturates_here
    from okdhp_edge.utils import cpu

    models = {limit: onnx.load(str(program_onnx(_program(weight_limit=limit),
                                                tmp_path / f"{limit}.onnx", {})))
              for limit in (127, 63)}
    monkeypatch.setattr(cpu, "cpu_has_int8_dot", lambda: False)
    assert saturates_here(models[127]) and not saturates_here(models[63])
    monkeypatch.setattr(cpu, "cpu_has_int8_dot", lambda: True)
    assert not saturates_here(models[127])
