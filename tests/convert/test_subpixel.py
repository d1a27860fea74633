"""Transposed convolutions as sub-pixel convolutions (2x2, shuffle, crop): exact in float,
and ONNX Runtime's INT8 file quantizes them (no float ConvTranspose left)."""

from __future__ import annotations

import pytest
import torch

from okdhp_edge.convert.subpixel import subpixel_student
from okdhp_edge.manifest import zoo_students
from okdhp_edge.models import create_model


def _randomised(model: torch.nn.Module) -> torch.nn.Module:
    """Batch norms with statistics and affine parameters away from the identity."""
    g = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g))
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            m.weight.data.copy_(torch.randn(n, generator=g))
            m.bias.data.copy_(torch.randn(n, generator=g))
    return model.eval()


def test_subpixel_decoder_computes_the_transposed_one():
    model = _randomised(create_model("light", encoder="mobilenetv2", width_mult=0.25,
                                     decoder_width=8, num_joints=5))
    sub = subpixel_student(model)
    assert sub is not None and model.decoder.deconv[0].__class__.__name__ == "ConvTranspose2d"
    kinds = [type(m).__name__ for m in sub.decoder.deconv]
    assert kinds == ["Conv2d", "ReLU", "PixelShuffle", "CropBorder"] * 3
    x = torch.randn(2, 3, 128, 96, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref, got = model(x).heatmap, sub(x).heatmap
    assert got.shape == ref.shape == (2, 5, 32, 24)
    assert torch.allclose(got, ref, atol=1e-5 * float(ref.abs().max()))
    # the channel-last form LiteRT converts: the same outputs, the shuffles in NHWC
    from okdhp_edge.convert.subpixel import channel_last_shuffles

    last = channel_last_shuffles(sub)
    kinds = [type(m).__name__ for m in last.decoder.deconv]
    assert kinds == ["Conv2d", "ReLU", "ChannelLastShuffle", "Identity"] * 3
    with torch.no_grad():
        assert torch.allclose(last(x).heatmap, ref, atol=1e-5 * float(ref.abs().max()))
    assert channel_last_shuffles(model).decoder.deconv[0].__class__.__name__ == \
        "ConvTranspose2d"  # nothing to move in the transposed form
    hourglass = create_model("stacked_hourglass", num_stacks=1, width=8, depth=1, stem_width=8,
                             num_joints=5)
    assert subpixel_student(hourglass) is None  # nothing to rewrite


def test_onnx_runtime_int8_file_quantizes_the_decoder(synthetic_root, tmp_path):
    import onnx

    from okdhp_edge.backends.recipe import QuantRecipe
    from okdhp_edge.export.exporter import export_student
    from okdhp_edge.plan import write_plan_zoo
    from tests.conftest import ROOT, tiny_overrides
    from tests.convert.test_quantize import _convs_without_quantized_output, _ort_float_convs

    overrides = tiny_overrides(synthetic_root, tmp_path, "model.name=okdhp_light",
                               "model.width_mult=0.25", "model.decoder_widths=[8]",
                               "model.fau_width=8", "data.input_size=[64,64]")
    zoo = write_plan_zoo([ROOT / "configs" / "quickstart.yaml"], overrides, tmp_path / "zoo")
    d, _ = zoo_students(zoo)[0]
    ops = {}
    for choice in ("subpixel", "keep"):
        out = tmp_path / choice
        recipe = QuantRecipe.from_record(dict(num_images=8, ort_transposed_conv=choice))
        e = export_student(d / "student.yaml", out, formats=("onnx_int8",),
                           recipe=recipe).formats["onnx_int8"]
        assert e.available and e.parity.passed, (choice, e.reason, e.parity)
        assert e.quantization.recipe["ort_transposed_conv"] == choice
        graph = onnx.load(str(out / e.file)).graph
        ops[choice] = [n.op_type for n in graph.node]
        assert sorted(p.name for p in out.iterdir()) == sorted(["export.yaml", "model.onnx",
                                                                e.file])  # no temporary left
        if choice == "subpixel":  # every convolution with a quantized output fused
            assert _ort_float_convs(out / e.file) <= _convs_without_quantized_output(graph)
    assert ops["subpixel"].count("DepthToSpace") == 3 and "ConvTranspose" not in ops["subpixel"]
    assert ops["keep"].count("ConvTranspose") == 3
    with pytest.raises(Exception, match="ort_transposed_conv must be one of"):
        QuantRecipe.from_record(dict(ort_transposed_conv="all"))
