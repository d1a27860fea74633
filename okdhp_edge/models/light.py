"""Light pose networks: a stride-32 encoder with deconvolution decoders (SimpleBaseline,
Xiao et al. 2018; MobilePose), plain and in the OKDHP multi-branch form."""

from __future__ import annotations

import torch
from torch import nn

from okdhp_edge.models.encoders import ABBREVIATIONS, create_encoder
from okdhp_edge.models.okdhp import FAU
from okdhp_edge.models.student import MultiBranchOutput, StudentOutput


class DeconvDecoder(nn.Module):
    """``layers`` x (4x4 transposed conv, stride 2, BN, ReLU) of ``width`` channels, then a
    1x1 conv to K heatmaps. Three layers take stride 32 to stride 4.

    Shape: [B, C, H/32, W/32] -> [B, K, H/4, W/4] (with layers = 3).
    """

    def __init__(self, cin: int, width: int, num_joints: int, layers: int = 3) -> None:
        super().__init__()
        mods: list[nn.Module] = []
        for _ in range(layers):
            mods += [nn.ConvTranspose2d(cin, width, 4, 2, 1, bias=False),
                     nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
            cin = width
        self.deconv = nn.Sequential(*mods)
        self.head = nn.Conv2d(width, num_joints, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.deconv(x))


def _check(encoder: str, decoder_layers: int) -> None:
    if decoder_layers < 1:
        raise ValueError("decoder_layers must be >= 1")
    if encoder not in ABBREVIATIONS:
        create_encoder(encoder)  # raises with the known names


class EncoderDecoder(nn.Module):
    """A light student: encoder + one deconvolution decoder.

    Args:
        encoder: ``resnet18``, ``mobilenetv2`` or ``shufflenetv2``.
        width_mult: the encoder's width multiplier.
        decoder_width: channels of every decoder layer (256 in SimpleBaseline).
        decoder_layers: transposed convolutions (3: stride 32 -> 4).
        num_joints: heatmap channels K.

    Shape: [B, 3, H, W] -> StudentOutput with one heatmap [B, K, H/4, W/4].
    """

    family = "encoder_decoder"

    def __init__(self, encoder: str = "mobilenetv2", width_mult: float = 1.0,
                 decoder_width: int = 256, decoder_layers: int = 3,
                 num_joints: int = 17) -> None:
        super().__init__()
        _check(encoder, decoder_layers)
        self.encoder_name, self.width_mult = encoder, float(width_mult)
        self.decoder_width, self.decoder_layers = decoder_width, decoder_layers
        self.num_joints = num_joints
        self.encoder = create_encoder(encoder, width_mult)
        self.decoder = DeconvDecoder(self.encoder.out_channels, decoder_width, num_joints,
                                     decoder_layers)

    def forward(self, x: torch.Tensor) -> StudentOutput:
        return StudentOutput([self.decoder(self.encoder(x))])

    def arch(self) -> dict:
        """Constructor arguments but ``num_joints``."""
        return dict(encoder=self.encoder_name, width_mult=self.width_mult,
                    decoder_width=self.decoder_width, decoder_layers=self.decoder_layers)

    def short_name(self) -> str:
        """``mbv2-d128``; the width multiplier joins the encoder when it is not 1."""
        return light_name(self.encoder_name, self.width_mult, self.decoder_width)


def light_name(encoder: str, width_mult: float, decoder_width: int) -> str:
    mult = "" if float(width_mult) == 1.0 else f"x{float(width_mult):g}"
    return f"{ABBREVIATIONS[encoder]}{mult}-d{decoder_width}"


class MultiBranchLight(nn.Module):
    """OKDHP with a shared light encoder: one deconvolution decoder per branch (widths may
    differ, so one run yields students of several costs) and the FAU.

    The FAU reads the shared encoder features through a 1x1 projection to ``fau_width``
    channels (at a stride-32 width of 512-1280 its kxk convolutions would otherwise dwarf
    a light student) and weights the branches' heatmaps per sample and joint.

    Shape: [B, 3, H, W] -> MultiBranchOutput with heatmaps [B, K, H/4, W/4].
    """

    multi_branch = True

    def __init__(self, encoder: str = "mobilenetv2", width_mult: float = 1.0,
                 decoder_widths: tuple[int, ...] = (64, 128, 256), decoder_layers: int = 3,
                 num_joints: int = 17, fau: str = "released",
                 fau_kernels: tuple[int, ...] = (3, 5, 7), fau_hidden: int = 64,
                 fau_width: int = 64) -> None:
        super().__init__()
        _check(encoder, decoder_layers)
        if not decoder_widths or min(decoder_widths) < 1:
            raise ValueError("decoder_widths must be a non-empty list of widths >= 1")
        self.encoder_name, self.width_mult = encoder, float(width_mult)
        self.decoder_widths, self.decoder_layers = list(decoder_widths), decoder_layers
        self.num_joints = num_joints
        self.encoder = create_encoder(encoder, width_mult)
        cin = self.encoder.out_channels
        self.decoders = nn.ModuleList(DeconvDecoder(cin, w, num_joints, decoder_layers)
                                      for w in self.decoder_widths)
        self.fau_proj = nn.Sequential(nn.Conv2d(cin, fau_width, 1, bias=False),
                                      nn.BatchNorm2d(fau_width), nn.ReLU(inplace=True))
        self.fau = FAU(fau_width, len(self.decoder_widths), num_joints, fau,
                       tuple(fau_kernels), fau_hidden)

    def forward(self, x: torch.Tensor) -> MultiBranchOutput:
        feats = self.encoder(x)
        finals = [dec(feats) for dec in self.decoders]
        weights = self.fau(self.fau_proj(feats))  # [B, T, K]
        stacked = torch.stack(finals, 1)  # [B, T, K, h, w]
        ensemble = (weights[..., None, None].to(stacked.dtype) * stacked).sum(1)
        return MultiBranchOutput([], [[h] for h in finals], finals, ensemble, weights)

    def student(self, branch: int) -> EncoderDecoder:
        """Encoder + decoder ``branch`` as a plain light network (a copy)."""
        model = EncoderDecoder(num_joints=self.num_joints, **self.student_arch(branch))
        model.encoder.load_state_dict(self.encoder.state_dict())
        model.decoder.load_state_dict(self.decoders[branch].state_dict())
        return model.to(next(self.parameters()).device)

    def student_modules(self, branch: int) -> tuple[str, ...]:
        """The submodules student ``branch`` is made of: the shared encoder and its own
        decoder (the FAU and its projection are the training network's alone)."""
        return ("encoder", f"decoders.{branch}")

    def student_arch(self, branch: int) -> dict:
        """Constructor arguments (but ``num_joints``) of :meth:`student`'s model."""
        return dict(encoder=self.encoder_name, width_mult=self.width_mult,
                    decoder_width=self.decoder_widths[branch],
                    decoder_layers=self.decoder_layers)

    def branch_names(self) -> list[str]:
        """The students' names, one per branch."""
        return [light_name(self.encoder_name, self.width_mult, w) for w in self.decoder_widths]

    def multi_branch_record(self) -> dict:
        """What a student manifest records of the network it was trained in."""
        return {"encoder": self.encoder_name, "width_mult": self.width_mult,
                "decoder_widths": list(self.decoder_widths)}
