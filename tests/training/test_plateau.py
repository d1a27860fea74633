"""The plateau schedule as a pure decision over a run's state."""

from __future__ import annotations

from types import SimpleNamespace

from okdhp_edge.training.plateau import PlateauSchedule


def _cfg(**kw):
    base = dict(plateau_window=1, plateau_min_delta=0.01, plateau_patience=2,
                plateau_drops=1, plateau_min_epoch=0, min_wall_s=0.0)
    return SimpleNamespace(**{**base, **kw})


def _state():
    return SimpleNamespace(epoch=10, wall=100.0, history=[], drops=0, stale=0, plateau_ref={})


def _feed(schedule, state, values):
    out = []
    for v in values:
        metrics = {"hg2": v, "ensemble": 0.9}
        verdict = schedule.verdict(state, metrics, ["hg2"])
        state.history.append({"select": metrics})
        if verdict == "drop":
            state.drops, state.stale = state.drops + 1, 0
        out.append(verdict)
    return out


def test_drops_then_stops_on_flat_curves():
    s = PlateauSchedule(_cfg())
    assert _feed(s, _state(), [0.5, 0.6, 0.6, 0.6, 0.6, 0.6]) == ["", "", "", "drop", "", "stop"]


def test_any_student_progressing_resets_patience():
    s, st = PlateauSchedule(_cfg()), _state()
    assert _feed(s, st, [0.5, 0.5, 0.52, 0.52, 0.54]) == ["", "", "", "", ""]
    assert st.stale == 0


def test_min_wall_time_holds_the_stop_and_min_epoch_the_count():
    s, st = PlateauSchedule(_cfg(min_wall_s=1000.0)), _state()
    assert _feed(s, st, [0.5] * 6)[-1] == ""  # a plateau, but not yet the wall time
    s, st = PlateauSchedule(_cfg(plateau_min_epoch=20)), _state()
    assert _feed(s, st, [0.5] * 6) == [""] * 6 and st.stale == 0
