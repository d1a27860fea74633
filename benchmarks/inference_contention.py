"""Inference latency alone and beside one busy neighbour, per thread-waiting setting of
ONNX Runtime (``session.intra_op.allow_spinning``) and OpenVINO (``ENABLE_CPU_PINNING``):
the measurement behind the runners' ``SCHEDULING`` defaults (issue 38).

    python benchmarks/inference_contention.py --student student_zoo/quickstart/hg4 \\
        --out contention_inference.jsonl

Each cell loads the student's ONNX file (ONNX Runtime) or fp32 IR (OpenVINO) with one
setting, warms it up and times batch-1 calls for ``--seconds``; its figure is the median.
The neighbour is one process spinning on a core, started before the cells of a block and
killed after them. Blocks alternate alone / beside the neighbour, cells rotate inside a
block, and the whole runs ``--repeats`` times, so that drift affects every setting alike.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from okdhp_edge.backends import make_runner
from okdhp_edge.bench.timing import TimingConfig, interleaved
from okdhp_edge.manifest import load_student_manifest

SETTINGS = {  # name -> (backend, file in export/, scheduling)
    "ort_spin": ("onnxruntime", "model.onnx", {"allow_spinning": True}),
    "ort_nospin": ("onnxruntime", "model.onnx", {"allow_spinning": False}),
    "ov_pinned": ("openvino", "openvino_fp32/model.xml", {"cpu_pinning": True}),
    "ov_unpinned": ("openvino", "openvino_fp32/model.xml", {"cpu_pinning": False}),
}


def block(student: Path, names: list[str], threads: int, seconds: float, busy: bool
          ) -> dict[str, float]:
    """Median latency (ms) of each setting in one interleaved block."""
    man = load_student_manifest(student / "student.yaml")
    w, h = man.preprocessing.input_size
    x = np.random.default_rng(0).standard_normal((1, 3, h, w)).astype(np.float32)
    runners = {}
    for name in names:
        backend, file, sched = SETTINGS[name]
        runners[name] = make_runner(backend, "fp32", threads, scheduling=sched)
        runners[name].load(str(student / "export" / file))
    spin = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if busy else None
    try:
        time.sleep(0.5 if busy else 0.0)
        cfg = TimingConfig(warmup_iters=5, warmup_s=0.5, min_iters=20, min_time_s=seconds,
                           rounds=3)
        samples = interleaved({n: (lambda r=r: r.run(x)) for n, r in runners.items()}, cfg)
    finally:
        if spin:
            spin.kill()
            spin.wait()
        for r in runners.values():
            r.close()
    return {n: float(np.median(s)) for n, s in samples.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--student", type=Path, action="append", required=True,
                    help="a student folder with export/model.onnx and openvino_fp32/")
    ap.add_argument("--settings", default=",".join(SETTINGS))
    ap.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--out", default="contention_inference.jsonl")
    args = ap.parse_args()
    names = [s for s in args.settings.split(",") if s]
    with open(args.out, "a") as f:
        for rep in range(args.repeats):
            for student in args.student:
                for busy in (False, True):
                    for name, ms in block(student, names, args.threads, args.seconds,
                                          busy).items():
                        row = {"student": str(student), "setting": name,
                               "busy_neighbour": busy, "repeat": rep,
                               "threads": args.threads, "median_ms": round(ms, 3)}
                        print(json.dumps(row), flush=True)
                        f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
