"""The ``ablation`` command: plan the runs, train them in priority order (in parallel where
asked), and publish the report as they finish."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Optional

import yaml

from okdhp_edge.data.formats import dataset_format
from okdhp_edge.experiments.arms import (
    ARM_NAMES,
    ARMS,
    arm_runs,
    canonical_arm,
    mac_ratios,
    okdhp_wall,
    wall_ratios,
)
from okdhp_edge.experiments.executors import Scheduler
from okdhp_edge.experiments.report import _ordered, write_report
from okdhp_edge.experiments.runs import (
    PlannedRun,
    _last_losses,
    _same_run,
    _worker,
    restorable_runs,
    run_identity,
)
from okdhp_edge.experiments.summary import shorter_schedule_gains, summarize
from okdhp_edge.grammar import Request, option
from okdhp_edge.utils.cli import UsageError
from okdhp_edge.utils.cpu import available_cores
from okdhp_edge.utils.io import atomic_write_json

log = logging.getLogger("okdhp_edge.experiments")

SPEC_KEYS = {"base_config", "seeds", "arms", "overrides", "kl_temperature", "arm_seeds",
             "lambda_kd_strong", "shorter_schedule"}


@dataclass(frozen=True)
class AblationRequest(Request):
    """Trains the students under several settings (arms) and seeds and writes the report
    of mean and spread per student and arm; resumable run by run (see the module)."""

    COMMAND: ClassVar[str] = "okdhp experiments ablation"

    config: Path = option(help="an ablation spec (base_config, seeds, arms, overrides) or a "
                          "config")
    seeds: Optional[tuple[int, ...]] = option(None, "the seeds (default: the spec's)",
                                              minimum=0, spaced=True)
    arms: Optional[tuple[str, ...]] = option(
        None, "short keys or names: " + ", ".join(f"{n} ({k})" for n, k in ARM_NAMES.items()),
        choices=tuple(ARMS) + tuple(ARM_NAMES), spaced=True, metavar="ARM")
    work_dir: Path = option(Path("runs/ablation"), "where the runs are trained")
    report_only: bool = option(False, "write the report from the finished runs; train "
                               "nothing")
    restore_from: tuple[Path, ...] = option(
        (), "a published ablation report (repeatable): every run of this ablation that it "
        "holds is taken as finished instead of retrained (a lost work dir)", repeat=True,
        metavar="REPORT_JSON")
    jobs: int = option(1, "runs trained in parallel here (each with train.threads from the "
                       "spec; local and submitit-local executors)", minimum=1, maximum=64)
    scheduler: Scheduler = option(factory=Scheduler, help="where runs train "
                                  "(experiments/executors.py)")
    out: Path = option(Path("bench/reports/ablation_synthetic.md"), "the report")
    overrides: tuple[str, ...] = option((), "config overrides for every run, section.key=value",
                                        positional=True, metavar="SECTION.KEY=VALUE")

    def check(self) -> None:
        cores = available_cores()
        if self.jobs > cores and self.scheduler.executor != "slurm":
            raise UsageError(f"jobs (--jobs) {self.jobs}: runs trained at once, each on its "
                             f"own cores; this machine has {cores}")


def ablation(args: AblationRequest) -> int:
    """Train (or restore) every run of the spec, or with ``--report-only`` re-render the
    report from the finished ones."""
    runner = Ablation(args)
    return runner.report_only() if args.report_only else runner.train_all()


def read_spec(path: Path) -> dict[str, Any]:
    """An ablation spec (or a plain training config, taken as its base), arms canonical."""
    if not path.is_file():
        raise UsageError(f"{path}: ablation spec not found")
    spec = yaml.safe_load(path.read_text()) or {}
    if not (isinstance(spec, dict) and SPEC_KEYS & set(spec)):
        spec = {"base_config": str(path)}  # a plain training config
    unknown = set(spec) - SPEC_KEYS
    if unknown:
        raise UsageError(f"{path}: unknown ablation key '{sorted(unknown)[0]}' "
                         f"(expected {', '.join(sorted(SPEC_KEYS))})")
    spec["arms"] = [canonical_arm(a, str(path)) for a in spec.get("arms", ARMS)]
    spec["arm_seeds"] = {canonical_arm(a, f"{path}: arm_seeds"): v
                         for a, v in (spec.get("arm_seeds") or {}).items()}
    return spec


def _meta(args: AblationRequest, spec: dict, cfg: Any, seeds: list, arm_seeds: dict
          ) -> dict[str, Any]:
    """What the report records of the whole ablation (besides its runs)."""
    t = cfg.train
    plateau = {"patience": t.plateau_patience, "window": t.plateau_window,
               "min_delta": t.plateau_min_delta, "drops": t.plateau_drops,
               "lr_factor": t.lr_factor, "val_every": t.val_every, "epochs": t.epochs}
    return {"config": str(args.config), "seeds": seeds, "arm_seeds": arm_seeds,
            "mac_ratio_okdhp_over_plain": mac_ratios(cfg),
            "lambda_kd": cfg.loss.lambda_kd, "lambda_ens": cfg.loss.lambda_ens,
            "lambda_kd_strong": spec.get("lambda_kd_strong", 100 * cfg.loss.lambda_kd),
            "argv": sys.argv, "jobs": args.jobs,
            "plateau_schedule": plateau if t.plateau_patience else None,
            # the command that trains the whole ablation (a report-only rerun's too)
            "argv_display": shlex.split(dataclasses.replace(args, report_only=False)
                                        .command())}


def _shorter_reference(spec: dict, where: Path) -> Optional[dict[str, Any]]:
    """The earlier ablation report a ``shorter_schedule`` comparison reads, checked."""
    shorter = spec.get("shorter_schedule")
    if not shorter:
        return None
    ref_path = Path(shorter.get("report", ""))
    if not ref_path.is_file():
        raise UsageError(f"{where}: shorter_schedule.report {ref_path} not found")
    bad = [a for a in shorter.get("pairs", {}) if a not in ARMS]
    if bad or not shorter.get("pairs"):
        raise UsageError(f"{where}: shorter_schedule.pairs must map arms of this "
                         f"ablation to arms of {ref_path} (e.g. a: a_2x)")
    return json.loads(ref_path.read_text())


class Ablation:
    """One ablation: its spec, planned runs and the results recorded so far."""

    def __init__(self, args: AblationRequest) -> None:
        from okdhp_edge.config import load_config

        self.args = args
        self.spec = spec = read_spec(args.config)
        self.base = Path(spec["base_config"]) if spec.get("base_config") else None
        self.seeds = spec.get("seeds", [0, 1, 2]) if args.seeds is None else list(args.seeds)
        self.arms = spec["arms"] if args.arms is None else [canonical_arm(a) for a in args.arms]
        self.arm_seeds = {a: [s for s in v if s in self.seeds]
                          for a, v in spec["arm_seeds"].items()}
        self.overrides = spec.get("overrides", []) + list(args.overrides)
        self.cfg = load_config(self.base, self.overrides)  # every override, before any run
        self.root = Path(args.work_dir)
        self.restorable: dict[tuple[str, tuple[str, ...]], list[dict[str, Any]]] = {}
        for report in args.restore_from or []:  # several reports: each one's runs count
            for key, found in restorable_runs(report).items():
                self.restorable.setdefault(key, []).extend(found)
        if dataset_format(self.cfg.data.dataset).generated and not args.report_only:
            from okdhp_edge.data.build import ensure_synthetic

            ensure_synthetic(self.cfg.data)  # once, before parallel runs each generate it
        self.results: dict[str, dict[str, list]] = {}
        self.done: dict[str, dict] = {}
        self.meta = _meta(args, spec, self.cfg, self.seeds, self.arm_seeds)
        self.reference = _shorter_reference(spec, args.config)
        self._plan()

    # ---------------------------------------------------------------- planning
    def priority(self, p: PlannedRun) -> tuple:
        """Arms with every seed first (seed-major), then the arms cut to fewer seeds in spec
        order; c_eq waits for a and c. A stop at any time keeps the most important runs."""
        full = len(self.arm_seeds.get(p.arm, self.seeds)) == len(self.seeds)
        return ((0, self.seeds.index(p.seed), self.arms.index(p.arm)) if full
                else (1, self.arms.index(p.arm), self.seeds.index(p.seed)))

    def _plan(self) -> None:
        """Expand what does not depend on other runs now, c_eq (sized by a and c) later."""
        from okdhp_edge.families import num_branches

        planned = sorted((PlannedRun(arm, seed, "?", self.root) for arm in self.arms
                          for seed in self.seeds if seed in self.arm_seeds.get(arm, self.seeds)),
                         key=self.priority)
        self.queue: list[PlannedRun] = []
        self.deferred: list[PlannedRun] = []
        for p in planned:
            if p.arm == "c_eq":
                self.deferred.append(p)
            else:
                self.queue.extend(self.expand(p))
        self.planned_all = list(self.queue)
        self.total = len(self.queue) + len(self.deferred) * num_branches(self.cfg.model)
        self.meta["planned_runs"] = self.total
        log.info("ablation: %d runs (%d jobs in parallel), work dir %s", self.total,
                 self.args.jobs, self.root)

    def expand(self, p: PlannedRun) -> list[PlannedRun]:
        """The runs of one arm and seed (one per student for the plain arms)."""
        extra = {"kl_temperature": self.spec.get("kl_temperature", 0.1),
                 "lambda_kd_strong": self.meta["lambda_kd_strong"]}
        if p.arm == "c_eq":
            extra["wall_ratio"] = wall_ratios(self.results)
            extra["okdhp_wall_s"] = okdhp_wall(self.results)
        return [PlannedRun(p.arm, p.seed, label, self.root / f"{p.arm}-seed{p.seed}-{label}",
                           self.overrides + ov + [f"train.seed={p.seed}"])
                for label, ov in arm_runs(p.arm, self.cfg, extra)]

    def ready(self, p: PlannedRun) -> bool:
        """c_eq is ready once every a and c run (all seeds: a fair ratio) is done."""
        if p.arm != "c_eq":
            return True
        need = [q for q in self.planned_all if q.arm in ("a", "c")]
        return bool(need) and all(q.key in self.done for q in need) and \
            all(any(q.arm == a for q in need) for a in ("a", "c"))

    # ---------------------------------------------------------------- results
    def load(self, q: PlannedRun) -> bool:
        """Record a run finished earlier (its result.json, or the same run in the
        --restore-from report); False when it has none."""
        path = q.run_dir / "result.json"
        if path.is_file():
            res = json.loads(path.read_text())
            _same_run(q.run_dir, {"overrides": res.get("overrides")}, {"overrides": q.overrides})
        else:  # a restored run was matched on these very settings: nothing to check
            base = str(self.base) if self.base else ""
            same = self.restorable.get(run_identity(base, q.overrides))
            if not same:
                return False
            res = next((r for r in same if r["restored_arm"] == q.arm), same[0])
            res = {**res, "restored_overrides": res["overrides"], "overrides": q.overrides}
            q.run_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_json(path, res)
            log.info("%s: restored from a published report (as arm %s there)", q.key,
                     res["restored_arm"])
        self.record(q, res)
        return True

    def record(self, run: PlannedRun, res: dict) -> None:
        if "losses" not in res:  # results written before the loss terms were kept
            res["losses"] = _last_losses(run.run_dir / "metrics.jsonl")
        self.done[run.key] = res
        self.results.setdefault(run.arm, {}).setdefault(str(run.seed), []).append(res)

    def pending(self, runs: list[PlannedRun]) -> list[PlannedRun]:
        """Record the runs finished earlier; return the others, still to train."""
        todo = []
        for q in runs:
            if self.load(q):
                log.info("%s: finished earlier (cached result.json)", q.key)
            else:
                todo.append(q)
        return todo

    def publish(self) -> None:
        """Rewrite the report from every run recorded so far; when --arms / --seeds chose a
        subset to train, from every finished run of the whole spec (the report is the
        spec's, and a subset must not drop the runs it did not train)."""
        args = self.args
        if (args.arms is not None or args.seeds is not None) and not args.report_only:
            spec_arms, spec_seeds = self.spec["arms"], self.spec.get("seeds", [0, 1, 2])
            ablation(dataclasses.replace(
                args, report_only=True,
                arms=tuple(spec_arms + [a for a in self.arms if a not in spec_arms]),
                seeds=tuple(spec_seeds + [x for x in self.seeds if x not in spec_seeds])))
            return
        ordered = _ordered(self.results, self.arms)
        if self.reference is not None:
            shorter = self.spec["shorter_schedule"]
            self.meta["shorter_schedule"] = {
                "report": str(shorter["report"]), "pairs": shorter["pairs"],
                "gains": shorter_schedule_gains(ordered, self.reference, shorter["pairs"])}
        write_report(summarize(ordered, bool(self.meta["plateau_schedule"])), ordered,
                     args.out, self.meta)

    # ---------------------------------------------------------------- commands
    def report_only(self) -> int:
        """Re-render the report from the finished runs; train nothing."""
        for q in self.queue:
            self.load(q)
        for d in self.deferred:
            try:
                for q in self.expand(d):
                    self.load(q)
            except UsageError:  # its a / c runs are not finished
                continue
        if not self.done:
            raise UsageError(f"{self.root}: no finished run (result.json) to report")
        self.publish()
        print(f"report: {self.args.out.with_suffix('.md')} ({len(self.done)} of "
              f"{self.total} runs)")
        return 0

    def train_all(self) -> int:
        """Train every run not finished yet (``--jobs`` at a time here, or as jobs of the
        scheduler), publishing the report as they end."""
        # runs finished earlier first: a ready c_eq must queue before later arms start
        self.queue = self.pending(self.queue)
        if self.done:
            self.publish()
        self.t0, self.running = time.time(), {}
        if self.args.scheduler.pooled:
            self._train_here()
        else:
            self._train_as_jobs()
        self.publish()  # also when the last runs were cached
        print(f"report: {self.args.out.with_suffix('.md')}")
        return 0

    def _nothing_runs(self) -> bool:
        """True when nothing is running nor can start (cached runs were recorded); a c_eq
        left waiting then cannot run."""
        if self.running:
            return False
        if self.deferred:
            raise UsageError("arm c_eq cannot run: arms a and c are not both in this ablation")
        return True

    def _train_here(self) -> None:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(max_workers=self.args.jobs, mp_context=mp.get_context("spawn"),
                                 max_tasks_per_child=1) as pool:
            while self.queue or self.deferred or self.running:
                self._queue_ready()
                self._start(pool)
                if self._nothing_runs():
                    break
                self._collect()

    def _train_as_jobs(self) -> None:
        """Every ready run a job through submitit (SLURM queues them all; submitit-local
        runs ``--jobs`` at a time), resubmitted when one ends without a result."""
        from okdhp_edge.experiments.executors import SubmititPool

        sched = self.args.scheduler
        limit = self.args.jobs if sched.executor == "submitit-local" else len(self.planned_all) + 99
        base = str(self.base) if self.base else None
        with SubmititPool(sched, self.root / "jobs", self.cfg.train.threads or 1) as pool:
            while self.queue or self.deferred or self.running:
                self._queue_ready()
                while self.queue and len(self.running) < limit:
                    q = self.queue.pop(0)
                    job = pool.submit(q.key, _worker, base, q.overrides, str(q.run_dir), 0)
                    self.running[q.key] = (job, q)
                if self._nothing_runs():
                    break
                for job, res in pool.wait_any([j for j, _ in self.running.values()]):
                    self._finished(self.running.pop(job.key)[1], {**res, "job": job.info()})

    def _queue_ready(self) -> None:
        for p in [d for d in self.deferred if self.ready(d)]:
            self.deferred.remove(p)
            self.queue.extend(self.pending(self.expand(p)))
            self.queue.sort(key=self.priority)  # stable: a ready c_eq before later arms

    def _start(self, pool: Any) -> None:
        while self.queue and len(self.running) < self.args.jobs:
            q = self.queue.pop(0)
            log.info("start %s (%d done of %d)", q.key, len(self.done), self.total)
            fut = pool.submit(_worker, str(self.base) if self.base else None, q.overrides,
                              str(q.run_dir), os.getpid())
            self.running[fut] = q

    def _collect(self) -> None:
        from concurrent.futures import FIRST_COMPLETED, wait

        finished, _ = wait(list(self.running), return_when=FIRST_COMPLETED)
        for fut in finished:
            q = self.running.pop(fut)
            # a failed run stops the ablation; finished ones are kept
            self._finished(q, fut.result())

    def _finished(self, q: PlannedRun, res: dict) -> None:
        self.record(q, res)
        self.publish()
        log.info("done %s in %.0f s: %s (%d of %d, %.0f min elapsed)", q.key,
                 res["elapsed_s"], ", ".join(f"{k} {v:.3f}" for k, v in res["students"].items()),
                 len(self.done), self.total, (time.time() - self.t0) / 60)
