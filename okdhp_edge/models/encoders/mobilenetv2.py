"""MobileNetV2 encoder (Sandler et al. 2018, "MobileNetV2: Inverted Residuals and Linear
Bottlenecks"), classifier removed.

Layer names follow the reference implementation (torchvision: ``features.N``), so an
ImageNet checkpoint of it loads as it is (its ``classifier.*`` keys are dropped).
"""

from __future__ import annotations

import torch
from torch import nn

# t (expansion), c (channels), n (repeats), s (first stride): Table 2 of the paper
SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
            (6, 160, 3, 2), (6, 320, 1, 1))


def make_divisible(v: float, divisor: int = 8) -> int:
    """Round channels to a multiple of ``divisor``, never below 90 % of ``v``."""
    new = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new + divisor if new < 0.9 * v else new


def conv_bn_relu6(cin: int, cout: int, k: int = 3, stride: int = 1,
                  groups: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride, (k - 1) // 2, groups=groups,
                                   bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU6(inplace=True))


class InvertedResidual(nn.Module):
    """1x1 expansion (t > 1), 3x3 depthwise, linear 1x1 projection; residual when the
    shape is kept."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = int(round(cin * expand))
        self.use_res = stride == 1 and cin == cout
        layers: list[nn.Module] = [conv_bn_relu6(cin, hidden, 1)] if expand != 1 else []
        layers += [conv_bn_relu6(hidden, hidden, 3, stride, groups=hidden),
                   nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout)]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_res else self.conv(x)


class MobileNetV2(nn.Module):
    """3x3/2 conv (32), seventeen inverted residual blocks, 1x1 conv (1280).

    Shape: [B, 3, H, W] -> [B, 1280 x max(1, width_mult), H/32, W/32].
    """

    def __init__(self, width_mult: float = 1.0) -> None:
        super().__init__()
        cin = make_divisible(32 * width_mult)
        last = make_divisible(1280 * max(1.0, width_mult))
        layers: list[nn.Module] = [conv_bn_relu6(3, cin, 3, 2)]
        for t, c, n, s in SETTINGS:
            cout = make_divisible(c * width_mult)
            for i in range(n):
                layers.append(InvertedResidual(cin, cout, s if i == 0 else 1, t))
                cin = cout
        layers.append(conv_bn_relu6(cin, last, 1))
        self.features = nn.Sequential(*layers)
        self.out_channels = last

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)
