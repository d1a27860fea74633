"""ShuffleNetV2 encoder (Ma et al. 2018, "ShuffleNet V2: Practical Guidelines for Efficient
CNN Architecture Design"), classifier removed.

Layer names follow the reference implementation (torchvision), so an ImageNet checkpoint of
it loads as it is (its ``fc.*`` keys are dropped).
"""

from __future__ import annotations

import torch
from torch import nn

# output channels of conv1, stage2, stage3, stage4, conv5 per width multiplier (Table 5)
STAGE_CHANNELS = {0.5: (24, 48, 96, 192, 1024), 1.0: (24, 116, 232, 464, 1024),
                  1.5: (24, 176, 352, 704, 1024), 2.0: (24, 244, 488, 976, 2048)}
REPEATS = (4, 8, 4)


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    b, c, h, w = x.shape
    return x.view(b, groups, c // groups, h, w).transpose(1, 2).reshape(b, c, h, w)


def _dw(c: int, stride: int) -> list[nn.Module]:
    return [nn.Conv2d(c, c, 3, stride, 1, groups=c, bias=False), nn.BatchNorm2d(c)]


def _pw(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


class InvertedResidual(nn.Module):
    """ShuffleNetV2 unit: channel split (stride 1) or two strided branches (stride 2),
    concatenation, channel shuffle."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        half = cout // 2
        if stride > 1:
            self.branch1 = nn.Sequential(*_dw(cin, stride), *_pw(cin, half))
        b2_in = cin if stride > 1 else half
        self.branch2 = nn.Sequential(*_pw(b2_in, half), *_dw(half, stride), *_pw(half, half))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 1:
            x1, x2 = x.chunk(2, dim=1)
            out = torch.cat((x1, self.branch2(x2)), 1)
        else:
            out = torch.cat((self.branch1(x), self.branch2(x)), 1)
        return channel_shuffle(out, 2)


class ShuffleNetV2(nn.Module):
    """3x3/2 conv, 3x3/2 max-pool, three stages of shuffle units, 1x1 conv.

    ``width_mult`` is one of the published 0.5, 1.0, 1.5, 2.0.

    Shape: [B, 3, H, W] -> [B, C5, H/32, W/32] (C5 = 1024, 2048 at 2.0x).
    """

    def __init__(self, width_mult: float = 1.0) -> None:
        super().__init__()
        if float(width_mult) not in STAGE_CHANNELS:
            raise ValueError(f"ShuffleNetV2 width_mult {width_mult} is not one of the "
                             f"published {sorted(STAGE_CHANNELS)}")
        ch = STAGE_CHANNELS[float(width_mult)]
        self.conv1 = nn.Sequential(nn.Conv2d(3, ch[0], 3, 2, 1, bias=False),
                                   nn.BatchNorm2d(ch[0]), nn.ReLU(inplace=True))
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        cin = ch[0]
        for i, (reps, cout) in enumerate(zip(REPEATS, ch[1:4])):
            units = [InvertedResidual(cin, cout, 2)] + [InvertedResidual(cout, cout, 1)
                                                       for _ in range(reps - 1)]
            setattr(self, f"stage{i + 2}", nn.Sequential(*units))
            cin = cout
        self.conv5 = nn.Sequential(*_pw(cin, ch[4]))
        self.out_channels = ch[4]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.conv1(x))
        return self.conv5(self.stage4(self.stage3(self.stage2(x))))
