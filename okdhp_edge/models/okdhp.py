"""OKDHP multi-branch stacked hourglass with the Feature Aggregation Unit (FAU)."""

from __future__ import annotations

import torch
from torch import nn

from okdhp_edge.models.blocks import Stack, Stem
from okdhp_edge.models.hourglass import StackedHourglass
from okdhp_edge.models.student import MultiBranchOutput


class FAU(nn.Module):
    """Feature Aggregation Unit: per-sample, per-joint branch weights from stem features.

    ``released`` form: conv kxk (k in kernels) + BN + ReLU, summed; GAP; linear F->hidden;
    per branch a linear hidden->K; softmax over branches. ``paper`` form: each kxk conv
    followed by a 1x1 conv, plus an avg-pool + 1x1 path, concatenated. ``mean``: plain
    averaging (an ablation; no parameters).

    Shape: features [B, F, h, w] -> weights [B, T, K].
    """

    def __init__(self, width: int, num_branches: int, num_joints: int, form: str = "released",
                 kernels: tuple[int, ...] = (3, 5, 7), hidden: int = 64) -> None:
        super().__init__()
        self.form, self.num_branches, self.num_joints = form, num_branches, num_joints
        if form == "mean":
            return
        if form == "released":
            self.paths = nn.ModuleList(
                nn.Sequential(nn.Conv2d(width, width, k, padding=k // 2), nn.BatchNorm2d(width),
                              nn.ReLU(inplace=True)) for k in kernels)
            pooled = width
        elif form == "paper":
            self.paths = nn.ModuleList(
                nn.Sequential(nn.Conv2d(width, width, k, padding=k // 2), nn.BatchNorm2d(width),
                              nn.ReLU(inplace=True), nn.Conv2d(width, width, 1))
                for k in kernels)
            self.pool_path = nn.Sequential(nn.AvgPool2d(3, 1, 1), nn.Conv2d(width, width, 1))
            pooled = width * (len(kernels) + 1)
        else:
            raise ValueError(f"unknown FAU form '{form}'; expected released, paper or mean")
        self.fc = nn.Linear(pooled, hidden)
        self.heads = nn.ModuleList(nn.Linear(hidden, num_joints) for _ in range(num_branches))

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        b = feats.shape[0]
        if self.form == "mean":
            return feats.new_full((b, self.num_branches, self.num_joints), 1 / self.num_branches)
        if self.form == "released":
            y = sum(path(feats) for path in self.paths)
        else:
            y = torch.cat([path(feats) for path in self.paths] + [self.pool_path(feats)], 1)
        z = self.fc(y.mean((2, 3)))  # [B, hidden]
        logits = torch.stack([head(z) for head in self.heads], 1)  # [B, T, K]
        return logits.softmax(1)


class MultiBranchHourglass(nn.Module):
    """Stem + ``shared_stacks`` shared stacks + one chain of stacks per branch + FAU.

    Args:
        shared_stacks: stacks shared by every branch (S/2 in the paper).
        branches: per-branch stack counts, e.g. [2, 2, 2] balanced, [2, 4, 6] unbalanced.
        num_joints, width, depth, stem_width, stem: as in :class:`StackedHourglass`.
        fau: ``released`` (default), ``paper`` or ``mean``.

    Shape: [B, 3, H, W] -> MultiBranchOutput with heatmaps [B, K, H/4, W/4].
    """

    multi_branch = True

    def __init__(self, shared_stacks: int = 2, branches: tuple[int, ...] = (2, 2, 2),
                 num_joints: int = 17, width: int = 256, depth: int = 4, stem_width: int = 64,
                 stem: str = "released", fau: str = "released",
                 fau_kernels: tuple[int, ...] = (3, 5, 7), fau_hidden: int = 64) -> None:
        super().__init__()
        if not branches or min(branches) < 1 or shared_stacks < 0:
            raise ValueError("branches must be a non-empty list of stack counts >= 1")
        self.shared_stacks, self.branches = shared_stacks, list(branches)
        self.num_joints, self.width, self.depth, self.stem_width = (num_joints, width, depth,
                                                                    stem_width)
        self.stem_kind = stem
        self.stem = Stem(width, stem_width, stem)
        self.shared = nn.ModuleList(Stack(width, num_joints, depth) for _ in range(shared_stacks))
        self.branch_stacks = nn.ModuleList(
            nn.ModuleList(Stack(width, num_joints, depth, last=(i == n - 1)) for i in range(n))
            for n in self.branches)
        self.fau = FAU(width, len(self.branches), num_joints, fau, tuple(fau_kernels), fau_hidden)

    def forward(self, x: torch.Tensor) -> MultiBranchOutput:
        feats = self.stem(x)
        y = feats
        shared = []
        for stack in self.shared:
            h, y = stack(y)
            shared.append(h)
        per_branch, finals = [], []
        for chain in self.branch_stacks:
            z, hs = y, []
            for stack in chain:
                h, z = stack(z)
                hs.append(h)
            per_branch.append(hs)
            finals.append(hs[-1])
        weights = self.fau(feats)  # [B, T, K]
        stacked = torch.stack(finals, 1)  # [B, T, K, h, w]
        ensemble = (weights[..., None, None].to(stacked.dtype) * stacked).sum(1)
        return MultiBranchOutput(shared, per_branch, finals, ensemble, weights)

    def student(self, branch: int) -> StackedHourglass:
        """Stem + shared stacks + branch ``branch`` as a plain stacked hourglass (a copy)."""
        model = StackedHourglass(num_joints=self.num_joints, **self.student_arch(branch))
        model.stem.load_state_dict(self.stem.state_dict())
        chain = list(self.shared) + list(self.branch_stacks[branch])
        for dst, src in zip(model.stacks, chain):
            dst.load_state_dict(src.state_dict())
        return model.to(next(self.parameters()).device)

    def student_arch(self, branch: int) -> dict:
        """Constructor arguments (but ``num_joints``) of :meth:`student`'s model."""
        return dict(num_stacks=self.shared_stacks + self.branches[branch], width=self.width,
                    depth=self.depth, stem_width=self.stem_width, stem=self.stem_kind)

    def student_modules(self, branch: int) -> tuple[str, ...]:
        """The submodules student ``branch`` is made of: the stem, the shared stacks and its
        own chain (the FAU is the training network's alone)."""
        return ("stem", "shared", f"branch_stacks.{branch}")

    def branch_names(self) -> list[str]:
        """The students' names, one per branch (``hg{shared + own stacks}``)."""
        return [f"hg{self.shared_stacks + n}" for n in self.branches]

    def multi_branch_record(self) -> dict:
        """What a student manifest records of the network it was trained in."""
        return {"shared_stacks": self.shared_stacks, "branches": list(self.branches)}
