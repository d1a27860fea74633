"""Where ONNX Runtime spends an inference of each file, by operator type: its profiler's
kernel times (graph fully optimised, the bench's threads), so an INT8 file slower than its
fp32 can be read operator by operator.

    python benchmarks/ort_int8_profile.py fp32=student/export/model.onnx \\
        int8=student/export/model_int8.onnx [--threads 2] [--calls 200]

Each file is run ``--calls`` times after a warm-up, the files in turn (one process, nothing
else running); the table gives each operator type's kernel time per call, its count in the
optimised graph and its share of the file's kernel time. Findings: docs/int8.md.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import tempfile
from pathlib import Path

import numpy as np
import onnxruntime as ort


def profile(path: Path, threads: int, calls: int, work: Path) -> dict[str, list[float]]:
    """Kernel time (microseconds) of every node run, by operator type, over ``calls``."""
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.enable_profiling = True
    so.profile_file_prefix = str(work / path.stem)
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]
    shape = [d if isinstance(d, int) else 1 for d in inp.shape]
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    for _ in range(20 + calls):  # the first 20: warm-up, left out below
        sess.run(None, {inp.name: x})
    events = json.loads(Path(sess.end_profiling()).read_text())
    runs = sorted((e for e in events if e.get("name") == "model_run"), key=lambda e: e["ts"])
    start = runs[-calls]["ts"]
    out: dict[str, list[float]] = collections.defaultdict(list)
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time") and e["ts"] >= start:
            out[e["args"]["op_name"]].append(float(e["dur"]))
    out["(model_run)"] = [float(e["dur"]) for e in runs[-calls:]]
    return out


def table(results: dict[str, dict[str, list[float]]], calls: int) -> str:
    """Markdown: per-call kernel ms and node count of each operator type, per file."""
    names = list(results)
    ops = sorted({op for r in results.values() for op in r if op != "(model_run)"},
                 key=lambda op: -max(sum(r.get(op, [])) for r in results.values()))
    head = "| op | " + " | ".join(f"{n} ms (nodes, share)" for n in names) + " |"
    lines = [head, "|---" * (len(names) + 1) + "|"]
    totals = {n: sum(sum(v) for op, v in r.items() if op != "(model_run)")
              for n, r in results.items()}
    for op in ops:
        cells = []
        for n in names:
            times = results[n].get(op, [])
            cells.append(f"{sum(times) / calls / 1000:.3f} ({len(times) // calls}, "
                         f"{100 * sum(times) / max(totals[n], 1):.0f}%)" if times else "-")
        lines.append(f"| {op} | " + " | ".join(cells) + " |")
    lines.append("| all kernels | " + " | ".join(
        f"{totals[n] / calls / 1000:.3f}" for n in names) + " |")
    lines.append("| model_run (median) | " + " | ".join(
        f"{np.median(results[n]['(model_run)']) / 1000:.3f}" for n in names) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("files", nargs="+", metavar="NAME=PATH")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--calls", type=int, default=200)
    args = ap.parse_args()
    files = dict(f.split("=", 1) for f in args.files)
    print(f"onnxruntime {ort.__version__}, {args.threads} threads, {args.calls} calls, "
          f"{os.cpu_count()} CPUs visible")
    with tempfile.TemporaryDirectory() as tmp:
        results = {n: profile(Path(p), args.threads, args.calls, Path(tmp))
                   for n, p in files.items()}
    print(table(results, args.calls))


if __name__ == "__main__":
    main()
