"""Light students (ResNet-18 / MobileNetV2 / ShuffleNetV2 encoders with deconvolution
decoders): published sizes, OKDHP training, student extraction, export and manifests."""

from __future__ import annotations

import json

import pytest
import torch

from okdhp_edge.models.encoders import create_encoder, load_encoder_checkpoint
from okdhp_edge.models.info import count_params
from okdhp_edge.models.registry import create_model
from tests.conftest import okdhp, tiny_overrides

# parameters without the ImageNet classifier of the reference implementations
# (torchvision resnet18 11,689,512 - fc 513,000; mobilenet_v2 3,504,872 - 1,281,000;
# shufflenet_v2_x1_0 2,278,604 - 1,025,000; shufflenet_v2_x0_5 1,366,792 - 1,025,000)
PUBLISHED = {("resnet18", 1.0): 11_176_512, ("mobilenetv2", 1.0): 2_223_872,
             ("shufflenetv2", 1.0): 1_253_604, ("shufflenetv2", 0.5): 341_792}


def _resnet18_by_hand() -> int:
    """ResNet-18's parameters from its definition: convs without bias, BN 2 per channel."""
    conv = lambda cin, cout, k: cin * cout * k * k  # noqa: E731
    n = conv(3, 64, 7) + 2 * 64
    cin = 64
    for c in (64, 128, 256, 512):
        n += conv(cin, c, 3) + conv(c, c, 3) + 4 * c + conv(c, c, 3) * 2 + 4 * c
        if c != cin:
            n += conv(cin, c, 1) + 2 * c
        cin = c
    return n


@pytest.mark.parametrize(("name", "mult"), sorted(PUBLISHED))
def test_encoders_have_the_published_size(name, mult):
    enc = create_encoder(name, mult)
    assert count_params(enc) == PUBLISHED[(name, mult)]
    assert enc(torch.zeros(1, 3, 64, 96)).shape[-2:] == (2, 3)  # stride 32


def test_resnet18_count_derived_from_the_definition():
    assert _resnet18_by_hand() == PUBLISHED[("resnet18", 1.0)]


def test_models_cli_prints_light_students():
    res = okdhp("models", "light", "encoder=shufflenetv2", "decoder_width=128",
                "--input-size", "192", "256", "--json")
    assert res.returncode == 0, res.stderr
    info = json.loads(res.stdout)
    expected = create_model("light", encoder="shufflenetv2", decoder_width=128)
    assert info["params"] == count_params(expected) and info["macs"] > 0


def test_encoder_checkpoint_in_reference_layout(tmp_path):
    ref = create_encoder("mobilenetv2", 0.5)
    state = {f"module.{k}": v for k, v in ref.state_dict().items()}
    state["classifier.1.weight"] = torch.zeros(10, 4)  # the ImageNet head is dropped
    torch.save({"state_dict": state}, tmp_path / "mbv2.pth")
    enc = create_encoder("mobilenetv2", 0.5)
    load_encoder_checkpoint(enc, tmp_path / "mbv2.pth")
    assert all(torch.equal(a, b) for a, b in zip(enc.state_dict().values(),
                                                 ref.state_dict().values()))
    with pytest.raises(ValueError, match="does not fit"):
        load_encoder_checkpoint(create_encoder("shufflenetv2", 0.5), tmp_path / "mbv2.pth")
    with pytest.raises(FileNotFoundError):
        load_encoder_checkpoint(enc, tmp_path / "absent.pth")


def test_light_config_checks():
    from okdhp_edge.config import ConfigError, load_config

    with pytest.raises(ConfigError, match="divide by 32"):
        load_config(overrides=["model.name=okdhp_light", "data.input_size=[48,64]"])
    with pytest.raises(ConfigError, match="stride"):
        load_config(overrides=["model.name=light", "data.input_size=[64,64]",
                               "model.decoder_layers=2"])
    with pytest.raises(ValueError, match="did you mean 'mobilenetv2'"):
        create_model("light", encoder="mobilenet_v2")


LIGHT_TINY = {"resnet18": 0.125, "mobilenetv2": 0.25, "shufflenetv2": 0.5}


@pytest.mark.parametrize("encoder", sorted(LIGHT_TINY))
def test_light_family_trains_extracts_exports(encoder, synthetic_root, tmp_path):
    """A few iterations of OKDHP with a shared light encoder; the students equal the
    branches, export to ONNX and OpenVINO with parity and round-trip their manifests."""
    from okdhp_edge.config import load_config
    from okdhp_edge.export.exporter import export_student
    from okdhp_edge.manifest import zoo_students
    from okdhp_edge.students import load_student
    from okdhp_edge.training.trainer import Trainer
    from okdhp_edge.training.zoo_writer import write_zoo

    cfg = load_config(overrides=tiny_overrides(
        synthetic_root, tmp_path, "model.name=okdhp_light", f"model.encoder={encoder}",
        f"model.width_mult={LIGHT_TINY[encoder]}", "model.decoder_widths=[8,16]",
        "model.fau_width=8", "data.input_size=[64,64]", "train.epochs=1",
        "train.max_iters_per_epoch=3", "zoo.name=light"))
    trainer = Trainer(cfg, config_name="light")
    run = trainer.fit()
    x = torch.randn(2, 3, 64, 64)
    trainer.model.eval()
    with torch.no_grad():
        out = trainer.model(x)
        for h in trainer.heads[:-1]:
            student = trainer.student(h).eval()  # memory layouts differ: float tolerance
            torch.testing.assert_close(student(x).heatmap, out.branch_heatmaps[h.branch])
    zoo = write_zoo(run)
    students = zoo_students(zoo)
    abbrev = {"resnet18": "r18", "mobilenetv2": "mbv2", "shufflenetv2": "sv2"}[encoder]
    assert [m.name for _, m in students] == [f"{abbrev}x{LIGHT_TINY[encoder]:g}-d8",
                                                f"{abbrev}x{LIGHT_TINY[encoder]:g}-d16"]
    d, man = students[0]
    assert man.architecture.family == "encoder_decoder"
    assert man.provenance.multi_branch["decoder_widths"] == [8, 16]
    model, loaded = load_student(d / "student.yaml")  # rebuilt from the manifest alone
    assert loaded.architecture.args == model.arch()
    best = trainer.selection.kept[man.name]
    assert all(torch.equal(v, best[k]) for k, v in model.state_dict().items())
    rec = export_student(d / "student.yaml", formats=("onnx", "openvino_fp32"))
    for fmt in ("onnx", "openvino_fp32"):
        assert rec.formats[fmt].available, rec.formats[fmt]
        assert rec.formats[fmt].parity.passed, rec.formats[fmt].parity
    # a torch-free bundle of the light student gives the PyTorch student's keypoints
    import numpy as np

    from okdhp_edge.export.bundles import export_bundle
    from okdhp_edge.runtime.bundle import load_bundle
    from okdhp_edge.students import torch_engine

    pipe = load_bundle(export_bundle(d / "student.yaml", "openvino", "fp32", tmp_path / "b"))
    img = np.random.default_rng(0).integers(0, 255, (120, 160, 3), dtype=np.uint8)
    kp = pipe(img, (20, 10, 60, 90))
    xin, c, s = pipe.preprocess(img, (20, 10, 60, 90))
    coords, _ = pipe.codec.decode_to_image(torch_engine(model)(xin), c[None], s[None])
    assert np.abs(coords[0] - kp[:, :2]).max() < 0.5
