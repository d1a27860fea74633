"""Plain stacked hourglass (Newell et al. 2016, pytorch-pose variant)."""

from __future__ import annotations

import torch
from torch import nn

from okdhp_edge.models.blocks import Stack, Stem
from okdhp_edge.models.student import StudentOutput


class StackedHourglass(nn.Module):
    """Stem and ``num_stacks`` hourglass stacks with intermediate supervision.

    Args:
        num_stacks: number of stacks.
        num_joints: heatmap channels K.
        width: feature channels F (256 in the paper).
        depth: hourglass recursion depth (4).
        stem_width: first conv channels (64).
        stem: ``released`` (the OKDHP code's stem, default) or ``lua`` (Newell's).

    Shape: [B, 3, H, W] -> StudentOutput with num_stacks heatmaps [B, K, H/4, W/4].
    """

    family = "stacked_hourglass"

    def __init__(self, num_stacks: int = 2, num_joints: int = 17, width: int = 256,
                 depth: int = 4, stem_width: int = 64, stem: str = "released") -> None:
        super().__init__()
        if num_stacks < 1:
            raise ValueError("num_stacks must be >= 1")
        self.num_stacks, self.num_joints, self.width = num_stacks, num_joints, width
        self.depth, self.stem_width, self.stem_kind = depth, stem_width, stem
        self.stem = Stem(width, stem_width, stem)
        self.stacks = nn.ModuleList(
            Stack(width, num_joints, depth, last=(i == num_stacks - 1)) for i in range(num_stacks)
        )

    def forward(self, x: torch.Tensor) -> StudentOutput:
        x = self.stem(x)
        heatmaps = []
        for stack in self.stacks:
            h, x = stack(x)
            heatmaps.append(h)
        return StudentOutput(heatmaps)

    def arch(self) -> dict:
        """Constructor arguments but ``num_joints``: with it, enough to rebuild the module
        (``create_model(family, num_joints=K, **arch())``)."""
        return dict(num_stacks=self.num_stacks, width=self.width, depth=self.depth,
                    stem_width=self.stem_width, stem=self.stem_kind)

    def short_name(self) -> str:
        """``hg4``: the student's name in a zoo."""
        return f"hg{self.num_stacks}"

