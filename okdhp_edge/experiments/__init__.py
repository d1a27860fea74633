"""``python -m okdhp_edge.experiments ablation --config configs/ablation/synthetic.yaml``

Trains the quickstart students under several settings and seeds on the synthetic data,
and writes ``bench/reports/ablation_synthetic.{md,json}`` with mean and standard
deviation of report-split AP per student and arm, training cost, learning curves and the
exact commands. Resumable run by run: a finished run (its ``result.json``) is skipped, an
interrupted one continues from its checkpoint. When the work dir is lost (a wiped scratch
disk), ``--restore-from bench/reports/ablation_synthetic.json`` takes every run that report
holds instead of training it again (only the results come back, not the checkpoints or
zoos). A run is matched by what decides it, its base config and the last value of each
override, not by the arm it was published under: a patience-4 spec's a_2x (twice the
patience) restores as a patience-8 spec's a.

Arms (``--arms`` picks a subset):
  a  OKDHP unbalanced (the config as given)
  a_2x  OKDHP unbalanced for twice the schedule (epochs, LR steps and KD ramp x2): what
        longer training adds to OKDHP, beside what c_eq adds to the plain students
  b  OKDHP balanced (every branch as deep as the deepest)
  c  each student alone, plain, same epochs (equal iterations)
  c_eq  each student alone, plain, given the OKDHP run's training wall time (equal
        compute: epochs and LR steps scaled by the measured time-per-iteration ratio of
        arm a over arm c, averaged over their seeds; runs after both). Under a plateau
        schedule (train.plateau_patience > 0) the epoch cap is scaled the same way, the
        patience doubled, and the run may not stop before arm a's mean training wall time
        (train.min_wall_s); a_2x then doubles a's patience instead of its schedule
  d  FAU replaced by plain averaging
  e  distillation off, branches and ensemble loss kept
  f  KL with a temperature (default 0.1; released per-pixel normalisation)
  f_joint  KL with per-joint normalisation (temperature 1)
  f_both  both switches at once
  f_detach  KL with temperature T and the ensemble detached (a teacher the KL cannot pull)
  f_weight  the released KL with a stronger weight (spec key lambda_kd_strong, default 100
            times the config's lambda_kd: at 32x24 heatmaps the released 2 x KL pulls a
            prediction 1-3 px off about 250 times more weakly than its MSE does)
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Optional

from okdhp_edge.experiments.arms import (  # noqa: F401 - the package's API
    ARM_NAMES,
    ARM_TITLES,
    ARMS,
    PLATEAU_TITLES,
    _overrides,
    _plain_run,
    _words,
    arm_runs,
    arm_title,
    canonical_arm,
    mac_ratios,
    okdhp_wall,
    wall_ratios,
)
from okdhp_edge.experiments.report import (  # noqa: F401 - the package's API
    ASYMMETRY,
    COMPARISONS,
    PLAIN_ARMS,
    _asymmetric,
    _curves,
    _difference_table,
    _fmt,
    _iteration_range,
    _mean_curve,
    _ordered,
    findings,
    render,
    write_report,
)
from okdhp_edge.experiments.runner import (  # noqa: F401 - the package's API
    AblationRequest,
    ablation,
)
from okdhp_edge.experiments.runs import (  # noqa: F401 - the package's API
    PlannedRun,
    _command_config,
    _last_losses,
    _readable_command,
    _same_run,
    _stop_when_orphaned,
    _worker,
    restorable_runs,
    run_identity,
    run_one,
    train_command,
)
from okdhp_edge.experiments.summary import (  # noqa: F401 - the package's API
    PLATEAU_EVALS,
    PLATEAU_GAIN,
    PLATEAU_LONGER_GAIN,
    PLATEAU_TESTS,
    _depth,
    _iterations,
    _paired,
    _per_seed,
    _per_seed_selection,
    _stats,
    _std,
    best_selection,
    equal_iteration_gaps,
    plateau_gain,
    plateau_verdict,
    shorter_schedule_gains,
    shorter_verdict,
    summarize,
)
from okdhp_edge.grammar import Request, option
from okdhp_edge.utils.cli import Command, console_entry, dispatch, request_main


@dataclass(frozen=True)
class RenderRequest(Request):
    """Re-renders published ablation reports (Markdown) from their JSON."""

    COMMAND: ClassVar[str] = "okdhp experiments render"

    reports: tuple[Path, ...] = option(help="ablation report JSON files", positional=True,
                                       metavar="REPORT_JSON")


def _render(args: RenderRequest) -> int:
    for path in args.reports:
        print(f"report: {render(path)}")
    return 0


ablation_main = request_main(AblationRequest, ablation)
render_main = request_main(RenderRequest, _render)

COMMANDS = {
    "ablation": Command("okdhp_edge.experiments:ablation_main", "the OKDHP ablation: arms x "
                        "seeds, trained, scored and reported"),
    "qat": Command("okdhp_edge.experiments.qat:main", "PTQ vs QAT on labels vs QAT with "
                   "online distillation"),
    "render": Command("okdhp_edge.experiments:render_main", "re-render published ablation "
                      "reports from their JSON"),
}


def main(argv: Optional[list[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    return dispatch(argv, COMMANDS, "okdhp experiments", "The method's ablations: train "
                    "every arm over several seeds, report mean and spread.")


cli = console_entry(main)  # the console script: as python -m, one-line errors
