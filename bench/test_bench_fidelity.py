"""Harness fidelity: for the same model file, precision and threads, our OpenVINO median
is within 5% of `benchmark_app -hint latency -api sync`, and our ONNX Runtime median within
5% of a bare `InferenceSession.run` loop.

Run: pytest bench/test_bench_fidelity.py --benchmark-only -s
The figures are stored in extra_info and printed; the README quotes them.
"""

import json
import re
import shutil
import subprocess
import time

import numpy as np
import pytest
import torch

from okdhp_edge.bench.timing import TimingConfig, interleaved, summarize
from okdhp_edge.export.onnx_export import export_onnx
from okdhp_edge.export.openvino_export import export_openvino
from okdhp_edge.models import create_model
from okdhp_edge.runtime import make_runner

THREADS = 1
SIZE = (96, 128)
CFG = TimingConfig(warmup_iters=20, warmup_s=1.0, min_iters=200, min_time_s=6.0, rounds=3)


@pytest.fixture(scope="module")
def model_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("fidelity")
    torch.manual_seed(0)
    m = create_model("hg4", width=32, stem_width=32, depth=3).eval()
    onnx_path = export_onnx(m, d / "model.onnx", SIZE, {"okdhp_student": "fidelity"})
    xml = export_openvino(onnx_path, d / "ov" / "model.xml")
    return onnx_path, xml


def _ours(backend, path):
    r = make_runner(backend, "fp32", THREADS)
    r.load(str(path))
    x = np.random.default_rng(0).standard_normal((1, 3, SIZE[1], SIZE[0])).astype(np.float32)
    med = summarize(interleaved({0: lambda: r.run(x)}, CFG)[0])["median"]
    r.close()
    return med


def test_openvino_vs_benchmark_app(benchmark, model_files):
    exe = shutil.which("benchmark_app")
    if exe is None:
        pytest.skip("benchmark_app (ships with openvino) is not on PATH")
    _, xml = model_files
    # benchmark_app refuses -nthreads with a hint: threads and precision go in a config file
    cfg = xml.parent / "benchmark_app_config.json"
    cfg.write_text(json.dumps({"CPU": {"INFERENCE_NUM_THREADS": str(THREADS),
                                       "INFERENCE_PRECISION_HINT": "f32"}}))
    out = subprocess.run([exe, "-m", str(xml), "-d", "CPU", "-hint", "latency", "-api", "sync",
                          "-load_config", str(cfg), "-t", "10"],
                         capture_output=True, text=True, timeout=120)
    assert "INFERENCE_NUM_THREADS: 1" in out.stdout or THREADS != 1
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    ref = float(re.search(r"Median:\s+([\d.]+)\s*ms", out.stdout).group(1))
    ours = benchmark.pedantic(lambda: _ours("openvino", xml), rounds=1, iterations=1)
    ratio = ours / ref
    benchmark.extra_info.update(ours_ms=ours, benchmark_app_ms=ref, ratio=ratio)
    print(f"\nOpenVINO median: ours {ours:.3f} ms, benchmark_app {ref:.3f} ms, ratio {ratio:.3f}")
    assert abs(ratio - 1) <= 0.05


def test_onnxruntime_vs_bare_loop(benchmark, model_files):
    import onnxruntime as ort

    onnx_path, _ = model_files
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = THREADS
    opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(onnx_path), opts, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal((1, 3, SIZE[1], SIZE[0])).astype(np.float32)
    for _ in range(50):
        sess.run(None, {"input": x})
    samples = []
    for _ in range(600):
        t0 = time.perf_counter_ns()
        sess.run(None, {"input": x})
        samples.append((time.perf_counter_ns() - t0) / 1e6)
    ref = float(np.median(samples))
    ours = benchmark.pedantic(lambda: _ours("onnxruntime", onnx_path), rounds=1, iterations=1)
    ratio = ours / ref
    benchmark.extra_info.update(ours_ms=ours, bare_loop_ms=ref, ratio=ratio)
    print(f"\nONNX Runtime median: ours {ours:.3f} ms, bare loop {ref:.3f} ms, ratio {ratio:.3f}")
    assert abs(ratio - 1) <= 0.05
