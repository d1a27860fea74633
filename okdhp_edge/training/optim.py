"""The optimizer of a run and its learning-rate schedule (no trainer state)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Optional

import torch


def scaled_lr(tcfg: Any, world_size: int = 1) -> float:
    """``train.lr`` scaled from ``lr_reference_batch`` to the batch of one step over all
    ranks: linearly (Goyal et al. 2017), by the square root, or not at all."""
    ratio = tcfg.batch_size * world_size / tcfg.lr_reference_batch
    factor = {"none": 1.0, "linear": ratio, "sqrt": math.sqrt(ratio)}[tcfg.lr_scaling]
    return tcfg.lr * factor


def set_lr(group: dict[str, Any], value: Any) -> None:
    """Set a param group's LR in place where it is a tensor (a compiled optimizer step
    holds on to that tensor), else replace it."""
    if isinstance(group["lr"], torch.Tensor):
        group["lr"].fill_(float(value))
    else:
        group["lr"] = float(value)


def lr_factor(tcfg: Any, it: int, iters_per_epoch: int, drops: int) -> float:
    """The LR multiplier at iteration ``it``: step drops (or the plateau schedule's
    ``drops``), after a linear warm-up."""
    epoch = it / max(1, iters_per_epoch)
    n = drops if tcfg.plateau_patience else sum(epoch >= s for s in tcfg.lr_steps)
    f = tcfg.lr_factor ** n
    if tcfg.warmup_iters and it < tcfg.warmup_iters:
        f *= (it + 1) / tcfg.warmup_iters
    return f


@dataclass
class Optimization:
    """Adam, its LR schedule, the fp16 grad scaler and (compiled runs) the compiled step."""

    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: Any
    base_lr: float
    compiled_step: Optional[Callable[[], Any]] = None

    def step(self, loss: torch.Tensor) -> None:
        """Backward ``loss``, one optimizer step, the scheduler's step."""
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.compiled_step is not None:
            self.compiled_step()
        else:
            self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()

    @property
    def lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def state_dict(self) -> dict[str, Any]:
        return {"optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict()}

    def load_state_dict(self, ck: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(ck["optimizer"])
        self.scheduler.load_state_dict(ck["scheduler"])
        self.scaler.load_state_dict(ck["scaler"])


def build_optimization(model: torch.nn.Module, tcfg: Any, device: torch.device,
                       amp_dtype: Optional[torch.dtype], world_size: int,
                       factor: Callable[[int], float]) -> Optimization:
    """The run's :class:`Optimization`; ``factor(iteration)`` is the LR schedule."""
    base_lr = scaled_lr(tcfg, world_size)
    compiled = tcfg.compile != "off"
    # a compiled optimizer step reads the LR as a tensor: a Python float would be baked
    # into the graph and recompile it at every scheduler step
    optimizer = torch.optim.Adam(
        model.parameters(), weight_decay=tcfg.weight_decay,
        lr=torch.tensor(base_lr, device=device) if compiled else base_lr,
        fused=device.type == "cuda" or None)
    use_scaler = amp_dtype == torch.float16 and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_scaler)
    # the grad scaler steps the optimizer itself (eagerly); otherwise the step compiles
    step = torch.compile(optimizer.step) if compiled and not use_scaler else None
    return Optimization(optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, factor),
                        scaler, base_lr, step)
