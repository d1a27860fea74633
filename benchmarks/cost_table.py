"""What each row of a bench report costs besides its latency, as one Markdown table: the
memory its model adds to the runtime (and the worker's whole peak), its load and its first
call, per student and (backend, precision).

    python benchmarks/cost_table.py bench/reports/<device>/<zoo>.json
"""

from __future__ import annotations

import sys

from okdhp_edge.bench.report import load_report


def table(path: str) -> str:
    """The cost table of the report at ``path`` ('-' where a row was not measured)."""
    rep = load_report(path)
    cols = list(dict.fromkeys((r.backend, r.precision) for r in rep.rows if r.cost))
    students = list(dict.fromkeys(r.student for r in rep.rows))
    lines = [f"`{rep.zoo}` on `{rep.device_id}`: model MB (process peak MB) / load ms / "
             "first call ms", "",
             "| student | " + " | ".join(f"{b} {p}" for b, p in cols) + " |",
             "|---|" + "---|" * len(cols)]
    for s in students:
        cells = []
        for b, p in cols:
            row = next((r for r in rep.rows if (r.student, r.backend, r.precision) == (s, b, p)
                        and r.cost), None)
            c = row.cost if row else None
            cells.append("-" if c is None else f"{c.model_mb:.0f} ({c.peak_mb:.0f}) / "
                         f"{c.load_ms:.0f} / {c.first_inference_ms:.1f}")
        lines.append(f"| {s} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    print("\n\n".join(table(p) for p in sys.argv[1:]))
