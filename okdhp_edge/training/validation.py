"""Validation of every head of the training network on the selection split."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from okdhp_edge.data.dataset import TopDownDataset
from okdhp_edge.evaluation.inference import (
    Predictions,
    engine_heatmap_fn,
    predict_heads,
    score_units,
)
from okdhp_edge.training.selection import Head


class HeadValidation:
    """Decoded predictions and the selection metric of each head (the students and the
    ensemble) of ``model``, in eval mode, fp32."""

    def __init__(self, model: torch.nn.Module, heads: list[Head], plain: bool,
                 device: torch.device, channels_last: bool, loaders: Any) -> None:
        self.model, self.heads, self.plain = model, heads, plain
        self.device, self.channels_last, self.loaders = device, channels_last, loaders

    @torch.no_grad()
    def predictions(self, dataset: TopDownDataset, flip: bool) -> dict[str, Predictions]:
        """Every head's decoded predictions on ``dataset`` (the model's mode restored)."""
        was = self.model.training
        self.model.eval()
        try:
            engine = lambda images: self.heatmaps(  # noqa: E731
                torch.from_numpy(images).to(self.device))
            heads_fn = engine_heatmap_fn(engine, dataset.flip_index if flip else None)
            return predict_heads(dataset, heads_fn, batches=self.loaders.evaluation(dataset))
        finally:
            self.model.train(was)

    def heatmaps(self, x: torch.Tensor) -> dict[str, np.ndarray]:
        """Heatmaps [B, K, h, w] of every head for a batch x [B, 3, H, W]."""
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        out = self.model(x)
        if self.plain:
            return {self.heads[0].name: out.heatmap.float().cpu().numpy()}
        hms = {h.name: out.branch_heatmaps[h.branch].float().cpu().numpy()
               for h in self.heads if h.branch is not None}
        hms["ensemble"] = out.ensemble.float().cpu().numpy()
        return hms

    def scores(self, dataset: TopDownDataset, eval_cfg: Any
               ) -> tuple[dict[str, float], dict[str, str]]:
        """(metric per head, per-image results per head, encoded) on ``dataset``."""
        metrics, units = {}, {}
        for name, p in self.predictions(dataset, eval_cfg.flip_test).items():
            r, per_unit = score_units(dataset, p, eval_cfg.rescore_thr, eval_cfg.oks_nms_thr,
                                      dataset.headboxes)
            metrics[name] = float(r["value"])
            if per_unit is not None:
                units[name] = per_unit.encode()
        return metrics, units
