"""The plateau schedule: drop the LR when no student's selection AP has gained for a while,
stop after the last drop. A pure decision on the run's state; the trainer applies it."""

from __future__ import annotations

import math
from typing import Any, Protocol


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
