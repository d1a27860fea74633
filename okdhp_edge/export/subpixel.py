"""Transposed convolutions as sub-pixel convolutions, for runtimes with no quantized
transposed convolution (ONNX Runtime's CPU provider runs ``ConvTranspose`` in float between
DequantizeLinear and QuantizeLinear, microsoft/onnxruntime#8988).

A ``ConvTranspose2d(C_in, C_out, 4, stride 2, padding 1)`` followed by its ``BatchNorm2d``
and ``ReLU`` (a light student's decoder layer) computes exactly what
``Conv2d(C_in, 4 * C_out, 3, padding 1)`` with the batch norm folded in, the ReLU, then
``PixelShuffle(2)`` compute: output pixel (2i + a, 2j + b) of channel c reads input pixels
(i + di, j + dj), di, dj in {-1, 0, 1}, through the kernel tap (a + 1 - 2 di, b + 1 - 2 dj)
where it lies in [0, 4), which is output channel 4c + 2a + b of the 3x3 convolution at
(di + 1, dj + 1); the ReLU commutes with the shuffle. The same sums in another order (float
rounding apart); the convolution quantizes and fuses with its ReLU as any other, and the
shuffle (``DepthToSpace``) moves int8 values. 2.25x the multiply-adds of the layer (5 of 9
taps per phase are zero), which int8 pays for where the float transposed convolution cost
more (mbv2-d64: 0.71x its fp32 file in ONNX Runtime INT8, against 1.10x; docs/int8.md).
"""

from __future__ import annotations

import copy
from typing import Optional

import torch
from torch import nn


def subpixel_student(model: nn.Module) -> Optional[nn.Module]:
    """A copy of ``model`` (eval) with every ``[ConvTranspose2d(k 4, s 2, p 1), BatchNorm2d,
    ReLU]`` run of an ``nn.Sequential`` replaced by ``[Conv2d(3x3), ReLU, PixelShuffle(2)]``
    (the batch norm folded into the convolution); None when it has no such run. Same
    forward contract as ``model``: [N, 3, H, W] -> output with ``.heatmap`` [N, K, h, w]."""
    out = copy.deepcopy(model).eval()
    replaced = 0
    for seq in [m for m in out.modules() if isinstance(m, nn.Sequential)]:
        layers, i, changed = list(seq), 0, []
        while i < len(layers):
            run = layers[i:i + 3]
            if _foldable(run):
                changed += [_subpixel_conv(run[0], run[1]), nn.ReLU(), nn.PixelShuffle(2)]
                i, replaced = i + 3, replaced + 1
            else:
                changed.append(layers[i])
                i += 1
        if any(a is not b for a, b in zip(changed, layers)):
            for key in list(seq._modules):  # noqa: SLF001 - the same object, refilled
                del seq._modules[key]  # noqa: SLF001
            for k, layer in enumerate(changed):
                seq.add_module(str(k), layer)
    return out if replaced else None


def _foldable(run: list[nn.Module]) -> bool:
    """``run`` is a stride-2 4x4 transposed convolution (padding 1, no groups, dilation or
    output padding), its batch norm and a ReLU."""
    if len(run) != 3:
        return False
    ct, bn, act = run
    return (isinstance(ct, nn.ConvTranspose2d) and isinstance(bn, nn.BatchNorm2d)
            and isinstance(act, nn.ReLU) and ct.kernel_size == (4, 4)
            and ct.stride == (2, 2) and ct.padding == (1, 1) and ct.groups == 1
            and ct.dilation == (1, 1) and ct.output_padding == (0, 0)
            and bn.num_features == ct.out_channels and bn.track_running_stats)


def _subpixel_conv(ct: nn.ConvTranspose2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """The 3x3 convolution whose output channel 4c + 2a + b is phase (a, b) of channel c of
    ``bn(ct(x))``."""
    w = ct.weight.detach()  # [C_in, C_out, 4, 4]
    c_in, c_out = w.shape[:2]
    scale = (bn.weight / torch.sqrt(bn.running_var + bn.eps)).detach()
    shift = (bn.bias - bn.running_mean * scale).detach()
    if ct.bias is not None:
        shift = shift + ct.bias.detach() * scale
    k = torch.zeros(c_out, 2, 2, c_in, 3, 3, dtype=w.dtype)
    for a in (0, 1):
        for b in (0, 1):
            for di in (-1, 0, 1):
                for dj in (-1, 0, 1):
                    kh, kw = a + 1 - 2 * di, b + 1 - 2 * dj
                    if 0 <= kh < 4 and 0 <= kw < 4:
                        k[:, a, b, :, di + 1, dj + 1] = w[:, :, kh, kw].t()
    conv = nn.Conv2d(c_in, 4 * c_out, 3, padding=1, bias=True)
    conv.weight.data = (k * scale.view(-1, 1, 1, 1, 1, 1)).reshape(4 * c_out, c_in, 3, 3)
    conv.bias.data = shift.repeat_interleave(4)
    return conv
