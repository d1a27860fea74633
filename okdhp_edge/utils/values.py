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


def is_plain_name(text: str) -> bool:
    """A folder or file name that stays inside the folder it is joined to: no separator,
    not ``.`` or ``..``, no NUL, not empty."""
    return bool(text) and text not in (".", "..") and not any(c in text for c in "/\\\0")
