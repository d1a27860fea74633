"""``okdhp quickstart``: the whole journey on the embedded default
(:class:`QuickstartRequest`)."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from okdhp_edge.bench.timing import TimingConfig
from okdhp_edge.grammar import Request, option
from okdhp_edge.targets import BACKEND_INFO, default_backends
from okdhp_edge.utils.cli import UsageError, console_entry, request_main, run_cli
from okdhp_edge.utils.io import numbered_names

log = logging.getLogger("okdhp_edge.quickstart")

DEFAULT_BUDGET_MS = 1.5
REPORTS = Path("bench/reports")


@dataclass(frozen=True)
class QuickstartRequest(Request):
    """The whole journey on the embedded default: generates the synthetic dataset, trains
    the quickstart OKDHP zoo, benches it (TensorRT reported unavailable where it is
    absent), writes the device report and its chart, and prints the pick for a latency
    budget. Nothing from an earlier run is overwritten: run folders and zoos are
    versioned."""

    COMMAND: ClassVar[str] = "okdhp quickstart"

    config: Path = option(Path("configs/quickstart.yaml"), "the training config")
    max_latency_ms: float = option(DEFAULT_BUDGET_MS, "latency budget of the pick (engine "
                                   "median, ms)", minimum=0, above=True)
    min_time: float = option(1.0, "bench: seconds of timing per row, all rounds", minimum=0)
    min_iters: int = option(30, "bench: timed calls per row at least", minimum=1)
    warmup_time: float = option(TimingConfig.warmup_s, "bench: seconds of untimed calls "
                                "before each row is timed", minimum=0)
    backends: tuple[str, ...] = option(default_backends(), "bench: the backends (each where "
                                       "installed)", choices=tuple(BACKEND_INFO))
    overrides: tuple[str, ...] = option((), "config overrides, section.key=value",
                                        positional=True, metavar="SECTION.KEY=VALUE")


def run(args: QuickstartRequest) -> int:
    """Data, training, bench, pick; prints the pick and where everything is."""
    t0 = time.time()
    from okdhp_edge import api
    from okdhp_edge.bench.decide import pick_lines
    from okdhp_edge.config import load_config
    from okdhp_edge.data.build import ensure_synthetic

    cfg = load_config(args.config, list(args.overrides))
    cfg.zoo.name = _free_zoo_name(cfg.zoo.name or args.config.stem, Path(cfg.zoo.root),
                                  REPORTS)
    log.info("[1/4] synthetic data in %s", cfg.data.root)
    ensure_synthetic(cfg.data)
    log.info("[2/4] training the quickstart OKDHP zoo (shared %d + branches %s)",
             cfg.model.shared_stacks, cfg.model.branches)
    run = api.train(cfg, config_name=args.config.stem)
    log.info("[3/4] benching %s on %s (each where present)", run.zoo,
             ", ".join(args.backends))
    # a zoo name no zoo and no report of this device holds: nothing earlier is replaced
    report, files = api.bench(run.zoo, backends=args.backends, min_time=args.min_time,
                              min_iters=args.min_iters, warmup_time=args.warmup_time,
                              out_root=REPORTS)
    log.info("[4/4] the pick for a %.1f ms budget (engine median, batch 1) on %s",
             args.max_latency_ms, report.device_id)
    p = api.pick(report, args.max_latency_ms)
    print("\n".join(pick_lines(report, p, args.max_latency_ms)))
    chart = files.get("png", "(not drawn: see the log)")
    print(f"\nzoo:    {run.zoo}\nreport: {files['md']}\nchart:  {chart}\n"
          f"run:    {run.run_dir}\ntook {time.time() - t0:.0f} s")
    return 0


def _free_zoo_name(name: str, zoo_root: Path, reports: Path) -> str:
    """``name``, or ``name-2``, ``name-3``...: the first that neither a zoo under
    ``zoo_root`` nor a report of this device under ``reports`` holds (the quickstart
    overwrites nothing: not an earlier zoo, not an earlier or published report)."""
    from okdhp_edge.bench.device import this_device_id

    device = reports / this_device_id()
    for candidate in numbered_names(name, 10_000):
        if not (zoo_root / candidate).exists() and not (device / f"{candidate}.json").exists():
            return candidate
    raise UsageError(f"no free zoo name like '{name}' under {zoo_root}")


main = request_main(QuickstartRequest, run)
cli = console_entry(main)  # the console script: as python -m, one-line errors


if __name__ == "__main__":
    run_cli(main)
