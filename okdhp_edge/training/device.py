"""Where and how a run computes: the device, autocast dtype, torch.compile of the step,
seeding and determinism. Each reads only the values it is given (no trainer state)."""

from __future__ import annotations

import logging
import os
import random
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
import torch

from okdhp_edge.errors import ConfigError
from okdhp_edge.utils.cpu import ThreadGovernor, cpu_has_native_bf16

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


def thread_governor(threads: int, device: torch.device, distributed: bool,
                    compile_mode: str = "off") -> Optional[ThreadGovernor]:
    """Pin ``train.threads`` when set; else a governor for a single CPU process (None on
    CUDA, where the host threads do not bound the step, and for distributed CPU runs). A
    compiled CPU step keeps one thread count: a change would recompile it (measured: a
    compiled quickstart iteration took 254 s after the governor dropped to 1 thread)."""
    if threads > 0:
        torch.set_num_threads(threads)
        return None
    if device.type != "cpu" or distributed:
        return None
    if compile_mode != "off":
        log.info("train.compile=%s: the thread count stays at %d while training (a change "
                 "would recompile the step); set train.threads to choose it", compile_mode,
                 torch.get_num_threads())
        return None
    return ThreadGovernor(torch.get_num_threads())


@dataclass
class Placement:
    """Where a run computes: its process group, device, autocast dtype, thread governor."""

    dist: Any
    device: torch.device
    amp_dtype: Optional[torch.dtype]
    governor: Optional[ThreadGovernor]


def place(tcfg: Any) -> Placement:
    """Join the process group (under torchrun), pick the device (this rank's GPU), the
    autocast dtype and the thread policy, and seed everything (the seed + the rank)."""
    from okdhp_edge.training.distributed import init_distributed

    dist = init_distributed(resolve_device(tcfg.device).type)
    device = resolve_device(tcfg.device)
    if device.type == "cuda" and dist.enabled:
        device = torch.device("cuda", dist.local_rank)
    governor = thread_governor(tcfg.threads, device, dist.enabled, tcfg.compile)
    seed_everything(tcfg.seed + dist.rank, tcfg.deterministic, device)
    return Placement(dist, device, resolve_amp(tcfg.amp, device), governor)
