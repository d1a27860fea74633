"""OKDHP losses: weighted heatmap MSE, pixel-wise KL distillation, the ramp."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


def heatmap_mse(pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Mean over joints of 0.5 x mean over batch and pixels of (w*P - w*G)^2.

    Shape: pred, target [B, K, H, W]; weight [B, K] -> scalar.
    """
    w = weight[:, :, None, None].to(pred.dtype)
    diff = (pred.float() * w - target.float() * w) ** 2
    return 0.5 * diff.mean()


def pixel_kl(pred: torch.Tensor, teacher: torch.Tensor, weight: torch.Tensor,
             temperature: float = 1.0, norm: str = "pixels") -> torch.Tensor:
    """KL(q || p) with q = softmax over pixels of (w * teacher / T), p the same of pred.

    Summed over joints and pixels, divided by B x H x W (``norm='pixels'``, released) or
    by B x K (``norm='joint'``: a mean per-joint KL). No T^2 factor: a temperature
    below 1 is meant to sharpen the distributions and strengthen the term. Invisible
    joints (w = 0) give two uniform distributions, hence 0.

    Shape: pred, teacher [B, K, H, W]; weight [B, K] -> scalar.
    """
    b, k, h, w_ = pred.shape
    wt = weight[:, :, None, None].float()
    logp = torch.log_softmax((pred.float() * wt / temperature).reshape(b, k, -1), -1)
    logq = torch.log_softmax((teacher.float() * wt / temperature).reshape(b, k, -1), -1)
    kl = (logq.exp() * (logq - logp)).sum()
    denom = b * h * w_ if norm == "pixels" else b * k
    return kl / denom


def ramp(epoch: float, ramp_epochs: float) -> float:
    """r(e) = exp(-5 (1 - min(e, R)/R)^2), the sigmoid-shaped warm-up of the KD weight."""
    if ramp_epochs <= 0:
        return 1.0
    t = 1.0 - min(epoch, ramp_epochs) / ramp_epochs
    return math.exp(-5.0 * t * t)


@dataclass
class LossTerms:
    """The parts of the OKDHP loss (tensors) and their total."""

    total: torch.Tensor
    mse: torch.Tensor
    ens: torch.Tensor
    kl: torch.Tensor


def okdhp_terms(out, target: torch.Tensor, weight: torch.Tensor, lcfg
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The three unweighted terms (sum_o MSE(o), MSE(m_e), sum_o KL(o | m_e)): the part of
    the step that is a pure function of the batch, so a compiled step never sees the ramp
    (a Python float that changes every iteration would recompile it)."""
    outputs = out.all_heatmaps()
    mse = sum(heatmap_mse(o, target, weight) for o in outputs)
    ens = heatmap_mse(out.ensemble, target, weight)
    kl = torch.zeros((), device=target.device)
    if lcfg.distill and lcfg.lambda_kd > 0:
        teacher = out.ensemble.detach() if lcfg.detach_ensemble else out.ensemble
        kl = sum(pixel_kl(o, teacher, weight, lcfg.kl_temperature, lcfg.kl_norm)
                 for o in outputs)
    return mse, ens, kl


def combine(mse: torch.Tensor, ens: torch.Tensor, kl: torch.Tensor, epoch: float,
            lcfg) -> LossTerms:
    """L = mse + lambda_ens ens + lambda_kd r(epoch) kl."""
    total = mse + lcfg.lambda_ens * ens + lcfg.lambda_kd * ramp(epoch, lcfg.ramp_epochs) * kl
    return LossTerms(total, mse, ens, kl)


def okdhp_loss(out, target: torch.Tensor, weight: torch.Tensor, epoch: float,
               lcfg) -> LossTerms:
    """L = sum_o MSE(o) + lambda_ens MSE(m_e) + lambda_kd r(e) sum_o KL(o | m_e).

    ``out`` is an :class:`~okdhp_edge.models.student.MultiBranchOutput`; ``lcfg`` a LossConfig.
    """
    return combine(*okdhp_terms(out, target, weight, lcfg), epoch, lcfg)


def plain_terms(out, target: torch.Tensor, weight: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Baseline terms: the stack MSEs of a plain network (ensemble and KL terms zero)."""
    mse = sum(heatmap_mse(o, target, weight) for o in out.stack_heatmaps)
    zero = torch.zeros((), device=target.device)
    return mse, zero, zero


def plain_loss(out, target: torch.Tensor, weight: torch.Tensor) -> LossTerms:
    """Baseline: sum of the stack MSEs of a plain stacked hourglass (StudentOutput)."""
    mse, zero, _ = plain_terms(out, target, weight)
    return LossTerms(mse, mse, zero, zero)
