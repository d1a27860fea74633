"""Runtime: deployable bundles (image + person box -> keypoints) over the runner of any
backend (:mod:`okdhp_edge.backends`). Importing it does not import torch.
"""

from __future__ import annotations

from okdhp_edge.backends import make_runner
from okdhp_edge.backends.base import BackendUnavailable, Runner

__all__ = ["BackendUnavailable", "Runner", "make_runner"]
