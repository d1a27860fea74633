"""Errors raised on bad data: each names the file and the record; the one JSON reader."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from okdhp_edge.errors import DataError


def read_json(path: Path, what: str) -> Any:
    """A JSON file's content; DataError naming the file when it is missing or not JSON."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError(f"{path}: {what} file not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not valid JSON: {exc}") from None
