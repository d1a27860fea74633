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
from operator import attrgetter
from typing import Any, Optional

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
    """The 3x3 convolution whose output channel 4c + 2a + b is phase (a, b) of channel c of
    ``bn(ct(x))``."""
    c_in, c_out = ct.in_channels, ct.out_channels
    scale = (bn.weight / torch.sqrt(bn.running_var + bn.eps)).detach()
    shift = (bn.bias - bn.running_mean * scale).detach()
    if ct.bias is not None:
        shift = shift + ct.bias.detach() * scale
    conv = nn.Conv2d(c_in, 4 * c_out, 3, padding=1, bias=True)
    conv.weight.data = _rearranged(ct.weight.detach()) * \
        scale.repeat_interleave(4).view(-1, 1, 1, 1)
    conv.bias.data = shift.repeat_interleave(4)
    return conv


def _rearranged(w: torch.Tensor) -> torch.Tensor:
    """A transposed convolution's 4x4 kernel [C_in, C_out, 4, 4] as the sub-pixel 3x3
    kernel [4 C_out, C_in, 3, 3] (output channel 4c + 2a + b: phase (a, b) of channel c;
    the taps no phase reads are 0). Any dtype (int8 weights stay int8)."""
    c_in, c_out = w.shape[:2]
    k = torch.zeros(c_out, 2, 2, c_in, 3, 3, dtype=w.dtype)
    for a in (0, 1):
        for b in (0, 1):
            for di in (-1, 0, 1):
                for dj in (-1, 0, 1):
                    kh, kw = a + 1 - 2 * di, b + 1 - 2 * dj
                    if 0 <= kh < 4 and 0 <= kw < 4:
                        k[:, a, b, :, di + 1, dj + 1] = w[:, :, kh, kw].t()
    return k.reshape(4 * c_out, c_in, 3, 3)


def subpixel_program(graph: torch.fx.GraphModule) -> int:
    """The same rewrite on a converted PT2E program (a quantization-aware student's int8
    program, in place): each ``conv_transpose2d`` (4x4, stride 2, padding 1) of a
    per-channel int8 weight whose output goes through a ReLU to a quantize node becomes a
    ``conv2d`` (3x3) of the rearranged int8 weight (scales and zero points repeated four
    times: the same int8 values, the missing taps 0), the ReLU and the quantize node, then
    ``pixel_shuffle(2)`` between a dequantize node and a quantize node of the same
    parameters (a shuffle moves the int8 values). Returns how many were rewritten."""
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
            with graph.graph.inserting_after(dq):
                shuffle = graph.graph.call_function(aten.pixel_shuffle.default, (dq, 2))
            with graph.graph.inserting_after(shuffle):
                q = graph.graph.call_function(ops.quantize_per_tensor.default,
                                              (shuffle, *dq.args[1:]))
            with graph.graph.inserting_after(q):
                dq2 = graph.graph.call_function(ops.dequantize_per_tensor.default,
                                                (q, *dq.args[1:]))
            dq.replace_all_uses_with(dq2, delete_user_cb=lambda u, s=shuffle: u is not s)
        count += 1
    graph.graph.eliminate_dead_code()
    graph.recompile()
    return count


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
    """A dequantize node (at the graph's insertion point) of the 3x3 weight rearranged from
    ``dq``'s int8 [C_in, C_out, 4, 4] weight (per output channel, axis 1) to
    [4 C_out, C_in, 3, 3] (axis 0)."""
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
