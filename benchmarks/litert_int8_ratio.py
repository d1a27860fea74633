"""LiteRT INT8 against its own fp32, per student of a zoo's export folders: the runner's
call (the int8 file's float -> int8 input and int8 -> float output included), interleaved
rounds, the median; the operators of both files, and the runner's input quantization alone.

    python benchmarks/litert_int8_ratio.py ZOO [--decoder subpixel] [--threads 2]
        [--rounds 6] [--calls 150]

ZOO is a zoo (or plan zoo) whose students were exported to ``litert_fp32`` and
``litert_int8`` (e.g. by ``okdhp bench --plan ... --backends litert --precisions
fp32,int8``). Prints one Markdown table; no files kept.
"""

from __future__ import annotations

import argparse
import collections
import time
from pathlib import Path

import numpy as np

from okdhp_edge.backends.litert import RUNNER
from okdhp_edge.manifest import zoo_students


def _runner(path: Path, precision: str, threads: int) -> RUNNER:
    r = RUNNER(precision, threads, "cpu", {})
    r.import_runtime()
    r.load(str(path))
    return r


def _ops(runner: RUNNER) -> str:
    """The file's operators, most frequent first."""
    counts = collections.Counter(o["op_name"] for o in runner.interp._get_ops_details())
    return ", ".join(f"{n} {k}" for k, n in counts.most_common())


def _median_ms(fn, n: int) -> float:
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times)) * 1e3


def measure(folder: Path, threads: int, rounds: int, calls: int) -> dict:
    """Medians of fp32 and int8 calls (interleaved) and of the input quantization."""
    runners = {p: _runner(folder / f"model_{p}.tflite", p, threads) for p in ("fp32", "int8")}
    h, w = runners["fp32"].input_hw()
    x = np.random.default_rng(0).standard_normal((1, 3, h, w)).astype(np.float32)
    times: dict[str, list[float]] = {p: [] for p in runners}
    for r in runners.values():
        for _ in range(calls // 2):
            r.run(x)  # warm-up
    for _ in range(rounds):
        for p, r in runners.items():
            times[p].append(_median_ms(lambda r=r: r.run(x), calls))
    quant = _median_ms(lambda: runners["int8"]._to_input(x), 2000) * 1e3
    return {"fp32": float(np.median(times["fp32"])), "int8": float(np.median(times["int8"])),
            "quantize_us": quant, "ops": _ops(runners["int8"]), "size": (h, w)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("zoo", type=Path)
    ap.add_argument("--decoder", default="subpixel", choices=("transposed", "subpixel"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--calls", type=int, default=150)
    args = ap.parse_args()
    print("| student | input | fp32 ms | int8 ms | int8/fp32 | input quantize us | "
          "operators (int8 file) |\n|---|---|---|---|---|---|---|")
    for d, man in zoo_students(args.zoo):
        folder = d / "export" / ("subpixel" if args.decoder == "subpixel" else "")
        if not (folder / "model_int8.tflite").is_file():
            print(f"| {man.name} | - | - | - | - | - | no LiteRT files in {folder} |")
            continue
        m = measure(folder, args.threads, args.rounds, args.calls)
        print(f"| {man.name} | {m['size'][0]}x{m['size'][1]} | {m['fp32']:.3f} | "
              f"{m['int8']:.3f} | {m['int8'] / m['fp32']:.2f} | {m['quantize_us']:.1f} | "
              f"{m['ops']} |")


if __name__ == "__main__":
    main()
