"""One ablation run: training or resuming it, its identity and command, and runs restored
from a published report."""

from __future__ import annotations

import json
import logging
import os
import shlex
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np

from okdhp_edge.utils.cli import UsageError, setup_logging
from okdhp_edge.utils.io import atomic_write_json

log = logging.getLogger("okdhp_edge.experiments")


def _readable_command(command: str) -> str:
    """The command with each repeated ``key=value`` override given once, at its first place,
    with the value that wins (the last one): the run-specific overrides of arms c and c_eq
    repeat keys of the base overrides."""
    args = shlex.split(command)
    keys = [a.split("=", 1)[0] if "=" in a and not a.startswith("-") else None for a in args]
    last = {k: a for k, a in zip(keys, args) if k}
    out, seen = [], set()
    for k, a in zip(keys, args):
        if k in seen:
            continue
        if k:
            seen.add(k)
        out.append(last[k] if k else a)
    return " ".join(shlex.quote(a) for a in out)


def run_one(config: Optional[Path], overrides: list[str], run_dir: Path) -> dict[str, Any]:
    """Train (or resume) one run and evaluate its students; cached in result.json."""
    from okdhp_edge import api
    from okdhp_edge.config import config_to_dict, load_config

    result = run_dir / "result.json"
    if result.is_file():
        return json.loads(result.read_text())
    resume = (run_dir / "last.pt").is_file()
    planned = overrides + [f"zoo.root={run_dir}/zoo", f"zoo.name={run_dir.name}"]
    cfg = load_config(run_dir / "config.yaml" if resume else config, [] if resume else planned)
    if resume:
        _same_run(run_dir, config_to_dict(cfg), config_to_dict(load_config(config, planned)))
    t0 = time.time()
    done = api.train(cfg, resume=run_dir if resume else None, run_dir=run_dir)
    from okdhp_edge.manifest import zoo_students

    state, zoo = done.state, done.zoo
    res = {
        "overrides": overrides, "wall_s": state.wall, "elapsed_s": time.time() - t0,
        "iterations": state.iteration,
        "finished": state.finished,  # why a plateau schedule ended; "" otherwise
        "images_per_s": float(np.mean([h["images_per_s"] for h in state.history])),
        "students": {m.name: m.accuracy.value for _, m in zoo_students(zoo)},
        # per-image results behind paired intervals: the report split (the zoo's figures)
        # and the selection split at each student's best evaluation (the verdicts')
        "units": {"report": {m.name: m.accuracy.units for _, m in zoo_students(zoo)
                             if m.accuracy.units},
                  "select": dict(state.best_units)},
        "curves": [{"iteration": h["iteration"], "wall_s": h["wall_s"], **h["select"]}
                   for h in state.history if h["select"]],
        "losses": _last_losses(run_dir / "metrics.jsonl"),
        "command": train_command(config, overrides),
    }
    atomic_write_json(result, res)
    return res


def _same_run(run_dir: Path, found: dict[str, Any], planned: dict[str, Any],
              prefix: str = "") -> None:
    """Raise UsageError naming the first setting in which the run found in ``run_dir``
    differs from the planned one (another spec's run in the same work dir)."""
    for key in planned:
        a, b = found.get(key), planned[key]
        if isinstance(a, dict) and isinstance(b, dict):
            _same_run(run_dir, a, b, f"{prefix}{key}.")
        elif a != b:
            raise UsageError(f"{run_dir} holds a run with {prefix}{key}={a!r}, but this "
                             f"ablation plans {b!r}: another spec's run? Give this ablation its "
                             f"own --work-dir, or delete that folder to retrain it")


def _last_losses(metrics: Path) -> dict[str, float]:
    """Mean loss terms (unweighted) of the last epoch in a run's metrics.jsonl."""
    if not metrics.is_file():
        return {}
    rows = [json.loads(x) for x in metrics.read_text().splitlines() if x.strip()]
    return {k: float(rows[-1][k]) for k in ("mse", "ens", "kl") if rows and k in rows[-1]}


@dataclass
class PlannedRun:
    arm: str
    seed: int
    label: str  # okdhp, hg2, ...
    run_dir: Path
    overrides: list[str] = field(default_factory=list)

    @property
    def key(self) -> str:
        return self.run_dir.name


def _stop_when_orphaned(parent: int, every_s: float = 2.0) -> None:
    """SIGTERM this process once its parent (the ablation runner) is gone: a killed runner
    must not leave its runs training unseen. The trainer checkpoints on SIGTERM, so the
    next runner resumes them. Once per process (a pool process trains run after run)."""
    if any(t.name == "orphan-watch" for t in threading.enumerate()):
        return

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(every_s)
        log.warning("the ablation runner (pid %d) is gone: stopping this run", parent)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, daemon=True, name="orphan-watch").start()


def _worker(config: Optional[str], overrides: list[str], run_dir: str,
            parent: int = 0) -> dict[str, Any]:
    """One run in a fresh process; its progress bar goes to run_dir/progress.log."""
    run = Path(run_dir)
    run.mkdir(parents=True, exist_ok=True)
    setup_logging()
    if parent:
        _stop_when_orphaned(parent)
    with open(run / "progress.log", "a") as err:
        old, sys.stderr = sys.stderr, err
        try:
            return run_one(Path(config) if config else None, overrides, run)
        finally:
            sys.stderr = old


def train_command(config: Optional[Path], overrides: list[str]) -> str:
    """The ``okdhp_edge.train`` command line of one run."""
    return " ".join(shlex.quote(a) for a in [
        "python", "-m", "okdhp_edge.train", *(["--config", str(config)] if config else []),
        *overrides])


def run_identity(config: str, overrides: list[str]) -> tuple[str, tuple[str, ...]]:
    """What decides a run: its base config and its overrides with each key's last value
    (``a_2x`` of a patience-4 spec and ``a`` of a patience-8 spec are the same run)."""
    last = {o.split("=", 1)[0]: o for o in overrides}
    return config, tuple(sorted(last.values()))


def _command_config(command: str) -> str:
    """The ``--config`` of a published run's command line ("" when it had none)."""
    args = shlex.split(command)
    return next((b for a, b in zip(args, args[1:]) if a == "--config"), "")


def restorable_runs(path: Path) -> dict[tuple[str, tuple[str, ...]], list[dict[str, Any]]]:
    """Finished runs of a published ablation report, grouped by :func:`run_identity` (two
    arms can train the same run: c_eq is c when the wall-time ratio rounds to 1); each
    result notes the arm it was published under (``restored_arm``)."""
    if not path.is_file():
        raise UsageError(f"--restore-from {path}: no such report")
    out = {}
    try:
        for arm, seeds in json.loads(path.read_text())["runs"].items():
            for results in seeds.values():
                for res in results:
                    key = run_identity(_command_config(res["command"]), res["overrides"])
                    out.setdefault(key, []).append(
                        {**res, "restored_arm": res.get("restored_arm", arm)})
    except (json.JSONDecodeError, KeyError, TypeError, AttributeError, ValueError) as e:
        raise UsageError(f"--restore-from {path}: not an ablation report (.json with "
                         f"runs -> arm -> seed -> results): {e!r}") from None
    return out
