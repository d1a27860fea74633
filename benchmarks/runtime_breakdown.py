"""Where the mobile runtimes spend their time, on untrained students (latency only).

For a light student (MobileNetV2 encoder + deconvolution decoder, 256x192) it times the
encoder alone, the decoder alone and the whole student in fp32 on ONNX Runtime, OpenVINO,
LiteRT and ExecuTorch, interleaved, at batch 1; a paper-width HG-2 on the same runtimes
and on ExecuTorch with its upsamplings as concatenations (the exporter's form); for both
a light student and a stacked hourglass it lists what each XNNPACK lowering leaves outside
XNNPACK (those operators run on the runtime's own kernels and split the graph into several
delegate partitions).

    python benchmarks/runtime_breakdown.py [--threads 2] [--decoder-width 256] [--rounds 3]

Needs the ``litert`` and ``executorch`` extras. Prints a Markdown table; no files kept.
"""

from __future__ import annotations

import argparse
import collections
import re
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from okdhp_edge.models.hourglass import StackedHourglass
from okdhp_edge.models.light import EncoderDecoder


class _Part(torch.nn.Module):
    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x)


def _runners(module: torch.nn.Module, x: torch.Tensor, tmp: Path, threads: int
             ) -> dict[str, Callable[[], Any]]:
    """One fp32 call of ``module`` on ``x`` per runtime."""
    import litert_torch
    import onnxruntime as ort
    import openvino as ov
    from ai_edge_litert.interpreter import Interpreter

    onnx_path, tfl = tmp / "m.onnx", tmp / "m.tflite"
    torch.onnx.export(module, (x,), str(onnx_path), opset_version=17, dynamo=False)
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    sess = ort.InferenceSession(str(onnx_path), so, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    compiled = ov.Core().compile_model(str(onnx_path), "CPU", {
        "INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": threads,
        "PERFORMANCE_HINT": "LATENCY"})
    request = compiled.create_infer_request()
    litert_torch.convert(module, (x,)).export(str(tfl))
    interp = Interpreter(model_path=str(tfl), num_threads=threads)
    interp.allocate_tensors()
    interp.set_tensor(interp.get_input_details()[0]["index"], x.numpy())
    xn = x.numpy()
    return {"onnxruntime": lambda: sess.run(None, {name: xn}),
            "openvino": lambda: request.infer({0: xn}),
            "litert": interp.invoke,
            "executorch": _executorch_call(module, x, threads)}


def _executorch_call(module: torch.nn.Module, x: torch.Tensor, threads: int
                     ) -> Callable[[], Any]:
    """One fp32 call of ``module`` lowered to ExecuTorch's XNNPACK."""
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower
    from executorch.extension.pybindings import portable_lib
    from executorch.runtime import Runtime

    if portable_lib._threadpool_get_thread_count() != threads:  # noqa: SLF001
        portable_lib._unsafe_reset_threadpool(threads)  # noqa: SLF001 - before any load
    edge = to_edge_transform_and_lower(torch.export.export(module, (x,)),
                                       partitioner=[XnnpackPartitioner()])
    program = Runtime.get().load_program(bytes(edge.to_executorch().buffer))
    method = program.load_method("forward")  # the program must outlive its method
    return lambda: (program, method.execute([x]))


def _interleaved(calls: dict[str, Callable[[], Any]], rounds: int, iters: int
                 ) -> dict[str, float]:
    for fn in calls.values():
        for _ in range(5):
            fn()
    samples: dict[str, list[float]] = collections.defaultdict(list)
    for _ in range(rounds):
        for key, fn in calls.items():
            for _ in range(iters):
                t = time.perf_counter()
                fn()
                samples[key].append((time.perf_counter() - t) * 1e3)
    return {k: float(np.median(v)) for k, v in samples.items()}


def outside_xnnpack(module: torch.nn.Module, x: torch.Tensor, tmp: Path) -> dict[str, Any]:
    """Operators each lowering leaves outside XNNPACK, and its partition count."""
    import litert_torch
    from ai_edge_litert.interpreter import Interpreter
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    edge = to_edge_transform_and_lower(torch.export.export(module, (x,)),
                                       partitioner=[XnnpackPartitioner()])
    nodes = [n for n in edge.exported_program().graph_module.graph.nodes
             if n.op == "call_function" and "getitem" not in str(n.target)]
    et = collections.Counter((re.findall(r"aten\.[\w.]+", str(n.target)) or [str(n.target)])[0]
                             for n in nodes)
    litert_torch.convert(module, (x,)).export(str(tmp / "o.tflite"))
    interp = Interpreter(model_path=str(tmp / "o.tflite"))
    interp.allocate_tensors()
    ops = collections.Counter(o["op_name"] for o in interp._get_ops_details())  # noqa: SLF001
    # the interpreter lists the original operators beside its delegate nodes: only the count
    # of XNNPACK partitions says how the graph was split
    return {"executorch": dict(et), "litert_partitions": ops.get("DELEGATE", 0)}


def _print_hourglass_upsampling(hg: StackedHourglass, x: torch.Tensor, tmp: Path,
                                args: argparse.Namespace) -> None:
    """HG-2 on every runtime, and on ExecuTorch once more with its nearest upsamplings
    written as concatenations (what the exporter lowers), interleaved."""
    import copy

    from okdhp_edge.models.blocks import NearestUp

    by_copy = copy.deepcopy(hg)
    for m in by_copy.modules():
        if isinstance(m, NearestUp):
            m.by_copy = True
    (tmp / "hg").mkdir()
    calls = _runners(_Part(lambda t: hg(t).heatmap).eval(), x, tmp / "hg", args.threads)
    calls["executorch, upsample by copy"] = _executorch_call(
        _Part(lambda t: by_copy(t).heatmap).eval(), x, args.threads)
    ms = _interleaved(calls, args.rounds, args.iters)
    print("\n| hg2 (paper width) | " + " | ".join(ms) + " |")
    print("|---" * (len(ms) + 1) + "|")
    print("| fp32 | " + " | ".join(f"{v:.2f} ms" for v in ms.values()) + " |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--decoder-width", type=int, default=256)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--iters", type=int, default=20)
    args = p.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    light = EncoderDecoder("mobilenetv2", 1.0, args.decoder_width, 3, 17).eval()
    light.requires_grad_(False)
    x = torch.randn(1, 3, 256, 192)
    with torch.no_grad():
        feat = light.encoder(x)
    whole = f"mbv2-d{args.decoder_width} (whole)"
    parts = {"encoder": (_Part(light.encoder), x), "decoder": (_Part(light.decoder), feat),
             whole: (_Part(lambda t: light(t).heatmap), x)}
    rows = []
    with tempfile.TemporaryDirectory() as d:
        for label, (module, inp) in parts.items():
            sub = Path(d) / label.split()[0]
            sub.mkdir()
            ms = _interleaved(_runners(module.eval(), inp, sub, args.threads), args.rounds,
                              args.iters)
            rows.append((label, ms))
        print("| part | " + " | ".join(rows[0][1]) + " |")
        print("|---" * (len(rows[0][1]) + 1) + "|")
        for label, ms in rows:
            print(f"| {label} | " + " | ".join(f"{v:.2f} ms" for v in ms.values()) + " |")
        hg = StackedHourglass(2, 17, 256, 4, 64).eval().requires_grad_(False)
        _print_hourglass_upsampling(hg, x, Path(d), args)
        for label, module in (("hg2 (paper width)", _Part(lambda t: hg(t).heatmap)),
                              (whole, parts[whole][0])):
            sub = Path(d) / "o"
            sub.mkdir(exist_ok=True)
            print(f"\n{label}, left outside XNNPACK:", outside_xnnpack(module.eval(), x, sub))


if __name__ == "__main__":
    main()
