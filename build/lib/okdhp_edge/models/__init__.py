"""Models: stacked hourglass, OKDHP multi-branch network with FAU, registry."""

from okdhp_edge.models.hourglass import HeatmapOnly, HourglassOutput, StackedHourglass
from okdhp_edge.models.okdhp import FAU, MultiBranchHourglass, OKDHPOutput
from okdhp_edge.models.registry import create_model, list_models

__all__ = ["FAU", "HeatmapOnly", "HourglassOutput", "MultiBranchHourglass", "OKDHPOutput",
           "StackedHourglass", "create_model", "list_models"]
