"""Best-student selection: each student's weights at its best epoch on the selection split,
kept (``best_students.pt``), restored at the end of the run.

What is kept of a student and how it is made again are the two strategies a run sets:
a float run keeps the student's own weights; a quantization-aware run keeps the whole
network's state (its quantization parameters with it) and rebuilds the float student from
it (:mod:`okdhp_edge.training.qat`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import torch

from okdhp_edge.models.student import Student
from okdhp_edge.training.checkpoint import TrainState, load_checkpoint, save_checkpoint

State = dict[str, torch.Tensor]


@dataclass
class Head:
    """One output that is validated: a branch (a student) or the ensemble."""

    name: str
    branch: Optional[int]  # None for the ensemble (or the one head of a plain network)


class Selection:
    """The best epoch of every student head and what was kept of it.

    ``student(head)``: the head's network as it trains (a copy for a branch);
    ``snapshot(head)``: what is kept at a best epoch (CPU tensors);
    ``restore(head, state)``: the student with a kept state, on ``device``.
    """

    FILE = "best_students.pt"

    def __init__(self, heads: list[Head], state: TrainState,
                 student: Callable[[Head], Student],
                 snapshot: Optional[Callable[[Head], State]] = None,
                 restore: Optional[Callable[[Head, State], torch.nn.Module]] = None) -> None:
        self.heads = [h for h in heads if h.name != "ensemble"]
        self.state = state
        self.student = student
        self.snapshot = snapshot or self._own_weights
        self.restore = restore or self._rebuilt
        self.kept: dict[str, State] = {}
        self.device = torch.device("cpu")

    def _own_weights(self, head: Head) -> State:
        return {k: v.detach().cpu().clone() for k, v in self.student(head).state_dict().items()}

    def _rebuilt(self, head: Head, state: State) -> torch.nn.Module:
        from okdhp_edge.models.registry import create_model

        m = self.student(head)
        m = create_model(m.family, num_joints=m.num_joints, **m.arch()).to(self.device)
        m.load_state_dict(state)
        return m

    def load(self, run_dir: Path) -> None:
        """What an interrupted run kept (resume)."""
        if (run_dir / self.FILE).is_file():
            self.kept = load_checkpoint(run_dir / self.FILE)

    def update(self, metrics: dict[str, float], epoch: int, units: dict[str, str],
               run_dir: Optional[Path]) -> None:
        """Keep every student whose selection metric improved at ``epoch`` (written to
        ``run_dir`` when given: the main process)."""
        s, improved = self.state, False
        for h in self.heads:
            if h.name not in metrics or metrics[h.name] <= s.best.get(h.name, -math.inf):
                continue
            s.best[h.name], s.best_epoch[h.name] = metrics[h.name], epoch
            if h.name in units:
                s.best_units[h.name] = units[h.name]
            self.kept[h.name] = self.snapshot(h)
            improved = True
        if improved and run_dir is not None:
            save_checkpoint(run_dir / self.FILE, self.kept)

    def epoch_of(self, head: Head) -> int:
        """The epoch the head's weights come from (-1: none kept, its current ones)."""
        return self.state.best_epoch.get(head.name, -1) if head.name in self.kept else -1

    def selected(self, head: Head) -> torch.nn.Module:
        """The head's student at its best epoch, or as it stands when none was kept."""
        if head.name in self.kept:
            return self.restore(head, self.kept[head.name])
        return self.student(head)

    def best_epoch(self, head: Head) -> int:
        return int(self.state.best_epoch.get(head.name, self.state.epoch))

    def metric(self, head: Head) -> Optional[float]:
        return self.state.best.get(head.name)
