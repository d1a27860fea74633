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

from okdhp_edge.targets import default_backends
from okdhp_edge.utils.cli import console_entry, count, number, run_cli, setup_logging

log = logging.getLogger("okdhp_edge.quickstart")

DEFAULT_BUDGET_MS = 1.5


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m okdhp_edge.quickstart", description=__doc__)
    p.add_argument("--config", type=Path, default=Path("configs/quickstart.yaml"))
    p.add_argument("--max-latency-ms", type=number(0, above=True), default=DEFAULT_BUDGET_MS,
                   help="latency budget of the pick (engine median, ms)")
    p.add_argument("--min-time", type=number(0), default=1.0,
                   help="bench: seconds of timing per row, all rounds (default %(default)s)")
    p.add_argument("--min-iters", type=count(1), default=30,
                   help="bench: timed calls per row at least (default %(default)s)")
    p.add_argument("--backends", default=",".join(default_backends()),
                   help="bench: comma-separated backends (default: every CPU backend, each "
                        "where installed: %(default)s)")
    p.add_argument("overrides", nargs="*", help="config overrides, section.key=value")
    args = p.parse_args(argv)
    setup_logging()
    t0 = time.time()
    from okdhp_edge import api
    from okdhp_edge.bench.decide import pick_lines
    from okdhp_edge.config import load_config
    from okdhp_edge.data.build import ensure_synthetic

    cfg = load_config(args.config, args.overrides)
    log.info("[1/4] synthetic data in %s", cfg.data.root)
    ensure_synthetic(cfg.data)
    log.info("[2/4] training the quickstart OKDHP zoo (shared %d + branches %s)",
             cfg.model.shared_stacks, cfg.model.branches)
    run = api.train(cfg, config_name=args.config.stem)
    log.info("[3/4] benching %s on %s (each where present)", run.zoo,
             args.backends.replace(",", ", "))
    # a fresh zoo: its report replaces whatever this device measured of an earlier one
    report, files = api.bench(run.zoo, backends=args.backends, min_time=args.min_time,
                              min_iters=args.min_iters, replace=True)
    log.info("[4/4] the pick for a %.1f ms budget (engine median, batch 1) on %s",
             args.max_latency_ms, report.device_id)
    p = api.pick(report, args.max_latency_ms)
    print("\n".join(pick_lines(report, p, args.max_latency_ms)))
    chart = files.get("png", "(not drawn: see the log)")
    print(f"\nzoo:    {run.zoo}\nreport: {files['md']}\nchart:  {chart}\n"
          f"run:    {run.run_dir}\ntook {time.time() - t0:.0f} s")
    return 0


cli = console_entry(main)  # the console script: as python -m, one-line errors


if __name__ == "__main__":
    run_cli(main)
