"""The plateau schedule: drop the LR when no student's selection AP has gained for a while,
stop after the last drop. :meth:`PlateauSchedule.verdict` is a pure decision on the run's
state; :meth:`PlateauSchedule.apply` agrees it across ranks and applies it."""

from __future__ import annotations

import logging
import math
from typing import Any, Callable, Protocol

log = logging.getLogger("okdhp_edge.training.trainer")


class PlateauState(Protocol):
    """The fields of the run's state (saved in its checkpoint) the schedule reads and keeps."""

    epoch: int
    wall: float
    history: list
    drops: int
    stale: int
    plateau_ref: dict[str, float]


class PlateauSchedule:
    """Decides, after each validation, "" (go on), "drop" (LR x train.lr_factor) or "stop".

    A student counts as progressing when the mean of its last ``plateau_window`` selection
    APs beats the best such mean so far by ``plateau_min_delta``; ``plateau_patience``
    validations in a row without any student progressing (none before
    ``plateau_min_epoch``) make a plateau. After ``plateau_drops`` drops the next plateau
    stops the run, once ``min_wall_s`` of training has passed.
    """

    def __init__(self, tcfg: Any) -> None:
        self.cfg = tcfg

    def verdict(self, state: PlateauState, metrics: dict[str, float],
                students: list[str]) -> str:
        """Update ``state.plateau_ref`` and ``state.stale`` with this validation's
        ``metrics`` (selection AP per student) and return the verdict."""
        cfg = self.cfg
        improved = False
        for name in students:
            if name not in metrics:
                continue
            past = [r["select"][name] for r in state.history if name in r["select"]]
            recent = (past + [metrics[name]])[-cfg.plateau_window:]
            value = sum(recent) / len(recent)
            if value > state.plateau_ref.get(name, -math.inf) + cfg.plateau_min_delta:
                state.plateau_ref[name] = value
                improved = True
        early = state.epoch < cfg.plateau_min_epoch  # not yet allowed to level off
        state.stale = 0 if improved or early else state.stale + 1
        if state.stale < cfg.plateau_patience:
            return ""
        if state.drops < cfg.plateau_drops:
            return "drop"
        return "stop" if state.wall >= cfg.min_wall_s else ""

    def finished_message(self, state: PlateauState) -> str:
        cfg = self.cfg
        return (f"plateau after {state.drops} LR drops: no student gained "
                f"{cfg.plateau_min_delta:g} selection AP in {cfg.plateau_patience} validations")

    def apply(self, state: Any, metrics: dict[str, float], students: list[str], dist: Any,
              optimizer: Any, factor: Callable[[int], float]) -> str:
        """The verdict after a validation, decided on rank 0 (the only one with metrics)
        and agreed by every rank; a drop sets the LR of ``optimizer`` from the next
        iteration on (``factor``: the LR schedule), a stop marks ``state.finished``."""
        from okdhp_edge.training.distributed import broadcast_flag
        from okdhp_edge.training.optim import set_lr

        cfg = self.cfg
        verdict = self.verdict(state, metrics, students) if dist.is_main else ""
        if broadcast_flag(verdict == "drop", dist):
            state.drops, state.stale = state.drops + 1, 0
            for group in optimizer.param_groups:
                set_lr(group, group["initial_lr"] * factor(state.iteration))
            log.info("plateau: no student gained %.4g selection AP in %d validations; LR drop "
                     "%d of %d, LR now %.2e", cfg.plateau_min_delta, cfg.plateau_patience,
                     state.drops, cfg.plateau_drops, float(optimizer.param_groups[0]["lr"]))
            return "drop"
        if broadcast_flag(verdict == "stop", dist):
            state.finished = self.finished_message(state)
            log.info("%s; stopping at epoch %d, iteration %d", state.finished, state.epoch,
                     state.iteration)
            return "stop"
        return ""
