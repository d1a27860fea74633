"""Confidence intervals of accuracy: a bootstrap over images (COCO AP) or persons (PCKh).

A metric is kept as its per-unit results (:class:`UnitResults`), from which it is
recomputed on any resample of the units without re-scoring: COCO AP from pycocotools'
own per-image evaluation (``COCOeval.evalImgs``: its OKS matching, its ignore flags), the
accumulation over the resampled images done as ``COCOeval.accumulate`` does it (a unit
drawn twice counts twice); PCKh from each person's hits and visible joints. Resamples are
index vectors, drawn as :func:`scipy.stats.bootstrap` draws them, never copies of images.

Two figures measured on the same units (one student through two backends, two
calibration recipes, OKDHP against the same student trained alone) get a *paired*
interval of their difference: both are recomputed on the same resampled units.

The encoded form (:meth:`UnitResults.encode`) is a few kilobytes of base64 text, stored
with the figure it explains so that any two figures of a report can be paired later.
"""

from __future__ import annotations

import base64
import hashlib
import io
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

CONFIDENCE = 0.95
N_RESAMPLES = 1000
MIN_RESAMPLES = 100  # fewer cannot place a 2.5% tail
SEED = 0
METHOD = "percentile"
_REC_THRS = np.linspace(0.0, 1.00, int(np.round((1.00 - 0.0) / 0.01)) + 1, endpoint=True)


@dataclass(frozen=True)
class UnitResults:
    """Per-unit results of one metric on one split.

    ``kind`` is ``"coco_ap"`` (units: images) or ``"pckh"`` (units: persons).
    COCO arrays (detections in pycocotools' score order): ``det_unit`` [D] the unit of each
    detection, ``tp``/``fp`` [T, D] bool per OKS threshold, ``npig`` [U] persons that
    count per image. PCKh arrays: ``hits``/``visible`` [U, K] bool over the joints that
    count. ``ids`` [U]: the image ids or person indices, to check that two results pair.
    """

    kind: str
    ids: np.ndarray
    arrays: dict[str, np.ndarray]

    @property
    def unit(self) -> str:
        return "image" if self.kind == "coco_ap" else "person"

    def __len__(self) -> int:
        return len(self.ids)

    def metric(self, counts: Optional[np.ndarray] = None) -> float:
        """The metric with unit ``u`` counted ``counts[u]`` times (all once: the figure
        itself). COCO AP in [0, 1], PCKh in %. NaN when no unit counts anything."""
        counts = np.ones(len(self), np.int64) if counts is None else np.asarray(counts)
        if self.kind == "coco_ap":
            return _coco_ap(self.arrays, counts)
        hits = (self.arrays["hits"].sum(1) * counts).sum()
        seen = (self.arrays["visible"].sum(1) * counts).sum()
        return float(100.0 * hits / seen) if seen else float("nan")

    def encode(self) -> str:
        """Compact text (base64 of a compressed ``.npz``) for a JSON record."""
        buf = io.BytesIO()
        np.savez_compressed(buf, kind=np.array(self.kind), ids=self.ids, **{
            k: np.packbits(v, axis=-1) if v.dtype == bool else v
            for k, v in self.arrays.items()}, shapes=np.array(
            [v.shape[-1] if v.dtype == bool else -1 for v in self.arrays.values()]),
            names=np.array(list(self.arrays)))
        return base64.b64encode(buf.getvalue()).decode("ascii")

    @staticmethod
    def decode(text: str) -> UnitResults:
        """The inverse of :meth:`encode` (ValueError on anything else)."""
        try:
            with np.load(io.BytesIO(base64.b64decode(text, validate=True)),
                         allow_pickle=False) as z:
                arrays = {}
                for name, width in zip(z["names"].tolist(), z["shapes"].tolist()):
                    v = z[name]
                    arrays[name] = (np.unpackbits(v, axis=-1, count=width).astype(bool)
                                    if width >= 0 else v)
                return UnitResults(str(z["kind"]), z["ids"], arrays)
        except Exception as exc:  # noqa: BLE001 - any corruption is one kind of error
            raise ValueError(f"per-unit results unreadable: {type(exc).__name__}: {exc}") \
                from None

    def digest(self) -> str:
        """sha256 of the whole content (the cache key of its bootstrap distribution)."""
        h = hashlib.sha256(self.kind.encode())
        for k, v in [("ids", self.ids), *sorted(self.arrays.items())]:
            h.update(k.encode() + np.ascontiguousarray(v).tobytes())
        return h.hexdigest()


def coco_units(evaluator: Any) -> UnitResults:
    """Per-image results of an evaluated ``COCOeval`` (keypoints, one category): area
    ``all`` at the largest ``maxDets``, detections in the order ``accumulate`` sorts them."""
    p = evaluator.params
    img_ids = list(p.imgIds)
    per_image = evaluator.evalImgs[:len(img_ids)]  # category 0, area 'all'
    max_det = p.maxDets[-1]
    unit, score, dtm, dtig = [], [], [], []
    npig = np.zeros(len(img_ids), np.int64)
    for u, e in enumerate(per_image):
        if e is None:
            continue
        n = len(e["dtScores"][:max_det])
        unit.append(np.full(n, u, np.int64))
        score.append(np.asarray(e["dtScores"][:max_det], np.float64))
        dtm.append(np.asarray(e["dtMatches"])[:, :max_det])
        dtig.append(np.asarray(e["dtIgnore"])[:, :max_det])
        npig[u] = int(np.count_nonzero(np.asarray(e["gtIgnore"]) == 0))
    t = len(p.iouThrs)
    scores = np.concatenate(score) if score else np.zeros(0)
    order = np.argsort(-scores, kind="mergesort")
    m = np.concatenate(dtm, 1)[:, order] if dtm else np.zeros((t, 0))
    ig = np.concatenate(dtig, 1)[:, order].astype(bool) if dtig else np.zeros((t, 0), bool)
    return UnitResults("coco_ap", np.asarray(img_ids, np.int64), {
        "det_unit": (np.concatenate(unit) if unit else np.zeros(0, np.int64))[order],
        "tp": (m != 0) & ~ig, "fp": (m == 0) & ~ig, "npig": npig})


def pckh_units(hits: np.ndarray, visible: np.ndarray, include: np.ndarray,
               ids: np.ndarray) -> UnitResults:
    """Per-person results of PCKh at one threshold: ``hits``/``visible`` [N, K] bool,
    ``include`` [K] the joints the mean counts, ``ids`` [N] the persons."""
    inc = np.asarray(include, bool)
    return UnitResults("pckh", np.asarray(ids, np.int64), {
        "hits": np.asarray(hits, bool)[:, inc], "visible": np.asarray(visible, bool)[:, inc]})


def _coco_ap(a: dict[str, np.ndarray], counts: np.ndarray) -> float:
    """AP as ``COCOeval.accumulate`` + ``summarize`` compute it (mean precision over the
    101 recall thresholds and the OKS thresholds), each image weighted by ``counts``."""
    n = float((a["npig"] * counts).sum())
    if n == 0:
        return float("nan")
    w = counts[a["det_unit"]]
    keep = w > 0
    w = w[keep].astype(float)
    tp = np.cumsum(a["tp"][:, keep] * w, axis=1)
    fp = np.cumsum(a["fp"][:, keep] * w, axis=1)
    nd = tp.shape[1]
    if nd == 0:
        return 0.0
    rc = tp / n
    pr = tp / (fp + tp + np.spacing(1))
    pr = np.maximum.accumulate(pr[:, ::-1], axis=1)[:, ::-1]  # the precision envelope
    q = np.zeros((tp.shape[0], len(_REC_THRS)))
    for t in range(tp.shape[0]):
        idx = np.searchsorted(rc[t], _REC_THRS, side="left")
        q[t] = np.where(idx < nd, pr[t, np.minimum(idx, nd - 1)], 0.0)
    return float(q.mean())


@dataclass(frozen=True)
class Interval:
    """A bootstrap interval: ``low``/``high`` of the statistic, and how it was drawn."""

    low: float
    high: float
    unit: str
    units: int
    n_resamples: int
    seed: int
    confidence: float = CONFIDENCE
    method: str = METHOD

    def contains(self, value: float) -> bool:
        return self.low <= value <= self.high

    def bootstrap_record(self) -> dict[str, Any]:
        """How the interval was drawn, for a record."""
        return {"unit": self.unit, "units": self.units, "n_resamples": self.n_resamples,
                "seed": self.seed, "confidence": self.confidence, "method": self.method}


def interval_text(ci: Any, spec: str = ".4f") -> str:
    """`` [low, high]`` of an interval (an :class:`Interval` or a [low, high] list), each
    end formatted with ``spec``; "" when there is none."""
    if not ci:
        return ""
    low, high = (ci.low, ci.high) if isinstance(ci, Interval) else ci
    return f" [{low:{spec}}, {high:{spec}}]"


_DISTRIBUTIONS: dict[tuple[str, int, int], np.ndarray] = {}  # per-process cache
_CACHE_SIZE = 256


def distribution(results: UnitResults, n_resamples: int = N_RESAMPLES, seed: int = SEED
                 ) -> np.ndarray:
    """The metric on each of ``n_resamples`` resamples of the units [n_resamples]. Resample
    ``r`` is row ``r`` of ``default_rng(seed).integers(0, n, (n_resamples, n))``, the index
    vectors :func:`scipy.stats.bootstrap` (percentile method, one batch) draws from that
    generator, so the intervals are scipy's (tested against it) without importing
    ``scipy.stats`` (about a second) in every bench worker and training run. Resamples
    depend only on (number of units, ``n_resamples``, ``seed``), so two results on the same
    units are resampled alike and the difference of their distributions is the paired one.
    Cached per process."""
    key = (results.digest(), n_resamples, seed)
    if key not in _DISTRIBUTIONS:
        n = len(results)
        idx = np.random.default_rng(seed).integers(0, n, (n_resamples, n))
        values = np.array([results.metric(np.bincount(row, minlength=n)) for row in idx],
                          np.float64)
        if len(_DISTRIBUTIONS) >= _CACHE_SIZE:
            _DISTRIBUTIONS.pop(next(iter(_DISTRIBUTIONS)))
        _DISTRIBUTIONS[key] = values
    return _DISTRIBUTIONS[key]


def _percentile_interval(values: np.ndarray, point: float, unit: str, n_units: int,
                         n_resamples: int, seed: int, confidence: float) -> Interval:
    """The percentile interval of a bootstrap distribution (zero width when every
    resample gave the same value; the point when none was finite)."""
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return Interval(point, point, unit, n_units, n_resamples, seed, confidence)
    tail = 100 * (1 - confidence) / 2
    lo, hi = (float(v) for v in np.percentile(finite, [tail, 100 - tail]))
    return Interval(lo, hi, unit, n_units, n_resamples, seed, confidence)


def _same_units(results: list[UnitResults]) -> bool:
    """Whether every result was measured on the units of the first (so they pair)."""
    first = results[0]
    return all(u.kind == first.kind and np.array_equal(u.ids, first.ids) for u in results)


def _checked(results: list[UnitResults]) -> UnitResults:
    """The first of results measured on the same units (ValueError otherwise)."""
    first = results[0]
    if not _same_units(results):
        raise ValueError(f"not paired: {first.kind} over {len(first)} {first.unit}s against "
                         "figures on other units (the same units are needed)")
    if len(first) < 2:
        raise ValueError(f"a bootstrap needs at least 2 {first.unit}s, got {len(first)}")
    return first


def interval(results: UnitResults, n_resamples: int = N_RESAMPLES, seed: int = SEED,
             confidence: float = CONFIDENCE) -> Interval:
    """The bootstrap interval of one metric over its units."""
    _checked([results])
    return _percentile_interval(distribution(results, n_resamples, seed), results.metric(),
                                results.unit, len(results), n_resamples, seed, confidence)


def paired_interval(a: UnitResults, b: UnitResults, n_resamples: int = N_RESAMPLES,
                    seed: int = SEED, confidence: float = CONFIDENCE) -> Interval:
    """The interval of ``a - b`` with both recomputed on the same resampled units.

    Raises:
        ValueError: the two were not measured on the same units (or not of one kind).
    """
    _checked([a, b])
    diff = distribution(a, n_resamples, seed) - distribution(b, n_resamples, seed)
    return _percentile_interval(diff, a.metric() - b.metric(), a.unit, len(a), n_resamples,
                                seed, confidence)


def accuracy_fields(units: Optional[UnitResults], n_resamples: int = N_RESAMPLES,
                    seed: int = SEED) -> dict[str, Any]:
    """The interval fields of an accuracy record (``ci95``, ``bootstrap``, ``units``) for a
    figure's per-unit results; none when there are no results or ``n_resamples`` is 0
    (or the split has fewer than two units)."""
    from okdhp_edge.records import Bootstrap

    if units is None or n_resamples <= 0 or len(units) < 2:
        return {}
    ci = interval(units, n_resamples, seed)
    return {"ci95": [ci.low, ci.high], "bootstrap": Bootstrap(**ci.bootstrap_record()),
            "units": units.encode()}


def paired_delta(a: Optional[str], b: Optional[str], bootstrap: Any
                 ) -> Optional[Interval]:
    """The paired interval of ``a - b`` from two encoded per-unit results, drawn as
    ``bootstrap`` (a :class:`okdhp_edge.records.Bootstrap`) says; None when either is
    missing or they do not share their units."""
    if not (a and b and bootstrap):
        return None
    ua, ub = UnitResults.decode(a), UnitResults.decode(b)
    if not _same_units([ua, ub]):
        return None
    return paired_interval(ua, ub, bootstrap.n_resamples, bootstrap.seed, bootstrap.confidence)


def _seed_mean(groups: list[list[UnitResults]], fn: Any) -> Any:
    """The mean over groups (training seeds) of each group's mean of ``fn(figure)``."""
    return sum(sum(fn(u) for u in g) / len(g) for g in groups) / len(groups)


def _seed_mean_interval(plus: list[list[UnitResults]], minus: list[list[UnitResults]],
                        n_resamples: int, seed: int, confidence: float) -> Interval:
    """The interval of the seed mean of ``plus`` minus that of ``minus`` (none: the seed
    mean itself), every figure recomputed on the same resampled units."""
    first = _checked([u for g in plus + minus for u in g])

    def combine(fn: Any) -> Any:
        return _seed_mean(plus, fn) - (_seed_mean(minus, fn) if minus else 0.0)

    values = combine(lambda u: distribution(u, n_resamples, seed))
    return _percentile_interval(values, combine(lambda u: u.metric()), first.unit, len(first),
                                n_resamples, seed, confidence)


def paired_mean_interval(groups: list[tuple[list[UnitResults], list[UnitResults]]],
                         n_resamples: int = N_RESAMPLES, seed: int = SEED,
                         confidence: float = CONFIDENCE) -> Interval:
    """The interval, over resampled units, of the mean over ``groups`` (one per training
    seed) of ``mean(a) - mean(b)``: a paired difference of two arms averaged over seeds,
    every figure recomputed on the same resampled images.

    Raises:
        ValueError: no group, or figures not measured on the same units.
    """
    if not groups or not all(a and b for a, b in groups):
        raise ValueError("a paired mean needs at least one figure on each side of a group")
    return _seed_mean_interval([a for a, _ in groups], [b for _, b in groups],
                               n_resamples, seed, confidence)


def mean_interval(groups: list[list[UnitResults]], n_resamples: int = N_RESAMPLES,
                  seed: int = SEED, confidence: float = CONFIDENCE) -> Interval:
    """The interval, over resampled units, of the mean over ``groups`` (one per training
    seed) of each group's mean figure: an arm's seed-mean accuracy.

    Raises:
        ValueError: an empty group, or figures not measured on the same units.
    """
    if not groups or not all(groups):
        raise ValueError("a mean needs at least one figure in each group")
    return _seed_mean_interval(groups, [], n_resamples, seed, confidence)
