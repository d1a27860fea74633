"""Transposed convolutions as sub-pixel convolutions: for runtimes whose transposed
convolution is slow (XNNPACK: LiteRT, ExecuTorch) or not quantized (ONNX Runtime's CPU
provider runs ``ConvTranspose`` in float between DequantizeLinear and QuantizeLinear,
microsoft/onnxruntime#8988).

A ``ConvTranspose2d(C_in, C_out, 4, stride 2, padding 1)`` followed by its ``BatchNorm2d``
and ``ReLU`` (a light student's decoder layer) computes exactly what
``Conv2d(C_in, 4 * C_out, 2, padding 1)`` with the batch norm folded in, the ReLU,
``PixelShuffle(2)`` and a crop of one pixel on every side compute. Output row 2m + a of the
transposed convolution reads input rows m - 1 and m through kernel rows 3 and 1 (a = 0), or
rows m and m + 1 through kernel rows 2 and 0 (a = 1): two taps per phase. The 2x2
convolution (padding 1, so [H + 1, W + 1]) reads rows r - 1 and r at its row r; its output
channel 4c + 2g + h, put by the shuffle at row 2r + g, column 2s + h, holds the phase
a = 1 - g, b = 1 - h of channel c through kernel tap (2 + g - 2u, 2 + h - 2v) at its tap
(u, v), which is output pixel (2r + g - 1, 2s + h - 1): every phase one pixel off, hence
the crop. The same sums in another order (float rounding apart), with (H + 1)(W + 1) / HW
of the layer's multiply-adds (1.07-1.31x on the students' decoders; a 3x3 sub-pixel
convolution, whose 5 of 9 taps per phase are zero, costs 2.25x); the ReLU commutes with
the shuffle and the crop, the convolution quantizes and fuses with its ReLU as any other,
and the shuffle (``DepthToSpace``) and crop (``Slice``) move int8 values.
"""

from __future__ import annotations

import copy
from operator import attrgetter
from typing import Any, Optional

import torch
from torch import nn


def subpixel_student(model: nn.Module) -> Optional[nn.Module]:
    """A copy of ``model`` (eval) with every ``[ConvTranspose2d(k 4, s 2, p 1), BatchNorm2d,
    ReLU]`` run of an ``nn.Sequential`` replaced by ``[Conv2d(2x2, padding 1), ReLU,
    PixelShuffle(2), CropBorder()]`` (the batch norm folded into the convolution); None
    when it has no such run. Same forward contract as ``model``: [N, 3, H, W] -> output
    with ``.heatmap`` [N, K, h, w]."""
    out = copy.deepcopy(model).eval()
    replaced = 0
    for seq in [m for m in out.modules() if isinstance(m, nn.Sequential)]:
        layers, i, changed = list(seq), 0, []
        while i < len(layers):
            run = layers[i:i + 3]
            if _foldable(run):
                changed += [_subpixel_conv(run[0], run[1]), nn.ReLU(), nn.PixelShuffle(2),
                            CropBorder()]
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


class CropBorder(nn.Module):
    """Drops the outermost pixel on every side: [N, C, H, W] -> [N, C, H - 2, W - 2]."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, :, 1:-1, 1:-1]


class ChannelLastShuffle(nn.Module):
    """The shuffle and crop of a sub-pixel layer written for a channel-last runtime: the
    input's channels in depth-first order (channel (2g + h) C + c is phase (g, h) of channel
    c, TensorFlow's ``depth_to_space``), moved in NHWC by one transpose of rows of 2C values:
    [N, 4C, H, W] -> [N, C, 2H - 2, 2W - 2]. LiteRT's converter cancels the NCHW <-> NHWC
    transposes around it with the convolutions', where ``PixelShuffle``'s NCHW reshapes kept
    four per layer (mbv2-d32's file: 5 TRANSPOSE operators instead of 14)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c4, h, w = x.shape
        c = c4 // 4
        y = x.permute(0, 2, 3, 1).reshape(n * h, w, 2, 2 * c).transpose(1, 2)
        return y.reshape(n, 2 * h, 2 * w, c)[:, 1:-1, 1:-1, :].permute(0, 3, 1, 2)


def channel_last_shuffles(model: nn.Module) -> nn.Module:
    """A copy of a sub-pixel student (:func:`subpixel_student`) whose every ``[Conv2d, ReLU,
    PixelShuffle(2), CropBorder]`` run is ``[Conv2d, ReLU, ChannelLastShuffle]`` with the
    convolution's output channels reordered from ``PixelShuffle``'s order (4c + 2g + h) to
    depth-first ((2g + h) C + c): the same outputs (a permutation), for LiteRT's NHWC graph.
    The model itself when it has no such run. Same forward contract as ``model``."""
    out = copy.deepcopy(model)
    for seq in [m for m in out.modules() if isinstance(m, nn.Sequential)]:
        layers, keys = list(seq), list(seq._modules)  # noqa: SLF001 - refilled in place
        for i in range(len(layers) - 3):
            conv, _, shuffle, crop = layers[i:i + 4]
            if not (isinstance(shuffle, nn.PixelShuffle) and isinstance(crop, CropBorder)
                    and isinstance(conv, nn.Conv2d) and shuffle.upscale_factor == 2):
                continue
            c = conv.out_channels // 4
            order = torch.arange(4 * c).view(c, 4).t().reshape(-1)  # depth-first <- 4c + k
            conv.weight.data = conv.weight.data[order]
            if conv.bias is not None:
                conv.bias.data = conv.bias.data[order]
            seq._modules[keys[i + 2]] = ChannelLastShuffle()  # noqa: SLF001
            seq._modules[keys[i + 3]] = nn.Identity()  # noqa: SLF001 - the crop is in it
    return out


def _foldable(run: list[nn.Module]) -> bool:
    """``run`` is a stride-2 4x4 transposed convolution (padding 1, no groups, dilation or
    output padding), its batch norm and a ReLU."""
    if len(run) != 3:
        return False
    ct, bn, act = run
    return (isinstance(ct, nn.ConvTranspose2d) and isinstance(bn, nn.BatchNorm2d)
            and isinstance(act, nn.ReLU)
            and _rewritable(ct.kernel_size, ct.stride, ct.padding, ct.output_padding,
                            ct.groups, ct.dilation)
            and bn.num_features == ct.out_channels and bn.track_running_stats)


def _rewritable(kernel: Any, stride: Any, padding: Any, output_padding: Any, groups: int,
                dilation: Any) -> bool:
    """A transposed convolution's geometry is the one the rewrite computes: 4x4, stride 2,
    padding 1, no output padding, groups or dilation."""
    return (tuple(kernel) == (4, 4) and tuple(stride) == (2, 2) and tuple(padding) == (1, 1)
            and tuple(output_padding) == (0, 0) and groups == 1 and tuple(dilation) == (1, 1))


def _subpixel_conv(ct: nn.ConvTranspose2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """The 2x2 convolution (padding 1) whose output channel 4c + 2g + h is phase
    (1 - g, 1 - h) of channel c of ``bn(ct(x))``, one pixel off (see the module)."""
    c_in, c_out = ct.in_channels, ct.out_channels
    scale = (bn.weight / torch.sqrt(bn.running_var + bn.eps)).detach()
    shift = (bn.bias - bn.running_mean * scale).detach()
    if ct.bias is not None:
        shift = shift + ct.bias.detach() * scale
    conv = nn.Conv2d(c_in, 4 * c_out, 2, padding=1, bias=True)
    conv.weight.data = _rearranged(ct.weight.detach()) * \
        scale.repeat_interleave(4).view(-1, 1, 1, 1)
    conv.bias.data = shift.repeat_interleave(4)
    return conv


def _rearranged(w: torch.Tensor) -> torch.Tensor:
    """A transposed convolution's 4x4 kernel [C_in, C_out, 4, 4] as the sub-pixel 2x2
    kernel [4 C_out, C_in, 2, 2]: output channel 4c + 2g + h, tap (u, v) is the 4x4 tap
    (2 + g - 2u, 2 + h - 2v) (every tap read once). Any dtype (int8 weights stay int8)."""
    c_in, c_out = w.shape[:2]
    k = torch.zeros(c_out, 2, 2, c_in, 2, 2, dtype=w.dtype)
    for g in (0, 1):
        for h in (0, 1):
            for u in (0, 1):
                for v in (0, 1):
                    k[:, g, h, :, u, v] = w[:, :, 2 + g - 2 * u, 2 + h - 2 * v].t()
    return k.reshape(4 * c_out, c_in, 2, 2)


def subpixel_program(graph: torch.fx.GraphModule) -> int:
    """The same rewrite on a converted PT2E program (a quantization-aware student's int8
    program, in place): each ``conv_transpose2d`` (4x4, stride 2, padding 1) of a
    per-channel int8 weight whose output goes through a ReLU to a quantize node becomes a
    ``conv2d`` (2x2, padding 1) of the rearranged int8 weight (scales and zero points
    repeated four times: the same int8 values), the ReLU and the quantize node, then
    ``pixel_shuffle(2)`` and the one-pixel crop between a dequantize node and a quantize
    node of the same parameters (they move the int8 values). Returns how many were
    rewritten."""
    ops, aten = torch.ops.quantized_decomposed, torch.ops.aten
    count = 0
    for node in list(graph.graph.nodes):
        if node.target != aten.conv_transpose2d.input or not _program_foldable(node):
            continue
        relu = next(iter(node.users))
        quant = next(iter(relu.users))
        with graph.graph.inserting_before(node):
            conv = graph.graph.call_function(
                aten.conv2d.default, (node.args[0], _subpixel_weight(graph, node.args[1]),
                                      _repeated(graph, node.args[2]), [1, 1], [1, 1]))
        relu.replace_input_with(node, conv)
        graph.graph.erase_node(node)
        for dq in [u for u in quant.users if u.target == ops.dequantize_per_tensor.default]:
            users = list(dq.users)
            out = dq
            for op, args in ((aten.pixel_shuffle.default, (2,)),
                             (aten.slice.Tensor, (2, 1, -1)), (aten.slice.Tensor, (3, 1, -1))):
                out = _moved(graph, out, op, args)
            for user in users:
                user.replace_input_with(dq, out)
        count += 1
    graph.graph.eliminate_dead_code()
    graph.recompile()
    return count


def _moved(graph: torch.fx.GraphModule, dq: torch.fx.Node, op: Any, args: tuple
           ) -> torch.fx.Node:
    """``op(dq, *args)`` (an op that moves values) between ``dq`` and a quantize node of
    ``dq``'s parameters, then a dequantize node: the int8 pattern a runtime moves in int8
    (XNNPACK's quantized slice takes one op between a dequantize and a quantize node)."""
    ops = torch.ops.quantized_decomposed
    with graph.graph.inserting_after(dq):
        moved = graph.graph.call_function(op, (dq, *args))
    with graph.graph.inserting_after(moved):
        q = graph.graph.call_function(ops.quantize_per_tensor.default, (moved, *dq.args[1:]))
    with graph.graph.inserting_after(q):
        return graph.graph.call_function(ops.dequantize_per_tensor.default,
                                         (q, *dq.args[1:]))


def _program_foldable(node: torch.fx.Node) -> bool:
    """A transposed convolution of the rewrite's geometry (:func:`_rewritable`) of a
    per-channel dequantized constant, whose only user is a ReLU whose only user is a
    quantize node."""
    ops, aten = torch.ops.quantized_decomposed, torch.ops.aten
    # aten.conv_transpose2d.input's defaults: stride 1, padding 0, output padding 0,
    # groups 1, dilation 1
    stride, padding, out_pad, groups, dilation = (
        list(node.args[3:]) + [[1, 1], [0, 0], [0, 0], 1, [1, 1]][len(node.args) - 3:])
    w = node.args[1]
    if getattr(w, "target", None) != ops.dequantize_per_channel.default or \
            w.args[0].op != "get_attr" or w.args[3] != 1:
        return False
    kernel = attrgetter(w.args[0].target)(node.graph.owning_module).shape[-2:]
    if not _rewritable(kernel, stride, padding, out_pad, groups, dilation):
        return False
    users = list(node.users)
    if len(users) != 1 or users[0].target != aten.relu.default or len(users[0].users) != 1:
        return False
    return next(iter(users[0].users)).target == ops.quantize_per_tensor.default


def _subpixel_weight(graph: torch.fx.GraphModule, dq: torch.fx.Node) -> torch.fx.Node:
    """A dequantize node (at the graph's insertion point) of the 2x2 weight rearranged from
    ``dq``'s int8 [C_in, C_out, 4, 4] weight (per output channel, axis 1) to
    [4 C_out, C_in, 2, 2] (axis 0)."""
    w = attrgetter(dq.args[0].target)(graph)
    scale, zero = (attrgetter(n.target)(graph) for n in dq.args[1:3])
    base = dq.args[0].target.replace(".", "_")
    names = [f"{base}_subpixel{s}" for s in ("", "_scale", "_zero_point")]
    for name, value in zip(names, (_rearranged(w), scale.repeat_interleave(4),
                                   zero.repeat_interleave(4))):
        graph.register_buffer(name, value)
    attrs = [graph.graph.get_attr(n) for n in names]
    return graph.graph.call_function(dq.target, (*attrs, 0, *dq.args[4:]))


def _repeated(graph: torch.fx.GraphModule, bias: Any) -> Any:
    """``bias`` [C_out] as [4 C_out] (each value four times; None stays None), a node at
    the graph's insertion point."""
    if bias is None:
        return None
    value = attrgetter(bias.target)(graph).repeat_interleave(4)
    name = f"{bias.target.replace('.', '_')}_subpixel"
    graph.register_buffer(name, value)
    return graph.graph.get_attr(name)
