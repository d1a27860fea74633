"""The INT8 recipe: shared calibration fields plus each backend's own options, declared in
its module; records stay flat."""

import importlib

import pytest

from okdhp_edge.backends.recipe import QuantRecipe, owner, reads, recipe_flag
from okdhp_edge.errors import QuantizationError
from okdhp_edge.targets import BACKEND_INFO
from tests.conftest import ROOT


def test_each_backends_int8_options_are_a_section_of_the_recipe():
    """A backend module that declares ``Int8Options`` has its section in the recipe, and
    its fields are keys of every command that quantizes (one spelling per knob)."""
    from okdhp_edge.bench.command import BenchRequest
    from okdhp_edge.zoo import ExportRequest

    declared = {b: importlib.import_module(info.module).Int8Options
                for b, info in BACKEND_INFO.items()
                if hasattr(importlib.import_module(info.module), "Int8Options")}
    assert set(declared) == set(QuantRecipe.SECTIONS) == {"onnxruntime", "openvino"}
    for backend, cls in declared.items():
        assert type(QuantRecipe().section(backend)) is cls
        for name in QuantRecipe.SECTIONS[backend]:
            flag = recipe_flag(name)
            for request in (BenchRequest, ExportRequest):
                assert flag in {k.flag for k in request.keys()}, (request, flag)
            assert owner(name) == backend and reads(backend, name)
    assert owner("num_images") is None and not reads("openvino", "ort_quantizer")


def test_published_flat_recipes_keep_their_names():
    """Every recipe the published reports record (flat, some written before a field
    existed, some under older defaults) names only fields the flat record still has, with
    values their options still accept: the sections renamed nothing."""
    from okdhp_edge.bench.command import BenchRequest
    from okdhp_edge.bench.report import load_report
    from okdhp_edge.errors import ReportError

    flat = QuantRecipe().as_dict()
    keys = {k.flag: k for k in BenchRequest.keys()}
    seen = 0
    for path in (ROOT / "bench" / "reports").rglob("*.json"):
        try:
            report = load_report(path)
        except ReportError:  # not a bench report (an ablation's, a calibration sweep's)
            continue
        for rec in [report.quantization] + [r.quantization.recipe if r.quantization else None
                                            for r in report.rows]:
            if not rec or "quantizer" in rec:  # none, or a QAT program's recipe
                continue
            assert set(rec) <= set(flat), (path, set(rec) - set(flat))
            for name, value in rec.items():
                choices = keys[recipe_flag(name)].meta.get("choices")
                assert not choices or value in choices, (path, name, value)
            seen += 1
    assert seen > 10


def test_a_recipe_refuses_what_no_section_holds():
    with pytest.raises(QuantizationError, match="'ort_quantiser' is no INT8 recipe field"):
        QuantRecipe.from_record({"ort_quantiser": "ort"})
    with pytest.raises(QuantizationError, match="overflow_fix must be one of"):
        QuantRecipe.from_record({"overflow_fix": "all"})
    recipe = QuantRecipe.from_record({"num_images": 8, "max_drop": 0.01})
    assert recipe.openvino.max_drop == 0.01 and recipe.num_images == 8
    assert recipe.fields_for("onnxruntime") == ("method", "num_images", "seed", "keep_head",
                                                *QuantRecipe.SECTIONS["onnxruntime"])
