"""INT8 against fp32 latency, batch 1, 2 threads, random weights (latency only): the reference
zoo's largest student (width-48 hg4 at 96x128) and the paper-width HG-2 at 256x192, on
OpenVINO (NNCF) and ONNX Runtime, with the ONNX Runtime QDQ variants tried to find why QDQ
can lose to fp32 at small sizes. One interleaved run per model; ratios, not absolute times.

Run: pytest benchmarks/test_bench_int8.py --benchmark-only -s
Writes bench/reports/<device-id>/int8_latency.{json,md}.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from okdhp_edge.backends.openvino import export_openvino, quantize_openvino
from okdhp_edge.bench.device import device_id, fingerprint
from okdhp_edge.bench.timing import TimingConfig, interleaved, summarize
from okdhp_edge.convert.onnx_export import export_onnx
from okdhp_edge.convert.quantize import QuantRecipe
from okdhp_edge.models import create_model
from okdhp_edge.runtime import make_runner
from okdhp_edge.utils.io import atomic_write_json, atomic_write_text

THREADS = 2
MODELS = {
    "hg4 w48 96x128 (synthetic_full's largest)": (
        dict(name="hg4", width=48, stem_width=32, depth=3, stem="lua"), (96, 128),
        TimingConfig(warmup_iters=20, warmup_s=1.0, min_iters=150, min_time_s=4.0, rounds=3)),
    "hg2 w256 256x192 (paper width)": (
        dict(name="hg2", width=256), (192, 256),
        TimingConfig(warmup_iters=3, warmup_s=1.0, min_iters=15, min_time_s=4.0, rounds=3)),
}
# ONNX Runtime QDQ variants: the product's (S8S8 symmetric, every op, the file TensorRT
# reads) and what was tried against it
ORT_VARIANTS = {
    "s8s8 all ops (default)": dict(),
    "s8s8 conv only": dict(op_types_to_quantize=["Conv"]),
    "u8s8 all ops": dict(activation="u8"),
    "s8s8 after quant_pre_process": dict(pre_process=True),
}
RESULTS: dict[str, dict] = {}


def _ort_quantize(src: Path, dst: Path, images: np.ndarray, op_types_to_quantize=None,
                  activation: str = "s8", pre_process: bool = False) -> Path:
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quant_pre_process,
        quantize_static,
    )

    if pre_process:
        pre = dst.with_name(dst.stem + "_pre.onnx")
        quant_pre_process(str(src), str(pre))
        src = pre

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter(images[i:i + 1] for i in range(len(images)))

        def get_next(self):
            x = next(self.it, None)
            return None if x is None else {"input": x}

    act = QuantType.QInt8 if activation == "s8" else QuantType.QUInt8
    quantize_static(str(src), str(dst), Reader(), quant_format=QuantFormat.QDQ,
                    per_channel=True, activation_type=act, weight_type=QuantType.QInt8,
                    op_types_to_quantize=op_types_to_quantize,
                    extra_options={"ActivationSymmetric": activation == "s8",
                                   "WeightSymmetric": True})
    return dst


def _files(tmp: Path, spec: dict, size: tuple[int, int]) -> dict[str, tuple[str, str, Path]]:
    torch.manual_seed(0)
    kwargs = dict(spec)
    m = create_model(kwargs.pop("name"), **kwargs).eval()
    onnx_path = export_onnx(m, tmp / "model.onnx", size, {"okdhp_student": "int8-bench"})
    images = np.random.default_rng(0).standard_normal((32, 3, size[1], size[0])).astype(
        np.float32)
    files = {"ONNX Runtime fp32": ("onnxruntime", "fp32", onnx_path),
             "OpenVINO f32": ("openvino", "fp32", export_openvino(onnx_path, tmp / "ov" /
                                                                   "model.xml"))}
    quantize_openvino(onnx_path, tmp / "ov_int8" / "model.xml", images,
                      QuantRecipe(num_images=32))
    files["OpenVINO INT8 (NNCF)"] = ("openvino", "int8", tmp / "ov_int8" / "model.xml")
    for name, v in ORT_VARIANTS.items():
        dst = _ort_quantize(onnx_path, tmp / f"ort_{len(files)}.onnx", images, **v)
        files[f"ONNX Runtime INT8 {name}"] = ("onnxruntime", "int8", dst)
    return files


def _size(path: Path) -> int:
    return path.stat().st_size + (path.with_suffix(".bin").stat().st_size
                                  if path.suffix == ".xml" else 0)


@pytest.mark.parametrize("model", list(MODELS))
def test_int8_latency(benchmark, model, tmp_path):
    spec, size, cfg = MODELS[model]
    files = _files(tmp_path, spec, size)
    x = np.random.default_rng(1).standard_normal((1, 3, size[1], size[0])).astype(np.float32)
    runners = {}
    for name, (backend, precision, path) in files.items():
        runners[name] = make_runner(backend, precision, THREADS)
        runners[name].load(str(path))
    fns = {name: (lambda r=r: r.run(x)) for name, r in runners.items()}
    samples = benchmark.pedantic(lambda: interleaved(fns, cfg), rounds=1, iterations=1)
    med = {k: summarize(v)["median"] for k, v in samples.items()}
    rows = {}
    for name, (backend, _, path) in files.items():
        ref = "OpenVINO f32" if backend == "openvino" else "ONNX Runtime fp32"
        rows[name] = {"median_ms": med[name], "vs_fp32": med[name] / med[ref],
                      "file_bytes": _size(path), "file_vs_fp32": _size(path) / _size(
                          files[ref][2])}
        print(f"{model}: {name:45s} {med[name]:8.2f} ms  x{rows[name]['vs_fp32']:.2f} of fp32"
              f"  file x{rows[name]['file_vs_fp32']:.2f}")
    for r in runners.values():
        r.close()
    RESULTS[model] = rows
    benchmark.extra_info.update(rows)
    _write()


def _write() -> None:
    fp = fingerprint(THREADS)
    out = Path("bench/reports") / device_id(fp) / "int8_latency"
    atomic_write_json(out.with_suffix(".json"), {"device": fp, "threads": THREADS,
                                                 "batch": 1, "results": RESULTS})
    lines = ["# INT8 against fp32: latency (batch 1, random weights) and file size", "",
             f"Device `{device_id(fp)}` ({fp['cpu_model']}, {fp['cores']} cores, flags "
             f"{', '.join(fp['cpu_flags'])}), {THREADS} threads, engine median of one "
             "interleaved run per model; "
             "`pytest benchmarks/test_bench_int8.py --benchmark-only -s`.",
             ""]
    for model, rows in RESULTS.items():
        lines += [f"## {model}", "", "| file | median ms | x fp32 | file x fp32 |",
                  "|---|---|---|---|"]
        lines += [f"| {k} | {v['median_ms']:.2f} | {v['vs_fp32']:.2f} | "
                  f"{v['file_vs_fp32']:.2f} |" for k, v in rows.items()]
        lines.append("")
    atomic_write_text(out.with_suffix(".md"), "\n".join(lines))
    print(json.dumps({m: {k: round(v["vs_fp32"], 3) for k, v in r.items()}
                      for m, r in RESULTS.items()}))
