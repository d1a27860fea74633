"""Checks of values read from files (JSON, YAML, manifests) before they are trusted."""

from __future__ import annotations

import math
from typing import Any


def is_finite_number(v: Any, *, positive: bool = False, optional: bool = False) -> bool:
    """True for an int or float (not a bool) that is finite, and > 0 when ``positive``;
    ``None`` passes only when ``optional``."""
    if v is None:
        return optional
    ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
    return ok and (v > 0 if positive else True)
