"""Where and how a run computes: the device, autocast dtype, torch.compile of the step,
seeding and determinism. Each reads only the values it is given (no trainer state)."""

from __future__ import annotations

import logging
import os
import random
from typing import Any, Optional

import numpy as np
import torch

from okdhp_edge.errors import ConfigError
from okdhp_edge.utils.cpu import cpu_has_native_bf16

log = logging.getLogger("okdhp_edge.training.trainer")


def resolve_device(name: str) -> torch.device:
    """``train.device`` (auto, cpu, cuda, cuda:N) as a torch device."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device=cuda but no CUDA device is available here (set "
                          "train.device=auto or cpu)")
    return torch.device(name)


def resolve_amp(amp: str, device: torch.device) -> Optional[torch.dtype]:
    """The autocast dtype for ``train.amp`` on this device, or None for fp32."""
    if amp == "off":
        return None
    if amp == "bf16":
        return torch.bfloat16
    if amp == "fp16":
        return torch.float16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if cpu_has_native_bf16() else None


def compiled_terms(fn: Any, mode: str, device: torch.device) -> Any:
    """``fn`` compiled with ``torch.compile`` in ``mode`` (``off``: as it is). CUDA graphs
    (reduce-overhead) exist on CUDA only: on the CPU that mode compiles as default."""
    if mode == "off":
        return fn
    if mode == "reduce-overhead" and device.type != "cuda":
        log.warning("train.compile=reduce-overhead needs CUDA graphs; compiling as default on "
                    "the %s", device.type)
        mode = "default"
    return torch.compile(fn, mode=mode)


def seed_everything(seed: int, deterministic: bool, device: torch.device) -> None:
    """Seed Python, NumPy and torch; deterministic algorithms when asked, else cuDNN's
    autotuner on CUDA."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    elif device.type == "cuda":
        torch.backends.cudnn.benchmark = True
