"""Re-render every published bench, calibration and ablation report's Markdown from its JSON alone
(after a change of the renderer; the JSON, the record, is never touched).

    python benchmarks/render_reports.py

(bench/reports/*.json, bench/reports/*/*.json, docs/*.json)
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from okdhp_edge.bench import calibration
from okdhp_edge.bench.report import load_report, markdown
from okdhp_edge.records import CalibrationReport, read_json_record
from okdhp_edge.utils.io import atomic_write_text


def render(path: Path) -> bool:
    """Rewrite ``path``'s Markdown twin; whether it changed (False: not a report)."""
    md = path.with_suffix(".md")
    head = path.read_text()[:200]
    if path.name.startswith("ablation_") and '"meta"' in head and md.is_file():
        from okdhp_edge.experiments import render as render_ablation

        old = md.read_text()
        render_ablation(path)
        return md.read_text() != old
    if not md.is_file() or not ('"report_version"' in head or '"calibration_version"' in head):
        return False
    old = md.read_text()
    if '"calibration_version"' in head:
        rep = read_json_record(CalibrationReport, path)
        new = calibration.markdown(rep, calibration.reproduce_command(rep))
    else:
        chart = re.findall(r"!\[accuracy vs latency\]\((.*)\)", old)
        new = markdown(load_report(path), chart[0] if chart else None)
    if new != old:
        atomic_write_text(md, new)
    return new != old


def main() -> int:
    root = Path(__file__).resolve().parents[1]
    paths = sorted([*root.glob("bench/reports/*.json"), *root.glob("bench/reports/*/*.json"),
                    *root.glob("docs/*.json")])
    for p in paths:
        if render(p):
            print(f"re-rendered {p.relative_to(root).with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
