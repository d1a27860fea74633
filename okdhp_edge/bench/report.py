"""Bench reports: JSON (the record), Markdown (tables + chart) and the Pareto chart
(decisions from them: :mod:`okdhp_edge.bench.decide`). No torch."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any, Optional

from okdhp_edge.backends.recipe import reads
from okdhp_edge.evaluation.uncertainty import interval_text
from okdhp_edge.records import (
    BenchReport,
    BenchRow,
    LatencyStats,
    Quantization,
    ReportError,
    read_json_record,
)
from okdhp_edge.utils.board import board_from_dict
from okdhp_edge.utils.io import atomic_write

__all__ = ["ReportError", "load_report", "markdown", "pareto", "write_report"]

STATS = ("median", "p90", "p99")

log = logging.getLogger(__name__)


def load_report(path: str | Path) -> BenchReport:
    """Read a bench report JSON strictly (ReportError in one line otherwise)."""
    return read_json_record(BenchReport, path)


def latency_of(row: BenchRow, stat: str = "median", scope: str = "engine"
               ) -> Optional[float]:
    return row.latency(stat, scope)


def accuracy_of(row: BenchRow) -> Optional[float]:
    v = row.accuracy.value
    return None if v is None else float(v)


def measured(rows: list[BenchRow], stat: str = "median", scope: str = "engine"
             ) -> list[BenchRow]:
    """Rows that ran and have both a latency and an accuracy."""
    return [r for r in rows if r.status == "ok" and latency_of(r, stat, scope) is not None
            and accuracy_of(r) is not None]


def pareto(rows: list[BenchRow], stat: str = "median", scope: str = "engine"
           ) -> list[BenchRow]:
    """Rows no other row beats on both latency (lower) and accuracy (higher), fastest first."""
    pts = sorted(measured(rows, stat, scope), key=lambda r: (latency_of(r, stat, scope),
                                                              -accuracy_of(r)))
    front, best = [], -math.inf
    for r in pts:
        if accuracy_of(r) > best:
            front.append(r)
            best = accuracy_of(r)
    return front


def _fmt(v: Optional[float], nd: int = 2) -> str:
    return "-" if v is None else f"{v:.{nd}f}"


def _with_interval(v: Optional[float], ci: Optional[list[float]], sign: str = "") -> str:
    """``0.5794 [0.5512, 0.6071]``: a figure with its 95% interval (where it has one)."""
    if v is None:
        return "-"
    return f"{v:{sign}.4f}" + interval_text(ci, f"{sign}.4f")


def _table_row(r: BenchRow, with_cost: bool) -> str:
    """One measured row of the Markdown table (``with_cost``: its memory and start-up)."""
    eng, e2e = r.latency_ms["engine"], r.latency_ms.get("e2e")
    ran = r.runner.get("inference_precision") or r.precision
    perr = r.parity.max_heatmap_err if r.parity else None
    flag = (" ⚠" if eng.high_cv else "") + (" †" if eng.busy else "")
    return (f"| {r.student} | {r.params / 1e6:.2f} | {r.macs / 1e9:.2f} | "
            f"{r.backend}{' (sub-pixel)' if r.decoder == 'subpixel' else ''} | "
            f"{r.precision} ({ran}) | {_fmt(eng.median)}{flag} | "
            f"{_fmt(eng.p90)} | {_fmt(e2e.median if e2e else None)} | "
            f"{_fmt(r.throughput.get('images_per_s'), 1)} | "
            f"{_with_interval(accuracy_of(r), r.accuracy.ci95)} | "
            f"{_with_interval(r.accuracy.delta_vs_torch_fp32, r.accuracy.delta_ci95, '+')} | "
            f"{'-' if perr is None else f'{perr:.1e}'} | "
            f"{_fmt(r.file_bytes / 1e6 if r.file_bytes else None, 3)} |"
            + (f" {_cost_cells(r)} |" if with_cost else ""))


def _cost_cells(r: BenchRow) -> str:
    """``model MB (peak MB) | load ms | first call ms`` of a row ('-' where not measured)."""
    c = r.cost
    if c is None:
        return "- | - | -"
    return (f"{c.model_mb:.0f} ({c.peak_mb:.0f}) | {c.load_ms:.0f} | "
            f"{c.first_inference_ms:.1f}")


def _not_measured_lines(rows: list[BenchRow]) -> list[str]:
    """Each distinct (backend, precision, reason) that was not measured, once."""
    other = [r for r in rows if r.status != "ok"]
    if not other:
        return []
    lines, seen = ["", "Not measured:", ""], set()
    for r in other:
        key = (r.backend, r.precision, r.reason)
        if key not in seen:
            seen.add(key)
            who = f"{r.student} " if r.failure else ""  # a worker's end is one row's
            lines.append(f"- {who}{r.backend} {r.precision} ({r.status}): {r.reason}")
    return lines


def decoder_defaults(rows: list[BenchRow], works: dict[str, Optional[int]]
                     ) -> Optional[dict[str, str]]:
    """The decoder form each target takes by default now for each light student measured
    on it (:func:`okdhp_edge.targets.decoder_for`, the student's decoder work from
    ``works``), "student backend/precision" -> form; None when no measured row names its
    form. (Reports before the size rule keyed "backend/precision": one form a target.)"""
    from okdhp_edge.targets import DECODER_FORMS, decoder_for, get_target

    keys = sorted({(r.student, r.backend, r.precision) for r in rows
                   if r.decoder and r.status == "ok"})
    return {f"{s} {b}/{p}": decoder_for("auto", get_target(b, p), DECODER_FORMS, works.get(s))
            for s, b, p in keys} or None


def _kept(defaults: dict[str, str], student: str, backend: str, precision: str) -> str:
    """The form a report's ``decoder_defaults`` says the target kept for ``student`` (a
    report made before that record: the target's form today, at any size)."""
    from okdhp_edge.targets import get_target

    key = f"{backend}/{precision}"
    return defaults.get(f"{student} {key}") or defaults.get(key) or \
        get_target(backend, precision).decoder


def decoder_lines(rows: list[BenchRow], defaults: dict[str, str]) -> list[str]:
    """One line per (student, backend, precision) measured in both decoder forms: which is
    faster by the median (tied where the medians' bootstrap 95% intervals overlap), and the
    form the target's files took by default when measured (``defaults``: a report's
    ``decoder_defaults``), flagged where this device clearly prefers the other."""
    both: dict[tuple[str, str, str], dict[str, LatencyStats]] = {}
    for r in rows:
        if r.decoder and r.status == "ok" and "engine" in r.latency_ms:
            both.setdefault((r.student, r.backend, r.precision), {})[r.decoder] = \
                r.latency_ms["engine"]
    out = []
    for (s, b, p), st in both.items():
        if len(st) < 2:
            continue
        fast, slow = sorted(st, key=lambda f: st[f].median)
        a, z = st[fast].ci95_median, st[slow].ci95_median
        clear = a is not None and z is not None and a[1] < z[0]
        keeps = _kept(defaults, s, b, p)
        verdict = (f"{fast} {st[slow].median / st[fast].median:.2f}x faster than {slow}"
                   if clear else f"tied ({fast} {st[fast].median:.3g}, {slow} "
                   f"{st[slow].median:.3g} ms: the intervals overlap)")
        note = f"; this device prefers {fast} (--decoder {fast})" if clear and keeps != fast \
            else ""
        ms = f" ({st[fast].median:.3g} vs {st[slow].median:.3g} ms)" if clear else ""
        out.append(f"{s} {b} {p}: {verdict}{ms}; {b} keeps {keeps}{note}")
    return out


def _board_lines(fp: dict) -> list[str]:
    """The board line (Arm clusters, features) and, for an emulated run, the warning."""
    board = fp.get("board")  # reports before the board record: none
    if not board:
        return []
    out = []
    if board.get("cpu_arch") == "arm" or len(board.get("clusters", ())) > 1:
        out.append("- board: " + board_from_dict(board).describe())
    if board.get("emulated"):
        out.append(f"- **emulated**: {board['emulated']}: these timings are not a device's "
                   "(the rows' keypoints are what this run checks)")
    return out


def markdown(rep: BenchReport, chart_name: Optional[str]) -> str:
    """The Markdown report: device, students x backends table, unavailable backends, chart."""
    fp = rep.device
    metric = rep.metric
    with_cost = any(r.cost is not None for r in rep.rows)  # reports before isolation: none
    lines = [f"# Bench report: zoo `{rep.zoo}` on `{rep.device_id}`", "",
             f"- CPU: {fp['cpu_model']} ({fp['cores']} cores, flags: "
             f"{', '.join(fp['cpu_flags']) or '-'}); threads used: {fp['threads']}"
             + (f" on CPUs {fp['cpus']}" if fp.get("cpus") else ""),
             *_board_lines(fp),
             f"- GPU: {fp['gpu']['name'] + ' (driver ' + fp['gpu']['driver'] + ')' if fp.get('gpu') else 'none'}",  # noqa: E501
             f"- OS: {fp['os']}; versions: " + ", ".join(f"{k} {v}" for k, v in
                                                          fp["versions"].items()),
             f"- okdhp_edge commit: {fp['git_commit']}; measured {rep.created}",
             f"- timing: {rep.timing}",
             _accuracy_line(rep, metric), "",
             f"| student | params (M) | GMACs | backend | precision (ran as) | median ms | p90 ms "
             f"| e2e median ms | imgs/s @B | {metric} [95% CI] | Δ vs torch fp32 [paired 95% CI] "
             f"| parity max err "
             f"| file MB |" + (" memory MB: model (peak) | load ms | 1st call ms |"
                               if with_cost else ""),
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|" + (
                 "---|---|---|" if with_cost else "")]
    lines += [_table_row(r, with_cost) for r in rep.rows if r.status == "ok"]
    lines += _not_measured_lines(rep.rows)
    forms = decoder_lines(rep.rows, rep.decoder_defaults or {})
    if forms:
        lines += ["", "Decoder forms (the same student, both forms, one interleaved run):", ""]
        lines += [f"- {line}" for line in forms]
    lines += ["", "⚠: coefficient of variation above the threshold; the median is still "
              "reported with its bootstrap 95% CI in the JSON."]
    if with_cost:
        lines += ["Memory, load and first call: each row measured in a fresh worker process "
                  "(model: its resident high-water mark once loaded and warmed up, minus the "
                  "same worker's with the runtime imported; peak: the whole process)."]
    lines += _load_lines(rep)
    lines += _quantization_lines(rep.rows)
    if chart_name:
        lines += ["", f"![accuracy vs latency]({chart_name})"]
    return "\n".join(lines) + "\n"


def _accuracy_line(rep: BenchReport, metric: str) -> str:
    if rep.untrained:
        return ("- **untrained plan** (`bench --plan`): the students a config would train, with "
                "random weights: latency and size only, no accuracy; never a pick")
    line = (f"- accuracy: {metric} on the report split through each backend, flip test "
            f"{'on' if rep.flip_test else 'off'} (the student manifests' own figure "
            "may use flip test)")
    if rep.merged_from:
        line += "; merged from " + ", ".join(f"`{m['zoo']}`" for m in rep.merged_from)
    return line + "\n" + _interval_line(rep.rows)


def _load_lines(rep: BenchReport) -> list[str]:
    """What else ran while timing (†), and the thread-waiting settings the runners used."""
    out = []
    load = rep.load
    if load and load.get("busy_rows"):
        who = ", ".join(f"{k} {v:.2f}" for k, v in load.get("culprits", {}).items())
        out.append(f"†: timed while other processes kept >= {load['threshold_cores']} cores "
                   f"busy ({load['busy_rows']} rows; up to {load['others_cores_max']:.2f} "
                   f"cores: {who or 'unknown'}): not the device's latency alone.")
    elif load:
        out.append(f"Load: no row was timed beside a busy process (threshold "
                   f"{load['threshold_cores']} cores; policy {load['policy']}).")
    sched = sorted({(r.backend, k, v) for r in rep.rows
                    for k, v in r.runner.get("scheduling", {}).items()})
    if sched:
        out.append("Thread waiting: " + ", ".join(
            f"{b} {k} {'on' if v else 'off'}" for b, k, v in sched) + ".")
    return [""] + out if out else []


def _interval_line(rows: list[BenchRow]) -> str:
    """How the accuracy intervals were drawn, or that this report has none."""
    boot = next((r.accuracy.bootstrap for r in rows if r.accuracy.bootstrap), None)
    if boot is None:
        return ("- accuracy intervals: none (measured before the bench kept per-image "
                "results); re-bench for them")
    return (f"- accuracy intervals: {boot.confidence:.0%} {boot.method} bootstrap over the "
            f"{boot.units} {boot.unit}s of the report split ({boot.n_resamples} resamples, "
            f"seed {boot.seed}); Δ intervals are paired (both rows on the same resampled "
            f"{boot.unit}s)")


def _quantization_lines(rows: list[BenchRow]) -> list[str]:
    """How each INT8 file was made: recipe, calibration list, layers left in float."""
    quant = [r for r in rows if r.quantization]
    if not quant:
        return []
    qat = any(r.quantization.quantization_aware for r in quant)
    out = ["", "INT8 files (post-training quantization, calibrated on the training split"
           + (", unless made from a quantization-aware student's program" if qat else "")
           + "; layers listed stayed in floating point):", ""]
    for r in quant:
        out.append(f"- {r.label}: {_made(r.quantization, r.backend)}")
    return out


def _made(q: Quantization, backend: str) -> str:
    """How one INT8 file was made, in words."""
    rec = q.recipe
    if q.quantization_aware:
        branches = rec.get("branches")
        together = f", fake-quantized branches {', '.join(branches)}" if branches else ""
        return (f"quantization-aware ({rec['quantizer']}, {rec.get('activations')} "
                f"activations, KD {'on' if rec.get('kd') else 'off'}, {rec.get('epochs')} "
                f"epochs{together})")
    cal, layers = q.calibration, q.higher_precision_layers or []
    ac = (f", accuracy control max drop {rec['max_drop']} on the selection split"
          if rec.get("max_drop") is not None else "")
    acts = f", {q.activations} activations" if q.activations else ""
    if reads(backend, "overflow_fix") and rec.get("overflow_fix", "first_layer") != "first_layer":
        acts += f", overflow fix {rec['overflow_fix']}"
    images = (f"{cal.num_images} images (seed {cal.seed}, list sha256 {cal.list_sha256[:12]})"
              if cal else "no calibration")
    return (f"{q.calibration_method} ranges{acts}, {images}, keep head "
            f"{'yes' if rec.get('keep_head') else 'no'}{ac}; float layers: "
            f"{', '.join(layers) if layers else 'none'}")


def _plot_report(ax: Any, rep: BenchReport, colors: dict[str, Any], style: str,
                 stat: str, scope: str) -> None:
    """One device's rows (hollow markers for quantized precisions) and its frontier."""
    from okdhp_edge.targets import MARKERS, QUANTIZED

    rows = measured(rep.rows, stat, scope)
    for r in rows:
        quantized = r.precision in QUANTIZED
        ax.scatter(latency_of(r, stat, scope), accuracy_of(r), s=60,
                   marker=MARKERS.get(r.backend, "x"),
                   color="none" if quantized else colors[r.student],
                   edgecolor=colors[r.student] if quantized else "black",
                   linewidth=1.5 if quantized else 0.5, zorder=3)
        if r.precision != "fp32":
            ax.annotate(r.precision, (latency_of(r, stat, scope), accuracy_of(r)),
                        textcoords="offset points", xytext=(4, -9), fontsize=6)
        if r.latency_ms[scope].busy:  # timed beside a busy process
            ax.scatter(latency_of(r, stat, scope), accuracy_of(r), s=110, marker="x",
                       color="tab:red", linewidth=1.2, zorder=4)
    front = pareto(rows, stat, scope)
    if front:
        ax.plot([latency_of(r, stat, scope) for r in front], [accuracy_of(r) for r in front],
                style, color="tab:red", alpha=0.7,
                label=f"Pareto frontier: {device_label(rep)}", zorder=2)


def device_label(rep: BenchReport) -> str:
    """The report's device id, marked when its timings are an emulator's, not a device's."""
    return f"{rep.device_id} (emulated)" if rep.emulated else rep.device_id


def _legend_entries(ax: Any, rows: list[BenchRow], colors: dict[str, Any]) -> None:
    """Empty scatters that give the legend one entry per backend, student and (when any
    is drawn) the hollow INT8 marker."""
    from okdhp_edge.targets import MARKERS, QUANTIZED

    for b, m in MARKERS.items():
        if any(r.backend == b for r in rows):
            ax.scatter([], [], marker=m, color="gray", label=b)
    for s, c in colors.items():
        ax.scatter([], [], marker="o", color=c, label=s)
    if any(r.precision in QUANTIZED for r in rows):
        ax.scatter([], [], marker="o", color="none", edgecolor="gray", linewidth=1.5,
                   label="int8 (hollow)")
    if any(s.busy for r in rows for s in r.latency_ms.values()):
        ax.scatter([], [], marker="x", color="tab:red", label="timed under load")


def chart(reports: list[BenchReport], path: Path, stat: str = "median",
          scope: str = "engine") -> None:
    """Accuracy against latency (log x), one marker per student/backend/precision, the
    Pareto frontier drawn per device."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FormatStrFormatter

    fig, ax = plt.subplots(figsize=(8, 5.5), dpi=110)
    students = sorted({r.student for rep in reports for r in rep.rows})
    colors = {s: plt.cm.viridis(i / max(1, len(students) - 1)) for i, s in enumerate(students)}
    for d, rep in enumerate(reports):
        _plot_report(ax, rep, colors, ["-", "--", ":", "-."][d % 4], stat, scope)
    drawn = [r for rep in reports for r in measured(rep.rows, stat, scope)]
    _legend_entries(ax, drawn, colors)
    if not drawn:
        ax.text(0.5, 0.5, "no row with both a latency and an accuracy\n(see the report's "
                "table for unavailable / failed rows)", ha="center", va="center",
                transform=ax.transAxes)
    else:
        ax.set_xscale("log")
    ax.xaxis.set_major_formatter(FormatStrFormatter("%g"))
    ax.xaxis.set_minor_formatter(FormatStrFormatter("%g"))
    ax.tick_params(axis="x", which="minor", labelsize=7)
    ax.set_xlabel(f"latency, {scope} {stat} (ms, log scale)")
    metric = reports[0].metric if reports else "accuracy"
    ax.set_ylabel(f"{metric} on the report split")
    title = reports[0].zoo if len(reports) == 1 else f"{reports[0].zoo} across devices"
    ax.set_title(f"{title}: accuracy vs latency")
    _save_chart(fig, ax, path, "best")


def plan_chart(rep: BenchReport, path: Path, stat: str = "median",
               scope: str = "engine") -> None:
    """Latency (log x) against GMACs of an untrained plan, one marker per student/backend/
    precision: what each student would cost on the device, before training."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from okdhp_edge.targets import MARKERS

    fig, ax = plt.subplots(figsize=(8, 5.5), dpi=110)
    rows = [r for r in rep.rows if r.status == "ok" and latency_of(r, stat, scope) is not None]
    students = sorted({r.student for r in rows})
    colors = {s: plt.cm.viridis(i / max(1, len(students) - 1)) for i, s in enumerate(students)}
    for r in rows:
        x, y = latency_of(r, stat, scope), r.macs / 1e9
        ax.scatter(x, y, s=60, marker=MARKERS.get(r.backend, "x"),
                   color=colors[r.student], edgecolor="black", linewidth=0.5, zorder=3)
        ax.annotate(r.precision, (x, y), textcoords="offset points", xytext=(4, -9),
                    fontsize=6)
    for b, m in MARKERS.items():
        if any(r.backend == b for r in rows):
            ax.scatter([], [], marker=m, color="gray", label=b)
    for s in students:
        ax.scatter([], [], marker="o", color=colors[s], label=s)
    if rows:
        ax.set_xscale("log")
    ax.set_xlabel(f"latency, {scope} {stat} (ms, log scale)")
    ax.set_ylabel("GMACs per image")
    ax.set_title(f"{rep.zoo} on {rep.device_id}: untrained plan (latency only)")
    _save_chart(fig, ax, path, "upper left")


def _save_chart(fig: Any, ax: Any, path: Path, legend_loc: str) -> None:
    """Grid, legend and layout of a bench chart, written atomically as PNG."""
    import matplotlib.pyplot as plt

    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc=legend_loc)
    fig.tight_layout()
    atomic_write(Path(path), lambda tmp: fig.savefig(tmp, format="png"))
    plt.close(fig)


CHART_TIMEOUT_S = 300.0


def draw_report_chart(rep: BenchReport, path: str) -> None:
    """A report's chart (a plan's: latency against GMACs) as PNG at ``path``."""
    if rep.untrained:
        plan_chart(rep, Path(path))
    else:
        chart([rep], Path(path))


def write_report(rep: BenchReport, out_dir: Path) -> dict[str, Path]:
    """Write ``<zoo>.json``, ``<zoo>_pareto.png`` and ``<zoo>.md`` under ``out_dir`` as a set:
    a reader never finds a new JSON beside an old chart or table. The chart is drawn in a
    process of its own (matplotlib's native code once took a whole journey down at this
    step): if that process dies, the JSON and the table are written without a chart (an
    older chart is removed) and the returned files lack ``png``."""
    from okdhp_edge.utils.io import atomic_write_set, remove_stale_temporaries
    from okdhp_edge.utils.isolate import WorkerDied, call_isolated

    out_dir = Path(out_dir)
    name = rep.zoo
    paths = {"json": out_dir / f"{name}.json", "png": out_dir / f"{name}_pareto.png",
             "md": out_dir / f"{name}.md"}
    remove_stale_temporaries(out_dir, [p.name for p in paths.values()])
    data = json.dumps(rep.to_dict(), indent=2) + "\n"

    def texts(chart_name: Optional[str]) -> dict[Path, Any]:
        text = markdown(rep, chart_name)
        return {paths["md"]: lambda tmp: tmp.write_text(text, encoding="utf-8"),
                paths["json"]: lambda tmp: tmp.write_text(data, encoding="utf-8")}

    try:
        atomic_write_set({paths["png"]: lambda tmp: call_isolated(
            draw_report_chart, rep, str(tmp), stage="chart", timeout_s=CHART_TIMEOUT_S),
            **texts(paths["png"].name)})
    except WorkerDied as exc:
        log.warning("the chart could not be drawn (%s); %s and %s are written without it",
                    exc, paths["json"].name, paths["md"].name)
        paths.pop("png").unlink(missing_ok=True)
        atomic_write_set(texts(None))
    return paths
