"""ResNet-18 encoder (He et al. 2016, "Deep Residual Learning"), classifier removed.

Layer names follow the reference implementation (torchvision), so an ImageNet checkpoint of
it loads as it is (its ``fc.*`` keys are dropped).
"""

from __future__ import annotations

import torch
from torch import nn


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a shortcut (a strided 1x1 projection where shapes change)."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                            nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        skip = x if self.downsample is None else self.downsample(x)
        return self.relu(out + skip)


class ResNet18(nn.Module):
    """7x7/2 conv, 3x3/2 max-pool, four stages of two basic blocks (64, 128, 256, 512).

    ``width_mult`` scales every stage's channels (1.0 is the published network).

    Shape: [B, 3, H, W] -> [B, 512 x width_mult, H/32, W/32].
    """

    def __init__(self, width_mult: float = 1.0) -> None:
        super().__init__()
        widths = [max(8, int(round(c * width_mult))) for c in (64, 128, 256, 512)]
        self.conv1 = nn.Conv2d(3, widths[0], 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        cin = widths[0]
        for i, c in enumerate(widths):
            stride = 1 if i == 0 else 2
            setattr(self, f"layer{i + 1}", nn.Sequential(BasicBlock(cin, c, stride),
                                                          BasicBlock(c, c)))
            cin = c
        self.out_channels = cin

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))
