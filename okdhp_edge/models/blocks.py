"""Building blocks of the pytorch-pose stacked hourglass."""

from __future__ import annotations

import torch
from torch import nn


class Residual(nn.Module):
    """Pre-activation bottleneck (expansion 2): BN-ReLU-conv1x1, BN-ReLU-conv3x3,
    BN-ReLU-conv1x1, plus the identity or a bare conv1x1 shortcut when channels change.

    Shape: [B, in_ch, H, W] -> [B, out_ch, H, W].
    """

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        mid = out_ch // 2
        self.bn1 = nn.BatchNorm2d(in_ch)
        self.conv1 = nn.Conv2d(in_ch, mid, 1)
        self.bn2 = nn.BatchNorm2d(mid)
        self.conv2 = nn.Conv2d(mid, mid, 3, padding=1)
        self.bn3 = nn.BatchNorm2d(mid)
        self.conv3 = nn.Conv2d(mid, out_ch, 1)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = x if self.shortcut is None else self.shortcut(x)
        out = self.conv1(self.relu(self.bn1(x)))
        out = self.conv2(self.relu(self.bn2(out)))
        out = self.conv3(self.relu(self.bn3(out)))
        return out + skip


def double_by_copy(x: torch.Tensor) -> torch.Tensor:
    """Nearest-neighbour 2x upsampling written as two concatenations and reshapes: the same
    values as ``interpolate(x, scale_factor=2, mode="nearest")``, bit for bit, in operators
    that runtimes without a delegated resize (ExecuTorch's XNNPACK partitioner) keep inside
    their delegate. Shape: [B, C, h, w] -> [B, C, 2h, 2w]."""
    b, c, h, w = x.shape
    # each operand made twice, not one tensor used twice: XNNPACK's partitioner counts a
    # concatenation's distinct inputs (and unsqueezes only the last dimension)
    pairs = torch.cat([x.unsqueeze(-1), x.unsqueeze(-1)], dim=-1)  # [B, C, h, w, 2]
    rows = [pairs.reshape(b, c, h, 2 * w) for _ in range(2)]
    return torch.cat(rows, dim=-1).reshape(b, c, 2 * h, 2 * w)  # row i twice in a row


class NearestUp(nn.Module):
    """Nearest-neighbour upsampling to a given size (the hourglass's skip size).

    ``by_copy`` (off by default; an exporter may set it): an exact 2x step is done by
    :func:`double_by_copy` instead of a resize. No parameters: the state dict is unchanged.
    Shape: [B, C, h, w] -> [B, C, *size].
    """

    def __init__(self) -> None:
        super().__init__()
        self.by_copy = False

    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        h, w = x.shape[-2:]
        if self.by_copy and tuple(size) == (2 * h, 2 * w):
            return double_by_copy(x)
        return nn.functional.interpolate(x, size=size, mode="nearest")


class Hourglass(nn.Module):
    """Recursive hourglass of ``depth`` levels, one residual per slot.

    up = R(x); low = R(pool(x)); low = HG(depth-1, low) or R(low); low = R(low);
    out = up + upsample(low).  Shape: [B, F, H, W] -> [B, F, H, W] (H, W divisible by
    2**depth, or any size with odd levels
    handled by nearest upsampling to the skip's size).
    """

    def __init__(self, width: int, depth: int) -> None:
        super().__init__()
        self.up = Residual(width, width)
        self.pool = nn.MaxPool2d(2, 2)
        self.low1 = Residual(width, width)
        self.low2 = Hourglass(width, depth - 1) if depth > 1 else Residual(width, width)
        self.low3 = Residual(width, width)
        self.upsample = NearestUp()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        up = self.up(x)
        low = self.low3(self.low2(self.low1(self.pool(x))))
        # size, not scale_factor: odd sizes (e.g. 384x288 input -> 9 x 12 at the bottom)
        return up + self.upsample(low, up.shape[-2:])


STEMS = ("released", "lua")


class Stem(nn.Module):
    """conv7x7/2 3->s, BN, ReLU, R(s->2s), maxpool, then two residuals to F channels.

    ``released`` (the OKDHP / pytorch-pose code): R(2s->F) with a projection, R(F->F).
    ``lua`` (Newell's original Torch stem): R(2s->2s), R(2s->F). At s = 64, F = 256 the
    released stem has 160,512 more parameters.

    Shape: [B, 3, H, W] -> [B, F, H/4, W/4].
    """

    def __init__(self, width: int, stem_width: int = 64, kind: str = "released") -> None:
        super().__init__()
        if kind not in STEMS:
            raise ValueError(f"unknown stem '{kind}'; expected one of {', '.join(STEMS)}")
        s = stem_width
        self.conv = nn.Conv2d(3, s, 7, stride=2, padding=3)
        self.bn = nn.BatchNorm2d(s)
        self.relu = nn.ReLU(inplace=True)
        self.res1 = Residual(s, 2 * s)
        self.pool = nn.MaxPool2d(2, 2)
        mid = width if kind == "released" else 2 * s
        self.res2 = Residual(2 * s, mid)
        self.res3 = Residual(mid, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn(self.conv(x)))
        x = self.pool(self.res1(x))
        return self.res3(self.res2(x))


class Stack(nn.Module):
    """One hourglass stack with its heatmap head and, unless last, the re-injection.

    Shape: x [B, F, h, w] -> (heatmap [B, K, h, w], next x [B, F, h, w] or None).
    """

    def __init__(self, width: int, num_joints: int, depth: int = 4, last: bool = False) -> None:
        super().__init__()
        self.hourglass = Hourglass(width, depth)
        self.res = Residual(width, width)
        self.fc = nn.Sequential(nn.Conv2d(width, width, 1), nn.BatchNorm2d(width),
                                nn.ReLU(inplace=True))
        self.score = nn.Conv2d(width, num_joints, 1)
        # near-zero initial heatmaps (HRNet / SimpleBaseline init of the final layer): the
        # network does not spend its first iterations unlearning random peaks
        nn.init.normal_(self.score.weight, std=0.001)
        nn.init.zeros_(self.score.bias)
        self.last = last
        if not last:
            self.fc_ = nn.Conv2d(width, width, 1)
            self.score_ = nn.Conv2d(num_joints, width, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        y = self.fc(self.res(self.hourglass(x)))
        heatmap = self.score(y)
        if self.last:
            return heatmap, None
        return heatmap, x + self.fc_(y) + self.score_(heatmap)
