"""What a finished training run hands to the zoo writer."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import torch

from okdhp_edge.config import Config
from okdhp_edge.models.student import Student


@dataclass(frozen=True)
class QatOrigin:
    """What a quantization-aware run's students record of their fine-tuning."""

    from_run: str  # the float run it started from
    recipe: dict[str, Any]  # quantizer, weights, activations, observers, KD, epochs, LR


@dataclass(frozen=True)
class TrainedRun:
    """What a finished run hands to the zoo writer: its students, with the weights selected
    on the selection split, in eval mode, and what their manifests record of the run."""

    cfg: Config
    run_dir: Path
    device: torch.device
    students: dict[str, Student]  # name -> network, in branch order
    branches: dict[str, int]  # name -> branch index (-1: a plain network)
    best_epoch: dict[str, int]  # name -> epoch its weights were selected at
    select_metric: dict[str, Optional[float]]  # name -> its selection-split metric there
    multi_branch: dict[str, Any]  # the network's branch record ({} for a plain network)
    flip_pairs: list
    evaluation_loader: Callable[[Any], Any]  # dataset -> the run's evaluation batches
    # quantization-aware runs: name -> the student's int8 program in PyTorch, and what the
    # manifests record of the fine-tuning
    quantized: dict[str, torch.nn.Module] = field(default_factory=dict)
    qat: Optional[QatOrigin] = None
