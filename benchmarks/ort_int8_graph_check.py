"""Why ONNX Runtime's QDQ INT8 loses to fp32 on the reference zoo's hg4 (AVX2, no VNNI):
the graph ONNX Runtime actually runs, and the time of each variant, one thread, interleaved.

    python benchmarks/ort_int8_graph_check.py student_zoo/synthetic_full/hg4/export/model.onnx

Variants: the fp32 file; the U8S8 QDQ file as the kit makes it (random calibration: the
graph and the latency, not the accuracy, are the question); and both again after rewriting
every BatchNormalization into Mul + Add, which the quantizer turns into QLinearMul /
QLinearAdd (a pre-activation hourglass has one BatchNorm per residual block that no
convolution precedes, so none of them folds). Findings: docs/int8.md.
"""

from __future__ import annotations

import collections
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper, numpy_helper
from onnxruntime.quantization import (
    CalibrationDataReader,
    QuantFormat,
    QuantType,
    quantize_static,
)


def bn_to_mul_add(src: Path, dst: Path) -> None:
    """Every BatchNormalization as x * s + t with per-channel constants."""
    m = onnx.load(str(src))
    g = m.graph
    inits = {i.name: i for i in g.initializer}
    nodes = []
    for n in g.node:
        if n.op_type != "BatchNormalization":
            nodes.append(n)
            continue
        x, s, b, mu, var = n.input
        eps = next((a.f for a in n.attribute if a.name == "epsilon"), 1e-5)
        gamma, beta, mean, v = (numpy_helper.to_array(inits[k]) for k in (s, b, mu, var))
        scale = (gamma / np.sqrt(v + eps)).astype(np.float32)
        shift = (beta - mean * scale).astype(np.float32)
        out = n.output[0]
        g.initializer.extend([numpy_helper.from_array(scale.reshape(1, -1, 1, 1), out + "_s"),
                              numpy_helper.from_array(shift.reshape(1, -1, 1, 1), out + "_t")])
        nodes += [helper.make_node("Mul", [x, out + "_s"], [out + "_m"]),
                  helper.make_node("Add", [out + "_m", out + "_t"], [out])]
    del g.node[:]
    g.node.extend(nodes)
    onnx.save(m, str(dst))


class _Random(CalibrationDataReader):
    def __init__(self, name: str, shape: tuple[int, ...]) -> None:
        rng = np.random.default_rng(0)
        self.items = iter([{name: rng.standard_normal(shape).astype(np.float32)}
                           for _ in range(16)])

    def get_next(self):
        return next(self.items, None)


def quantize(src: Path, dst: Path, shape: tuple[int, ...]) -> None:
    """U8S8 QDQ, per-channel weights: the kit's ONNX Runtime recipe."""
    name = onnx.load(str(src)).graph.input[0].name
    quantize_static(str(src), str(dst), _Random(name, shape), quant_format=QuantFormat.QDQ,
                    per_channel=True, activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8,
                    extra_options={"ActivationSymmetric": False, "WeightSymmetric": True})


def session(path: Path, tmp: Path) -> tuple[ort.InferenceSession, collections.Counter]:
    """A one-thread session and the op counts of the graph it runs."""
    so = ort.SessionOptions()
    so.intra_op_num_threads = so.inter_op_num_threads = 1
    so.optimized_model_filepath = str(tmp / f"optimized_{path.name}")
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    ops = collections.Counter(n.op_type for n in onnx.load(so.optimized_model_filepath).graph.node)
    return sess, ops


def main() -> None:
    src = Path(sys.argv[1])
    tmp = Path(tempfile.mkdtemp())
    dims = [d.dim_value for d in onnx.load(str(src)).graph.input[0].type.tensor_type.shape.dim]
    shape = tuple(dims)
    bn_to_mul_add(src, tmp / "mul_add.onnx")
    quantize(src, tmp / "int8.onnx", shape)
    quantize(tmp / "mul_add.onnx", tmp / "int8_mul_add.onnx", shape)
    files = {"fp32": src, "fp32, BN as Mul+Add": tmp / "mul_add.onnx",
             "int8 U8S8": tmp / "int8.onnx", "int8 U8S8, BN as Mul+Add": tmp / "int8_mul_add.onnx"}
    sessions = {}
    for k, f in files.items():
        sessions[k], ops = session(f, tmp)
        print(f"{k}: {dict(ops.most_common(8))}")
    x = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
    feed = {sessions["fp32"].get_inputs()[0].name: x}
    times: dict[str, list[float]] = collections.defaultdict(list)
    for s in sessions.values():
        for _ in range(20):
            s.run(None, feed)
    for _ in range(6):  # interleaved rounds
        for k, s in sessions.items():
            for _ in range(40):
                t0 = time.perf_counter()
                s.run(None, feed)
                times[k].append(time.perf_counter() - t0)
    base = float(np.median(times["fp32"]))
    ref = sessions["fp32"].run(None, feed)[0]
    for k, s in sessions.items():
        med = float(np.median(times[k]))
        err = float(np.abs(s.run(None, feed)[0] - ref).max())
        print(f"{k:28s} {1e3 * med:7.2f} ms  x fp32 {med / base:.2f}  max |heatmap diff| {err:.3g}")


if __name__ == "__main__":
    main()
