"""``python -m okdhp_edge.quickstart``: the whole journey on the embedded default.

Generates the synthetic dataset, trains the quickstart OKDHP zoo, benches it on PyTorch,
ONNX Runtime and OpenVINO (TensorRT reported unavailable where it is absent), writes the
device report and its chart, and prints the pick for a default latency budget.
Nothing from an earlier run is overwritten: run folders and zoos are versioned.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path
from typing import Optional

from okdhp_edge.utils.cli import run_cli, setup_logging

log = logging.getLogger("okdhp_edge.quickstart")

DEFAULT_BUDGET_MS = 5.0


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m okdhp_edge.quickstart", description=__doc__)
    p.add_argument("--config", type=Path, default=Path("configs/quickstart.yaml"))
    p.add_argument("--max-latency-ms", type=float, default=DEFAULT_BUDGET_MS)
    p.add_argument("overrides", nargs="*", help="config overrides, section.key=value")
    args = p.parse_args(argv)
    setup_logging()
    t0 = time.time()
    from okdhp_edge import bench, train  # noqa: F401
    from okdhp_edge.bench.__main__ import main as bench_main
    from okdhp_edge.config import load_config
    from okdhp_edge.data.build import ensure_synthetic
    from okdhp_edge.training.trainer import Trainer
    from okdhp_edge.training.zoo_writer import write_zoo
    from okdhp_edge.zoo import main as zoo_main

    cfg = load_config(args.config, args.overrides)
    log.info("[1/4] synthetic data in %s", cfg.data.root)
    ensure_synthetic(cfg.data)
    log.info("[2/4] training the quickstart OKDHP zoo (%s + branches %s)",
             cfg.model.shared_stacks, cfg.model.branches)
    trainer = Trainer(cfg, config_name=args.config.stem)
    try:
        trainer.fit()
        zoo = write_zoo(trainer)
    finally:
        trainer.close()
    log.info("[3/4] benching %s on torch, onnxruntime, openvino (tensorrt where present)", zoo)
    bench_argv = ["--zoo", str(zoo), "--backends", "torch,onnxruntime,openvino,tensorrt",
                  "--min-time", "1.0", "--min-iters", "30"]
    bench_main(bench_argv)
    from okdhp_edge.bench.device import device_id, fingerprint

    dev = device_id(fingerprint(0))
    report_dir = Path("bench/reports") / dev
    log.info("[4/4] pick for a %.1f ms budget (engine median) on %s", args.max_latency_ms, dev)
    code = zoo_main(["pick", "--zoo", str(zoo), "--device", dev, "--max-latency-ms",
                     str(args.max_latency_ms)])
    print(f"\nzoo:    {zoo}\nreport: {report_dir / (zoo.name + '.md')}\n"
          f"chart:  {report_dir / (zoo.name + '_pareto.png')}\nrun:    {trainer.run_dir}\n"
          f"took {time.time() - t0:.0f} s")
    return 0 if code in (0, 1) else code


if __name__ == "__main__":
    run_cli(main)
