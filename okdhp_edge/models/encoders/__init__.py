"""Light image encoders ending at stride 32: name -> class, and loading a local checkpoint.

Each encoder has ``out_channels`` and maps [B, 3, H, W] -> [B, out_channels, H/32, W/32].
They are written here, not taken from torchvision: torchvision from PyPI does not import
beside the pinned CPU torch 2.13.0 (``operator torchvision::nms does not exist``).
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

from okdhp_edge.families import ENCODER_ABBREVIATIONS
from okdhp_edge.models.encoders.mobilenetv2 import MobileNetV2
from okdhp_edge.models.encoders.resnet import ResNet18
from okdhp_edge.models.encoders.shufflenetv2 import ShuffleNetV2

log = logging.getLogger(__name__)

ENCODERS: dict[str, type[nn.Module]] = {
    "resnet18": ResNet18, "mobilenetv2": MobileNetV2, "shufflenetv2": ShuffleNetV2}
# short names used in student names (r18-d256, mbv2-d128, ...): the family table's
ABBREVIATIONS = ENCODER_ABBREVIATIONS
# the classifier of the reference implementations, dropped from a checkpoint
_CLASSIFIER_PREFIXES = ("fc.", "classifier.")


def create_encoder(name: str, width_mult: float = 1.0) -> nn.Module:
    """An encoder by name (``resnet18``, ``mobilenetv2``, ``shufflenetv2``)."""
    if name not in ENCODERS:
        import difflib

        close = difflib.get_close_matches(name, list(ENCODERS), n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise ValueError(f"unknown encoder '{name}'{hint} (known: {', '.join(ENCODERS)})")
    return ENCODERS[name](width_mult=width_mult)


def load_encoder_checkpoint(encoder: nn.Module, path: str | Path) -> None:
    """Load ImageNet (or any) weights of the reference implementation's layout into
    ``encoder``: a state dict, or a dict holding one under ``state_dict`` / ``model``.
    Classifier keys are dropped; any other missing or unexpected key is an error."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"encoder checkpoint {path}: no such file")
    state = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise ValueError(f"encoder checkpoint {path}: not a state dict")
    state = {k.removeprefix("module."): v for k, v in state.items()
             if not k.removeprefix("module.").startswith(_CLASSIFIER_PREFIXES)}
    missing, unexpected = encoder.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(f"encoder checkpoint {path} does not fit {type(encoder).__name__}: "
                         f"missing {missing[:3]}{'...' if len(missing) > 3 else ''}, "
                         f"unexpected {unexpected[:3]}{'...' if len(unexpected) > 3 else ''}")
    log.info("encoder weights loaded from %s (%d tensors)", path, len(state))
