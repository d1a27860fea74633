"""The quickstart architecture written the plain pytorch-pose way (module lists indexed
by stack, downsample convs, one flat forward), used only as a speed reference."""

import torch
import torch.nn.functional as F
from torch import nn


class Bottleneck(nn.Module):
    expansion = 2

    def __init__(self, inplanes, planes, downsample=None):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(inplanes)
        self.conv1 = nn.Conv2d(inplanes, planes, 1)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1)
        self.bn3 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 2, 1)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x):
        residual = x
        out = self.conv1(self.relu(self.bn1(x)))
        out = self.conv2(self.relu(self.bn2(out)))
        out = self.conv3(self.relu(self.bn3(out)))
        if self.downsample is not None:
            residual = self.downsample(x)
        return out + residual


class Hourglass(nn.Module):
    def __init__(self, planes, depth):
        super().__init__()
        self.depth = depth
        hg = []
        for i in range(depth):
            res = [Bottleneck(planes * 2, planes) for _ in range(3)]
            if i == 0:
                res.append(Bottleneck(planes * 2, planes))
            hg.append(nn.ModuleList(res))
        self.hg = nn.ModuleList(hg)

    def _forward(self, n, x):
        up1 = self.hg[n - 1][0](x)
        low1 = self.hg[n - 1][1](F.max_pool2d(x, 2, stride=2))
        low2 = self._forward(n - 1, low1) if n > 1 else self.hg[n - 1][3](low1)
        low3 = self.hg[n - 1][2](low2)
        return up1 + F.interpolate(low3, scale_factor=2)

    def forward(self, x):
        return self._forward(self.depth, x)


class PoseStyleMultiBranch(nn.Module):
    """Stem + `shared` stacks + per-branch stacks + FAU, pytorch-pose style."""

    def __init__(self, shared, branches, num_classes, width, stem, depth, fau_kernels):
        super().__init__()
        planes = width // 2
        self.inplanes = stem
        self.conv1 = nn.Conv2d(3, stem, 7, stride=2, padding=3)
        self.bn1 = nn.BatchNorm2d(stem)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = self._make(stem)
        self.layer2 = self._make(self.inplanes)
        self.layer3 = self._make(planes)
        self.maxpool = nn.MaxPool2d(2, stride=2)
        self.shared, self.branches = shared, branches
        total = shared + sum(branches)
        self.hg = nn.ModuleList(Hourglass(planes, depth) for _ in range(total))
        self.res = nn.ModuleList(Bottleneck(width, planes) for _ in range(total))
        self.fc = nn.ModuleList(nn.Sequential(nn.Conv2d(width, width, 1), nn.BatchNorm2d(width),
                                              nn.ReLU(inplace=True)) for _ in range(total))
        self.score = nn.ModuleList(nn.Conv2d(width, num_classes, 1) for _ in range(total))
        last = {shared + sum(branches[:b + 1]) - 1 for b in range(len(branches))}
        self.fc_ = nn.ModuleList(nn.Conv2d(width, width, 1) if i not in last else nn.Identity()
                                 for i in range(total))
        self.score_ = nn.ModuleList(nn.Conv2d(num_classes, width, 1) if i not in last
                                    else nn.Identity() for i in range(total))
        self.last = last
        self.fau = nn.ModuleList(nn.Sequential(nn.Conv2d(width, width, k, padding=k // 2),
                                               nn.BatchNorm2d(width), nn.ReLU(inplace=True))
                                 for k in fau_kernels)
        self.fau_fc = nn.Linear(width, 64)
        self.fau_heads = nn.ModuleList(nn.Linear(64, num_classes) for _ in branches)

    def _make(self, planes):
        down = None
        if self.inplanes != planes * 2:
            down = nn.Conv2d(self.inplanes, planes * 2, 1)
        layer = Bottleneck(self.inplanes, planes, down)
        self.inplanes = planes * 2
        return layer

    def _stack(self, i, x):
        y = self.fc[i](self.res[i](self.hg[i](x)))
        score = self.score[i](y)
        if i in self.last:
            return score, None
        return score, x + self.fc_[i](y) + self.score_[i](score)

    def forward(self, x):
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.maxpool(self.layer1(x))
        x = self.layer3(self.layer2(x))
        feats = x
        outs = []
        for i in range(self.shared):
            s, x = self._stack(i, x)
            outs.append(s)
        finals = []
        i = self.shared
        for n in self.branches:
            z = x
            for _ in range(n):
                s, z = self._stack(i, z)
                outs.append(s)
                i += 1
            finals.append(s)
        y = sum(m(feats) for m in self.fau)
        z = self.fau_fc(y.mean((2, 3)))
        w = torch.stack([h(z) for h in self.fau_heads], 1).softmax(1)
        ens = (w[..., None, None] * torch.stack(finals, 1)).sum(1)
        return outs, ens
