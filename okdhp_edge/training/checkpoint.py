"""Atomic checkpoints with RNG states, loadable with ``weights_only=True``."""

from __future__ import annotations

import random
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar, Optional

import numpy as np
import torch

from okdhp_edge.errors import CheckpointError
from okdhp_edge.utils.io import atomic_write


def rng_state() -> dict[str, Any]:
    """Python, numpy and torch RNG states as weights-only-safe data."""
    np_state = np.random.get_state()
    state = {
        "python": list(random.getstate()[1]) + [random.getstate()[0]],
        "python_gauss": random.getstate()[2],
        "numpy_keys": torch.from_numpy(np_state[1].astype(np.int64)),
        "numpy_pos": int(np_state[2]),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` captured."""
    py = state["python"]
    random.setstate((py[-1], tuple(py[:-1]), state["python_gauss"]))
    np.random.set_state(("MT19937", state["numpy_keys"].numpy().astype(np.uint32),
                         state["numpy_pos"], 0, 0.0))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """``torch.save`` to a temp file, then rename: never a torn checkpoint."""
    atomic_write(Path(path), lambda tmp: torch.save(state, tmp))




def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True`` (no arbitrary pickles); anything else
    is a :class:`CheckpointError` naming the file, never unpickled."""
    import pickle
    import warnings

    try:
        with warnings.catch_warnings():  # a foreign pickle protocol warns before it fails
            warnings.simplefilter("ignore", UserWarning)
            ck = torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: checkpoint not found") from None
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if isinstance(exc, pickle.UnpicklingError):  # torch's text suggests unpickling it
            first = "refused by the weights-only loader"
        raise CheckpointError(f"{path}: not a checkpoint okdhp_edge wrote, or a truncated "
                              f"one; it is not unpickled ({_clip(first)})") from None
    if not isinstance(ck, dict):
        raise CheckpointError(f"{path}: not a checkpoint okdhp_edge wrote (a "
                              f"{type(ck).__name__}, not a mapping)")
    return ck


def _clip(text: str, width: int = 120) -> str:
    """``text``'s first sentence, cut at a word (with "...") when longer than ``width``."""
    text = text.split(". ")[0].rstrip(".")
    if len(text) <= width:
        return text
    return text[:width].rsplit(" ", 1)[0] + " ..."


@dataclass
class TrainState:
    """Where a run is: what a checkpoint keeps besides weights, optimizer and RNG states."""

    epoch: int = 0  # epochs completed
    iteration: int = 0
    iter_in_epoch: int = 0
    best: dict[str, float] = field(default_factory=dict)
    best_epoch: dict[str, int] = field(default_factory=dict)
    wall: float = 0.0
    skipped_images: int = 0
    history: list = field(default_factory=list)
    # plateau schedule: LR drops so far, stale validations in a row, the best selection AP
    # per student that counted as progress, and why the run ended early ("" while it runs)
    drops: int = 0
    stale: int = 0
    plateau_ref: dict[str, float] = field(default_factory=dict)
    finished: str = ""
    # per student: the selection split's per-image (per-person) results at its best
    # evaluation, encoded (okdhp_edge.evaluation.uncertainty): paired intervals of verdicts
    best_units: dict[str, str] = field(default_factory=dict)
    # fields added after checkpoints were first written: an older checkpoint may lack them
    OPTIONAL: ClassVar[tuple[str, ...]] = ("drops", "stale", "plateau_ref", "finished",
                                           "best_units")

    def to_checkpoint(self) -> dict[str, Any]:
        """The fields as checkpoint entries (containers copied)."""
        return {f.name: _copied(getattr(self, f.name)) for f in fields(self)}

    @classmethod
    def from_checkpoint(cls, ck: dict[str, Any]) -> TrainState:
        """The state a checkpoint kept; the :attr:`OPTIONAL` fields it lacks keep their
        defaults (checkpoints older than the plateau schedule resume)."""
        return cls(**{f.name: _copied(ck[f.name]) for f in fields(cls)
                      if f.name in ck or f.name not in cls.OPTIONAL})


def _copied(value: Any) -> Any:
    return dict(value) if isinstance(value, dict) else list(value) \
        if isinstance(value, list) else value


# what resuming cannot do without
RESUME_KEYS = ("config", "model", "optimizer", "scheduler", "scaler", "rng",
               *(f.name for f in fields(TrainState) if f.name not in TrainState.OPTIONAL))


def check_resume_keys(ck: dict[str, Any], path: Path) -> None:
    """Refuse a checkpoint without what resuming reads."""
    missing = [k for k in RESUME_KEYS if k not in ck]
    if missing:
        raise CheckpointError(f"{path}: not a training checkpoint (no {', '.join(missing[:4])})")


class RunCheckpoint:
    """A run's ``last.pt``: written atomically by the main rank (with the RNG states), at
    least every ``every_minutes`` when :meth:`due` is asked; read back checked."""

    def __init__(self, run_dir: Path, is_main: bool, every_minutes: float) -> None:
        import time

        self.path, self.is_main = Path(run_dir) / "last.pt", is_main
        self.every_s = every_minutes * 60
        self._clock = time.monotonic
        self.saved_at = self._clock()

    def write(self, state: dict[str, Any]) -> None:
        if self.is_main:
            save_checkpoint(self.path, {**state, "rng": rng_state()})
        self.saved_at = self._clock()

    def due(self) -> bool:
        return bool(self.every_s) and self._clock() - self.saved_at >= self.every_s

    @staticmethod
    def read(run_dir: Optional[Path], device: torch.device) -> Optional[dict[str, Any]]:
        """The checkpoint of ``run_dir`` (None: none there), its keys checked before any
        data is read; its RNG states restored by :meth:`restore_rng`."""
        if run_dir is None or not (Path(run_dir) / "last.pt").is_file():
            return None
        ck = load_checkpoint(Path(run_dir) / "last.pt", device)
        check_resume_keys(ck, Path(run_dir) / "last.pt")
        return ck

    @staticmethod
    def restore_rng(ck: dict[str, Any]) -> None:
        set_rng_state(ck["rng"])
