"""Timing protocol: warm-up by count and time, minimum iterations and duration,
interleaved rounds, robust statistics with a bootstrap CI of the median."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable, Optional

import numpy as np


@dataclass
class TimingConfig:
    """How long and how often to measure.

    Each callable is warmed up for at least ``warmup_iters`` calls and ``warmup_s``
    seconds, then measured in ``rounds`` interleaved rounds; over all rounds it gets at
    least ``min_iters`` calls and ``min_time_s`` seconds.
    """

    warmup_iters: int = 10
    warmup_s: float = 0.5
    min_iters: int = 60
    min_time_s: float = 2.0
    rounds: int = 3
    max_iters: int = 5000
    bootstrap: int = 2000
    cv_threshold: float = 0.10
    seed: int = 0


def warm_up(fn: Callable[[], object], cfg: TimingConfig) -> None:
    """Call ``fn`` until both the warm-up count and the warm-up time are reached."""
    n, t0 = 0, time.perf_counter()
    while n < cfg.warmup_iters or time.perf_counter() - t0 < cfg.warmup_s:
        fn()
        n += 1


def measure_block(fn: Callable[[], object], min_iters: int, min_time_s: float,
                  max_iters: int) -> list[float]:
    """Latencies (ms) of consecutive calls until both minimums are met."""
    out: list[float] = []
    t_start = time.perf_counter()
    while (len(out) < min_iters or time.perf_counter() - t_start < min_time_s) and \
            len(out) < max_iters:
        t0 = time.perf_counter_ns()
        fn()
        out.append((time.perf_counter_ns() - t0) / 1e6)
    return out


def interleaved(fns: dict[str, Callable[[], object]], cfg: TimingConfig,
                progress: Optional[Callable[[str], None]] = None,
                monitor: Optional[Any] = None) -> dict[str, list[float]]:
    """Measure several callables in interleaved rounds (order rotated each round) so that
    drift of the machine does not favour whoever runs first. A ``monitor`` (a
    :class:`okdhp_edge.bench.load.LoadMonitor`) is told before and after each block."""
    for fn in fns.values():
        warm_up(fn, cfg)
    blocks = {k: (lambda n, t, m, fn=fn: measure_block(fn, n, t, m)) for k, fn in fns.items()}
    return interleaved_blocks(blocks, cfg, progress, monitor)


def interleaved_blocks(blocks: dict[Any, Callable[[int, float, int], list[float]]],
                       cfg: TimingConfig, progress: Optional[Callable[[Any], None]] = None,
                       monitor: Optional[Any] = None) -> dict[Any, list[float]]:
    """The rounds of :func:`interleaved` over timing blocks that are already warm:
    ``blocks[key](min_iters, min_time_s, max_iters)`` times one block of consecutive calls
    (here, or in the key's worker process) and returns their latencies (ms)."""
    keys = list(blocks)
    samples: dict[Any, list[float]] = {k: [] for k in keys}
    per_iters = max(1, -(-cfg.min_iters // cfg.rounds))
    per_time = cfg.min_time_s / cfg.rounds
    per_max = max(per_iters, cfg.max_iters // cfg.rounds)
    for r in range(cfg.rounds):
        order = keys[r % len(keys):] + keys[:r % len(keys)] if keys else []
        for k in order:
            if monitor is not None:
                monitor.before()
            samples[k].extend(blocks[k](per_iters, per_time, per_max))
            if monitor is not None:
                monitor.after(k)
            if progress:
                progress(k)
    return samples


def summarize(samples_ms: list[float], cfg: Optional[TimingConfig] = None) -> dict:
    """median, p90, p99, mean, std, min, max, bootstrap 95% CI of the median, CV flag."""
    cfg = cfg or TimingConfig()
    a = np.asarray(samples_ms, np.float64)
    if a.size == 0:
        raise ValueError("no samples")
    rng = np.random.default_rng(cfg.seed)
    boots = np.median(rng.choice(a, size=(cfg.bootstrap, a.size), replace=True), axis=1)
    mean, std = float(a.mean()), float(a.std(ddof=1)) if a.size > 1 else 0.0
    cv = std / mean if mean > 0 else 0.0
    return {
        "median": float(np.median(a)), "p90": float(np.percentile(a, 90)),
        "p99": float(np.percentile(a, 99)), "mean": mean, "std": std,
        "min": float(a.min()), "max": float(a.max()),
        "ci95_median": [float(np.percentile(boots, 2.5)), float(np.percentile(boots, 97.5))],
        "iterations": int(a.size), "cv": cv, "high_cv": bool(cv > cfg.cv_threshold),
        "warmup_iters": cfg.warmup_iters, "warmup_s": cfg.warmup_s, "rounds": cfg.rounds,
    }
