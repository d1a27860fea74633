"""The ``ablation`` command: plan the runs, train them in priority order (in parallel where
asked), and publish the report as they finish."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from okdhp_edge.experiments.arms import (
    ARMS,
    arm_runs,
    canonical_arm,
    mac_ratios,
    okdhp_wall,
    wall_ratios,
)
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
from okdhp_edge.utils.cli import UsageError
from okdhp_edge.utils.io import atomic_write_json

log = logging.getLogger("okdhp_edge.experiments")


def ablation(args: argparse.Namespace) -> int:
    from okdhp_edge.config import load_config

    if not args.config.is_file():
        raise UsageError(f"{args.config}: ablation spec not found")
    spec = yaml.safe_load(args.config.read_text()) or {}
    spec_keys = {"base_config", "seeds", "arms", "overrides", "kl_temperature", "arm_seeds",
                 "lambda_kd_strong", "shorter_schedule"}
    if not (isinstance(spec, dict) and spec_keys & set(spec)):
        spec = {"base_config": str(args.config)}  # a plain training config
    unknown = set(spec) - spec_keys
    if unknown:
        raise UsageError(f"{args.config}: unknown ablation key '{sorted(unknown)[0]}' "
                         f"(expected {', '.join(sorted(spec_keys))})")
    base = Path(spec["base_config"]) if spec.get("base_config") else None
    seeds = spec.get("seeds", [0, 1, 2]) if args.seeds is None else args.seeds
    spec["arms"] = [canonical_arm(a, str(args.config)) for a in spec.get("arms", ARMS)]
    spec["arm_seeds"] = {canonical_arm(a, f"{args.config}: arm_seeds"): v
                         for a, v in (spec.get("arm_seeds") or {}).items()}
    arms = spec["arms"] if args.arms is None else [canonical_arm(a) for a in args.arms]
    arm_seeds = {a: [s for s in v if s in seeds] for a, v in spec["arm_seeds"].items()}
    extra_overrides = spec.get("overrides", []) + list(args.overrides)
    cfg = load_config(base, extra_overrides)  # validates every override before any run
    kl_t = spec.get("kl_temperature", 0.1)
    root = Path(args.work_dir)
    restorable: dict[tuple[str, tuple[str, ...]], list[dict[str, Any]]] = {}
    for report in args.restore_from or []:  # several reports: each one's runs are candidates
        for key, found in restorable_runs(report).items():
            restorable.setdefault(key, []).extend(found)
    if cfg.data.dataset == "synthetic" and not args.report_only:
        from okdhp_edge.data.build import ensure_synthetic

        ensure_synthetic(cfg.data)  # once, before parallel runs would each generate it

    # Priority order: arms with every seed first (seed-major), then the arms cut to fewer
    # seeds in spec order; c_eq waits for a and c of its seed. A stop at any time keeps the
    # most important runs.
    def priority(p: PlannedRun) -> tuple:
        full = len(arm_seeds.get(p.arm, seeds)) == len(seeds)
        return ((0, seeds.index(p.seed), arms.index(p.arm)) if full
                else (1, arms.index(p.arm), seeds.index(p.seed)))

    planned = sorted((PlannedRun(arm, seed, "?", root) for arm in arms for seed in seeds
                      if seed in arm_seeds.get(arm, seeds)), key=priority)
    results: dict[str, dict[str, list]] = {}
    done: dict[str, dict] = {}
    meta = {"config": str(args.config), "seeds": seeds, "arm_seeds": arm_seeds,
            "mac_ratio_okdhp_over_plain": mac_ratios(cfg),
            "lambda_kd": cfg.loss.lambda_kd, "lambda_ens": cfg.loss.lambda_ens,
            "lambda_kd_strong": spec.get("lambda_kd_strong", 100 * cfg.loss.lambda_kd),
            "argv": sys.argv, "jobs": args.jobs,
            "plateau_schedule": {"patience": cfg.train.plateau_patience,
                                 "window": cfg.train.plateau_window,
                                 "min_delta": cfg.train.plateau_min_delta,
                                 "drops": cfg.train.plateau_drops,
                                 "lr_factor": cfg.train.lr_factor,
                                 "val_every": cfg.train.val_every,
                                 "epochs": cfg.train.epochs}
            if cfg.train.plateau_patience else None,
            "argv_display": ["python", "-m", "okdhp_edge.experiments",
                             *[a for a in sys.argv[1:] if a != "--report-only"]]}

    def expand(p: PlannedRun) -> list[PlannedRun]:
        extra = {"kl_temperature": kl_t, "lambda_kd_strong": meta["lambda_kd_strong"]}
        if p.arm == "c_eq":
            extra["wall_ratio"] = wall_ratios(results)
            extra["okdhp_wall_s"] = okdhp_wall(results)
        return [PlannedRun(p.arm, p.seed, label, root / f"{p.arm}-seed{p.seed}-{label}",
                           extra_overrides + ov + [f"train.seed={p.seed}"])
                for label, ov in arm_runs(p.arm, cfg, extra)]

    def ready(p: PlannedRun) -> bool:
        if p.arm != "c_eq":
            return True
        need = [q for q in planned_all if q.arm in ("a", "c")]  # every seed: a fair ratio
        return bool(need) and all(q.key in done for q in need) and \
            all(any(q.arm == a for q in need) for a in ("a", "c"))

    def load(q: PlannedRun) -> bool:
        """Record a run finished earlier (its result.json, or the same run in the
        --restore-from report); False when it has none."""
        path = q.run_dir / "result.json"
        if path.is_file():
            res = json.loads(path.read_text())
            _same_run(q.run_dir, {"overrides": res.get("overrides")}, {"overrides": q.overrides})
        else:  # a restored run was matched on these very settings: nothing to check
            same = restorable.get(run_identity(str(base) if base else "", q.overrides))
            if not same:
                return False
            res = next((r for r in same if r["restored_arm"] == q.arm), same[0])
            res = {**res, "restored_overrides": res["overrides"], "overrides": q.overrides}
            q.run_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_json(path, res)
            log.info("%s: restored from a published report (as arm %s there)", q.key,
                     res["restored_arm"])
        record(q, res)
        return True

    def record(run: PlannedRun, res: dict) -> None:
        if "losses" not in res:  # results written before the loss terms were kept
            res["losses"] = _last_losses(run.run_dir / "metrics.jsonl")
        done[run.key] = res
        results.setdefault(run.arm, {}).setdefault(str(run.seed), []).append(res)

    shorter = spec.get("shorter_schedule")
    reference = None
    if shorter:
        ref_path = Path(shorter.get("report", ""))
        if not ref_path.is_file():
            raise UsageError(f"{args.config}: shorter_schedule.report {ref_path} not found")
        reference = json.loads(ref_path.read_text())
        bad = [a for a in shorter.get("pairs", {}) if a not in ARMS]
        if bad or not shorter.get("pairs"):
            raise UsageError(f"{args.config}: shorter_schedule.pairs must map arms of this "
                             f"ablation to arms of {ref_path} (e.g. a: a_2x)")

    def publish() -> None:
        """Rewrite the report from every run recorded so far; when --arms / --seeds chose a
        subset to train, from every finished run of the whole spec (the report is the
        spec's, and a subset must not drop the runs it did not train)."""
        if (args.arms is not None or args.seeds is not None) and not args.report_only:
            spec_arms, spec_seeds = spec.get("arms", list(ARMS)), spec.get("seeds", [0, 1, 2])
            ablation(argparse.Namespace(**{
                **vars(args), "report_only": True,
                "arms": spec_arms + [a for a in arms if a not in spec_arms],
                "seeds": spec_seeds + [x for x in seeds if x not in spec_seeds]}))
            return
        ordered = _ordered(results, arms)
        if reference is not None:
            meta["shorter_schedule"] = {
                "report": str(shorter["report"]), "pairs": shorter["pairs"],
                "gains": shorter_schedule_gains(ordered, reference, shorter["pairs"])}
        write_report(summarize(ordered, bool(meta["plateau_schedule"])), ordered, args.out,
                     meta)

    def pending(runs: list[PlannedRun]) -> list[PlannedRun]:
        """Record the runs finished earlier; the others, still to train."""
        todo = []
        for q in runs:
            if load(q):
                log.info("%s: finished earlier (cached result.json)", q.key)
            else:
                todo.append(q)
        return todo

    # expand what does not depend on other runs now, c_eq later
    queue: list[PlannedRun] = []
    deferred: list[PlannedRun] = []
    for p in planned:
        if p.arm == "c_eq":
            deferred.append(p)
        else:
            queue.extend(expand(p))
    planned_all = list(queue)
    total = len(queue) + len(deferred) * len(cfg.model.branches)
    meta["planned_runs"] = total
    log.info("ablation: %d runs (%d jobs in parallel), work dir %s", total, args.jobs, root)

    if args.report_only:  # re-render from the finished runs, train nothing
        for q in queue:
            load(q)
        for d in deferred:
            try:
                for q in expand(d):
                    load(q)
            except UsageError:  # its a / c runs are not finished
                continue
        if not done:
            raise UsageError(f"{root}: no finished run (result.json) to report")
        publish()
        print(f"report: {args.out.with_suffix('.md')} ({len(done)} of {total} runs)")
        return 0

    import multiprocessing as mp
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    # runs finished earlier first: a ready c_eq must queue before later arms start
    queue = pending(queue)
    if done:
        publish()
    t0 = time.time()
    running: dict[Any, PlannedRun] = {}
    with ProcessPoolExecutor(max_workers=args.jobs, mp_context=mp.get_context("spawn"),
                             max_tasks_per_child=1) as pool:
        while queue or deferred or running:
            for p in [d for d in deferred if ready(d)]:
                deferred.remove(p)
                queue.extend(pending(expand(p)))
                queue.sort(key=priority)  # stable: a ready c_eq goes before later arms
            while queue and len(running) < args.jobs:
                q = queue.pop(0)
                log.info("start %s (%d done of %d)", q.key, len(done), total)
                fut = pool.submit(_worker, str(base) if base else None, q.overrides,
                                  str(q.run_dir), os.getpid())
                running[fut] = q
            if not running:  # cached runs were recorded before: nothing else can become ready
                if deferred:
                    raise UsageError("arm c_eq cannot run: arms a and c are not both in "
                                     "this ablation")
                break
            finished, _ = wait(list(running), return_when=FIRST_COMPLETED)
            for fut in finished:
                q = running.pop(fut)
                res = fut.result()  # a failed run stops the ablation; finished ones are kept
                record(q, res)
                publish()
                log.info("done %s in %.0f s: %s (%d of %d, %.0f min elapsed)", q.key,
                         res["elapsed_s"], ", ".join(f"{k} {v:.3f}" for k, v in
                                                     res["students"].items()),
                         len(done), total, (time.time() - t0) / 60)
    publish()  # also when the last runs were cached
    print(f"report: {args.out.with_suffix('.md')}")
    return 0
