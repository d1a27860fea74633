"""The bench report's Markdown: how each INT8 file was made."""

from __future__ import annotations

import dataclasses

from tests.conftest import ROOT

QAT_REPORT = ROOT / "bench/reports/amd-epyc-2c-avx512bf16/qat/synthetic_light-qat.json"


def test_quantization_aware_rows_say_so_and_name_their_branches():
    from okdhp_edge.bench.report import _quantization_lines, load_report
    from okdhp_edge.records import CalibrationList, Quantization

    rows = load_report(QAT_REPORT).rows
    qat = next(r for r in rows if r.quantization and r.quantization.calibration is None)
    ptq = dataclasses.replace(qat, student="ptq-student", quantization=Quantization(
        {"quantizer": "nncf"}, CalibrationList(8, 0, "0" * 64, "train split"), "minmax"))
    recipe = {**qat.quantization.recipe, "branches": ["mbv2-d32"]}
    some = dataclasses.replace(qat, quantization=dataclasses.replace(qat.quantization,
                                                                       recipe=recipe))
    lines = _quantization_lines([qat, some, ptq])
    assert "unless made from a quantization-aware student's program" in lines[1]
    assert lines[3].startswith(f"- {qat.label}: quantization-aware (xnnpack-pt2e-qat")
    assert lines[4].endswith(", fake-quantized branches mbv2-d32)")
    assert lines[5].startswith("- ptq-student") and "minmax ranges, 8 images" in lines[5]
    assert "quantization-aware" not in _quantization_lines([ptq])[1]
