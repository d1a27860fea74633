"""torchao's pattern tracing memoised (okdhp_edge.convert.pt2e): a QAT network prepared,
trained, switched and converted gives the same program as torchao's own tracing, and a second
preparation and conversion traces nothing again."""

from __future__ import annotations

import contextlib
import sys

import pytest
import torch

from tests.conftest import require

require("executorch", reason="XNNPACK's QAT quantizer needs okdhp_edge[qat]")


class StudentBlocks(torch.nn.Module):
    """A light student's blocks under the name "net", as QatNetwork exports them: conv + BN +
    ReLU6, depthwise, transposed conv + BN, a plain 1x1 head (no conv1d: its patterns take
    the unmatchable path). Shape: [1, 3, H, W] -> ([1, 4, 2H, 2W],)."""

    def __init__(self) -> None:
        super().__init__()
        nn = torch.nn
        self.net = nn.Module()
        self.net.body = nn.Sequential(
            nn.Conv2d(3, 8, 3, 1, 1, bias=False), nn.BatchNorm2d(8), nn.ReLU6(),
            nn.Conv2d(8, 8, 3, 1, 1, groups=8, bias=False), nn.BatchNorm2d(8), nn.ReLU6(),
            nn.ConvTranspose2d(8, 8, 4, 2, 1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
            nn.Conv2d(8, 4, 1))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor]:
        return (self.net.body(x),)


def _trained() -> torch.fx.GraphModule:
    """Prepared for QAT with XNNPACK's annotation, a training step, moved to eval."""
    from torchao.quantization.pt2e import move_exported_model_to_eval, move_exported_model_to_train
    from torchao.quantization.pt2e.quantize_pt2e import prepare_qat_pt2e

    from okdhp_edge.config import QatConfig
    from okdhp_edge.training.qat import quantizer

    torch.manual_seed(0)
    x = torch.zeros(1, 3, 16, 16)
    net = prepare_qat_pt2e(torch.export.export(StudentBlocks().train(), (x,)).module(),
                           quantizer(QatConfig(), ("body",)))
    move_exported_model_to_train(net)
    net(torch.randn(1, 3, 16, 16))[0].square().mean().backward()
    torch.optim.SGD(net.parameters(), lr=0.01).step()
    move_exported_model_to_eval(net)
    return net


def _convert(net: torch.fx.GraphModule) -> torch.fx.GraphModule:
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e

    from okdhp_edge.training.qat import _copy

    return convert_pt2e(_copy(net))


@contextlib.contextmanager
def _as_torchao_ships(monkeypatch):
    """torchao's own pattern tracing (every pattern traced on every call) for the block."""
    from torchao.quantization.pt2e import qat_utils

    from okdhp_edge.convert import pt2e

    with monkeypatch.context() as m:
        for name in pt2e._TRACER_USERS:
            if name in sys.modules:
                m.setattr(sys.modules[name], pt2e._TRACER, pt2e._PATCHED["trace"])
        m.setattr(qat_utils, "_fold_conv_bn_qat_helper",
                  qat_utils._fold_conv_bn_qat_helper.__wrapped__)
        yield


def _same(a: torch.fx.GraphModule, b: torch.fx.GraphModule) -> None:
    assert a.code == b.code
    state, want = a.state_dict(), b.state_dict()
    assert state.keys() == want.keys() and all(torch.equal(state[k], want[k]) for k in want)
    x = torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a(x)[0], b(x)[0])


# slow: torchao's own conversion traces 96 patterns (~10 s); the default suite's QAT tests
# (test_qat.py, test_qat_quantizer.py) check the memoised programs' operators and heatmaps
@pytest.mark.slow
def test_memoised_patterns_convert_as_torchao_does(monkeypatch):
    """The conversion (96 traced patterns as torchao ships it) gives the same program, and a
    second one traces nothing again."""
    from okdhp_edge.convert import pt2e

    assert pt2e.install()
    net = _trained()
    fast = _convert(net)
    traced = len(pt2e._CACHE)
    assert _convert(net).code == fast.code and len(pt2e._CACHE) == traced > 0
    with _as_torchao_ships(monkeypatch):
        plain = _convert(net)
    _same(fast, plain)


@pytest.mark.slow
def test_memoised_patterns_prepare_train_and_convert_as_torchao_does(monkeypatch):
    """All of it, preparation (XNNPACK's annotation edits its patterns) and the train/eval
    switches included (~25 s)."""
    from okdhp_edge.convert import pt2e

    assert pt2e.install()
    fast = _convert(_trained())
    with _as_torchao_ships(monkeypatch):
        plain = _convert(_trained())
    _same(fast, plain)


def test_a_pattern_key_tells_closures_and_shapes_apart():
    from okdhp_edge.convert.pt2e import pattern_key

    def make(flag):
        def pattern(x):
            return x + 1 if flag else x
        return pattern

    x2, x3 = (torch.zeros(1, 2),), (torch.zeros(1, 3),)
    assert pattern_key(make(True), x2, False, {}) == pattern_key(make(True), x2, False, {})
    assert pattern_key(make(True), x2, False, {}) != pattern_key(make(False), x2, False, {})
    assert pattern_key(make(True), x2, False, {}) != pattern_key(make(True), x3, False, {})
    assert pattern_key(make([1]), x2, False, {}) is None  # mutable: traced, not memoised
    assert pattern_key(make(object()), x2, False, {}) is None
    import torch.nn.functional as F

    assert pattern_key(make(F.conv2d), x2, False, {}) != pattern_key(make(F.conv1d), x2, False, {})


def test_each_convolution_kind_has_an_unmatchable_pattern():
    from okdhp_edge.convert.pt2e import _conv_ops, _unmatchable

    for op in _conv_ops().values():  # a network without that kind (hourglass: no transposed)
        calls = [n for n in _unmatchable(op).graph.nodes if n.op == "call_function"]
        assert len(calls) == 1 and calls[0].target.overloadpacket is op


# slow: ~12 s in a process that has traced nothing yet; in the default suite the QAT tests
# (test_qat.py, test_qat_quantizer.py) prepare and convert through the memo
@pytest.mark.slow
def test_a_second_conversion_traces_no_pattern_again():
    """What the memo is for: once a network of these kinds was prepared and converted in a
    process, another is without a single trace (torchao traces ~130 each time)."""
    from okdhp_edge.convert import pt2e

    assert pt2e.install()
    first = _convert(_trained())
    traced = len(pt2e._CACHE)
    assert traced > 0 and _convert(_trained()).code == first.code
    assert len(pt2e._CACHE) == traced
