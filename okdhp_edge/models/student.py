"""What a student is, and what the networks return: the contract between the models, the
trainer, the zoo writer and the exporters (the one place it is written down).

A *student* is a plain network (a stacked hourglass, a light encoder-decoder) that a zoo
ships; a *multi-branch network* is the OKDHP training network whose branches become
students. Both are ``nn.Module``s; these Protocols name what the rest of the kit reads off
them, so that a new family is checked against one list.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn


@dataclass
class StudentOutput:
    """Every stack's heatmap, first to last; ``heatmap`` is the last (the prediction).
    Each [B, K, H/s, W/s] for a [B, 3, H, W] input at heatmap stride s."""

    stack_heatmaps: list[torch.Tensor]

    @property
    def heatmap(self) -> torch.Tensor:
        return self.stack_heatmaps[-1]


@dataclass
class MultiBranchOutput:
    """Named outputs of a multi-branch network.

    Attributes:
        shared_heatmaps: heatmaps of the shared stacks, [B, K, h, w] each.
        branch_stack_heatmaps: per branch, the heatmaps of its own stacks.
        branch_heatmaps: per branch, its final heatmap (its prediction).
        ensemble: the FAU-weighted ensemble of the branch heatmaps, [B, K, h, w].
        weights: FAU weights [B, T, K] (softmax over the branch axis).
    """

    shared_heatmaps: list[torch.Tensor]
    branch_stack_heatmaps: list[list[torch.Tensor]]
    branch_heatmaps: list[torch.Tensor]
    ensemble: torch.Tensor
    weights: torch.Tensor

    def all_heatmaps(self) -> list[torch.Tensor]:
        """Every stack heatmap the network emits, shared ones once."""
        return self.shared_heatmaps + [h for hs in self.branch_stack_heatmaps for h in hs]


@runtime_checkable
class Student(Protocol):
    """A plain network a zoo ships. ``family`` is its registry name in the family table;
    ``create_model(family, num_joints=num_joints, **arch())`` rebuilds it."""

    family: str
    num_joints: int

    def __call__(self, x: torch.Tensor) -> StudentOutput: ...

    def arch(self) -> dict[str, Any]: ...

    def short_name(self) -> str: ...


@runtime_checkable
class MultiBranchNet(Protocol):
    """The OKDHP training network: branches that teach each other through an ensemble.
    ``student(i)`` is branch i as a :class:`Student` with the same weights (bit-identical
    outputs); ``branch_names()`` their names in a zoo; ``student_modules(i)`` the dotted
    names of the submodules student i is made of (quantization-aware training quantizes
    those of the branches it fine-tunes and leaves the rest, the FAU and the ensemble, in
    float)."""

    num_joints: int

    def __call__(self, x: torch.Tensor) -> MultiBranchOutput: ...

    def branch_names(self) -> list[str]: ...

    def student_modules(self, branch: int) -> tuple[str, ...]: ...

    def student(self, branch: int) -> Student: ...

    def multi_branch_record(self) -> dict[str, Any]: ...


class HeatmapOnly(nn.Module):
    """Wraps a student (any family) to return only its final heatmap (export/runtime).

    Shape: [B, 3, H, W] -> [B, K, H/s, W/s].
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.train(model.training)  # a fresh wrapper must not flip the student to train mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x).heatmap


def export_module(model: nn.Module, size: tuple[int, int]) -> tuple[HeatmapOnly, torch.Tensor]:
    """What an exporter traces: ``model`` as a float CPU eval :class:`HeatmapOnly`, and a
    zero example input [1, 3, H, W] for ``size`` = (W, H)."""
    w, h = size
    return HeatmapOnly(model.float().cpu().eval()).eval(), torch.zeros(1, 3, h, w)
