"""Models: stacked hourglass, OKDHP multi-branch network with FAU, light networks, registry.

The names below are imported when first used, so that ``python -m okdhp_edge.models`` on a
torch-free install can say which extra it needs instead of failing on import.
"""

import importlib
from typing import Any

_WHERE = {"HeatmapOnly": "student", "StudentOutput": "student", "MultiBranchOutput": "student",
          "Student": "student", "MultiBranchNet": "student",
          "StackedHourglass": "hourglass", "FAU": "okdhp", "MultiBranchHourglass": "okdhp",
          "create_model": "registry", "list_models": "registry"}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(f"okdhp_edge.models.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'okdhp_edge.models' has no attribute '{name}'")
