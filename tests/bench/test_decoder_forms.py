"""A light student's decoder in either form (transposed convolutions, or sub-pixel
convolutions: exact in float), timed both ways in one interleaved run, recorded in the file's
record and the bundle, chosen per backend by default."""

import pytest
import yaml

from okdhp_edge.bench.report import decoder_lines, load_report
from okdhp_edge.targets import get_target
from tests.conftest import LIGHT, okdhp, okdhp_process

FAST = ["--threads", "1", "--min-iters", "20", "--min-time", "0.05", "--warmup-time", "0.02",
        "--rounds", "2", "--batch", "1"]


@pytest.fixture(scope="module")
def both(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("decoder")
    proc = okdhp_process("bench", "--plan", "configs/quickstart.yaml", *LIGHT,
                         "--plan-root", tmp / "zoo", "--students", "r18x0.125-d16",
                         "--backends", "torch,onnxruntime,litert", "--precisions", "fp32",
                         "--decoder", "both", "--out-root", tmp / "reports",
                         "--device-name", "box", *FAST)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return tmp


def test_both_forms_are_timed_in_one_run_and_the_report_says_which_is_kept(both):
    rep = load_report(both / "reports" / "box" / "plan_quickstart.json")
    forms = {(r.backend, r.decoder) for r in rep.rows if r.status == "ok"}
    assert forms == {("torch", "transposed"), ("onnxruntime", "transposed"),
                     ("onnxruntime", "subpixel"), ("litert", "transposed"),
                     ("litert", "subpixel")}
    lines = decoder_lines(rep.rows, rep.decoder_defaults)
    assert len(lines) == 2 and all(f"keeps {get_target(b, 'fp32').decoder}" in line
                                   for b, line in zip(("onnxruntime", "litert"), lines))
    md = (both / "reports" / "box" / "plan_quickstart.md").read_text()
    assert "Decoder forms" in md and "litert (sub-pixel)" in md
    # a row's command re-measures that row in its own form
    sub = next(r for r in rep.rows if r.decoder == "subpixel")
    assert "--decoder subpixel" in sub.command


def test_each_forms_files_live_apart_and_say_their_form(both):
    student = both / "zoo" / "plan_quickstart" / "r18x0.125-d16"
    plain = yaml.safe_load((student / "export" / "export.yaml").read_text())
    sub = yaml.safe_load((student / "export" / "subpixel" / "export.yaml").read_text())
    assert plain.get("decoder", "transposed") == "transposed" and sub["decoder"] == "subpixel"
    from okdhp_edge.backends.onnxruntime import file_metadata

    assert file_metadata(student / "export" / "subpixel" / "model.onnx")["okdhp_decoder"] == \
        "subpixel"
    assert "okdhp_decoder" not in file_metadata(student / "export" / "model.onnx")
    # LiteRT's sub-pixel file moves its shuffles in NHWC: one TRANSPOSE per decoder layer and
    # the two at the input and output (PyTorch's NCHW PixelShuffle kept four per layer)
    import collections

    from ai_edge_litert.interpreter import Interpreter

    from okdhp_edge.backends.litert import DEPTH_TO_SPACE

    litert = sub["formats"]["litert_fp32"]
    assert litert["parity"]["passed"] and litert["litert"]["depth_to_space"] == DEPTH_TO_SPACE
    interp = Interpreter(model_path=str(student / "export" / "subpixel" / "model_fp32.tflite"))
    ops = collections.Counter(o["op_name"] for o in interp._get_ops_details())
    assert ops["TRANSPOSE"] <= 3 + 2 and "TRANSPOSE_CONV" not in ops, ops


def test_a_sub_pixel_file_of_an_earlier_form_is_rebuilt(both):
    """A sub-pixel file made before the form changed (3x3 convolutions, the form's revision
    0) is not reused: its record's build revision reads lower."""
    import dataclasses

    from okdhp_edge.backends.recipe import QuantRecipe
    from okdhp_edge.export.exporter import _cached, _previous
    from okdhp_edge.manifest import verified_student_manifest
    from okdhp_edge.targets import SUBPIXEL_REVISION

    student = both / "zoo" / "plan_quickstart" / "r18x0.125-d16"
    man = verified_student_manifest(student / "student.yaml")
    out = student / "export" / "subpixel"
    rec = _previous(out / "export.yaml", man, "subpixel")
    entry = rec["onnx"]
    assert entry.build_revision == SUBPIXEL_REVISION >= 1
    assert _cached(rec, "onnx", out, QuantRecipe(), man, "subpixel") == entry
    older = {"onnx": dataclasses.replace(entry, build_revision=None)}
    assert _cached(older, "onnx", out, QuantRecipe(), man, "subpixel") is None


def test_bundles_take_each_backends_form_and_an_edited_form_is_refused(both, tmp_path):
    from okdhp_edge.errors import ManifestError
    from okdhp_edge.runtime.bundle import load_bundle

    zoo = both / "zoo" / "plan_quickstart"
    res = okdhp("zoo", "export", "--zoo", zoo, "--all", "--out", tmp_path / "set",
                "--backends", "onnxruntime,litert", "--precisions", "fp32", "--students",
                "r18x0.125-d16", "--allow-parity-failure")
    assert res.returncode == 0, res.stderr
    forms = {b: yaml.safe_load((tmp_path / "set" / "r18x0.125-d16" / f"{b}-fp32" /
                                "bundle.yaml").read_text()).get("decoder", "transposed")
             for b in ("onnxruntime", "litert")}
    assert forms == {"onnxruntime": "transposed", "litert": "subpixel"}
    # the ONNX file says its form: a bundle.yaml edited to claim the other is refused
    bundle = tmp_path / "set" / "r18x0.125-d16" / "onnxruntime-fp32"
    man = yaml.safe_load((bundle / "bundle.yaml").read_text())
    man["decoder"] = "subpixel"
    (bundle / "bundle.yaml").write_text(yaml.safe_dump(man))
    with pytest.raises(ManifestError, match="decoder subpixel differs from the model file's "
                                            "transposed"):
        load_bundle(bundle)


def test_an_unknown_decoder_form_is_refused_in_one_line():
    res = okdhp("bench", "--plan", "configs/quickstart.yaml", "--decoder", "sideways")
    assert res.returncode == 2 and "decoder (--decoder)" in res.stderr


def test_a_targets_form_can_start_at_a_decoder_size():
    """ExecuTorch INT8 keeps the sub-pixel form from 25 MMACs of decoder work (the last
    transposed convolution's multiply-adds) up: mbv2-d128 at 96x128 and every MobileNetV2
    student at 256x192, not mbv2-d32 / d64 at 96x128; a form asked by name is that form;
    targets without a size rule keep theirs at every size."""
    from okdhp_edge.families import LIGHT
    from okdhp_edge.records import Architecture
    from okdhp_edge.targets import DECODER_FORMS, decoder_for

    def work(width: int, size: list[int]) -> int:
        args = {"encoder": "mobilenetv2", "width_mult": 0.5, "decoder_width": width,
                "decoder_layers": 3}
        return LIGHT.decoder_work(Architecture("encoder_decoder", args, 17, size))

    assert work(128, [128, 96]) == 16 * 128 * 128 * 16 * 12 == work(64, [192, 256])
    et, lite = get_target("executorch", "int8"), get_target("litert", "int8")
    kept = {(w, tuple(size)): decoder_for("auto", et, DECODER_FORMS, work(w, size))
            for w, size in [(32, [128, 96]), (64, [128, 96]), (128, [128, 96]),
                            (64, [192, 256]), (256, [192, 256])]}
    assert kept == {(32, (128, 96)): "transposed", (64, (128, 96)): "transposed",
                    (128, (128, 96)): "subpixel", (64, (192, 256)): "subpixel",
                    (256, (192, 256)): "subpixel"}
    assert decoder_for("subpixel", et, DECODER_FORMS, work(32, [128, 96])) == "subpixel"
    assert decoder_for("auto", lite, DECODER_FORMS, work(32, [128, 96])) == "subpixel"
    assert decoder_for("auto", et, ("transposed",), None) == "transposed"  # an hourglass


def test_a_reports_kept_forms_are_per_student():
    """decoder_defaults names each (student, target)'s form; a report made before the size
    rule (one form a target) reads as it was written."""
    from okdhp_edge.bench.report import decoder_defaults
    from okdhp_edge.records import BenchRow, LatencyStats

    def row(student: str, form: str, ms: float) -> BenchRow:
        r = BenchRow(student, "executorch", "int8", decoder=form)
        r.latency_ms["engine"] = LatencyStats(median=ms, p90=ms, p99=ms, min=ms, max=ms,
                                              iterations=50, ci95_median=[ms, ms])
        return r

    rows = [row("small", "transposed", 0.31), row("small", "subpixel", 0.34),
            row("big", "transposed", 5.5), row("big", "subpixel", 3.5)]
    kept = decoder_defaults(rows, {"small": 1_000_000, "big": 100_000_000})
    assert kept == {"big executorch/int8": "subpixel", "small executorch/int8": "transposed"}
    lines = decoder_lines(rows, kept)
    assert any(x.startswith("small executorch int8: transposed 1.10x faster") and
               x.endswith("keeps transposed") for x in lines), lines
    assert any(x.startswith("big executorch int8: subpixel") and
               x.endswith("keeps subpixel") for x in lines), lines
    old = decoder_lines(rows, {"executorch/int8": "subpixel"})  # one form for the target
    assert any("small" in x and "prefers transposed" in x for x in old), old
