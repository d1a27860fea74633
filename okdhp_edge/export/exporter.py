"""Export one student to every format asked for, check parity, write ``export.yaml``.

Formats (the table that drives both export and bench):

| format          | file                     | runs on                         |
|-----------------|--------------------------|---------------------------------|
| onnx            | model.onnx (batch 1)     | onnxruntime                     |
| onnx_dynamic    | model_dynamic.onnx       | onnxruntime (throughput)        |
| openvino_fp32   | openvino_fp32/model.xml  | openvino                        |
| openvino_fp16   | openvino_fp16/model.xml  | openvino (fp16-compressed IR)   |
| tensorrt_fp32   | model_fp32.engine        | tensorrt                        |
| tensorrt_fp16   | model_fp16.engine        | tensorrt                        |
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Optional

import numpy as np

from okdhp_edge.data.codec import HeatmapCodec
from okdhp_edge.manifest import read_yaml, write_yaml
from okdhp_edge.runtime.base import run_one_by_one
from okdhp_edge.utils.io import sha256_file

log = logging.getLogger(__name__)

FORMATS: dict[str, dict[str, Any]] = {
    "onnx": {"file": "model.onnx", "backend": "onnxruntime"},
    "onnx_dynamic": {"file": "model_dynamic.onnx", "backend": "onnxruntime"},
    "openvino_fp32": {"file": "openvino_fp32/model.xml", "backend": "openvino"},
    "openvino_fp16": {"file": "openvino_fp16/model.xml", "backend": "openvino"},
    "tensorrt_fp32": {"file": "model_fp32.engine", "backend": "tensorrt"},
    "tensorrt_fp16": {"file": "model_fp16.engine", "backend": "tensorrt"},
}
DEFAULT_FORMATS = tuple(FORMATS)

# (backend, precision) -> export format holding its model file; None: the student itself
MODEL_FORMAT: dict[tuple[str, str], Optional[str]] = {
    ("torch", "fp32"): None, ("torch", "bf16"): None, ("torch", "fp16"): None,
    ("onnxruntime", "fp32"): "onnx",
    ("openvino", "fp32"): "openvino_fp32", ("openvino", "bf16"): "openvino_fp32",
    ("openvino", "fp16"): "openvino_fp16",
    ("tensorrt", "fp32"): "tensorrt_fp32", ("tensorrt", "fp16"): "tensorrt_fp16",
    ("torch_tensorrt", "fp32"): None, ("torch_tensorrt", "fp16"): None,
}

# parity tolerances: (max |heatmap error|, mean keypoint displacement in input px)
TOLERANCE = {"fp32": (1e-3, 0.5), "fp16": (5e-2, 1.0)}


def _files_of(fmt: str, out_dir: Path) -> list[Path]:
    main = out_dir / FORMATS[fmt]["file"]
    return [main, main.with_suffix(".bin")] if main.suffix == ".xml" else [main]


def parity(reference: np.ndarray, other: np.ndarray, stride: int) -> dict[str, float]:
    """Max heatmap error and mean decoded-keypoint displacement (input pixels)."""
    c_ref, _ = HeatmapCodec.decode(reference)
    c_oth, _ = HeatmapCodec.decode(other)
    disp = np.linalg.norm((c_ref - c_oth) * stride, axis=-1)
    return {"max_abs_heatmap_err": float(np.abs(reference - other).max()),
            "mean_kpt_disp_px": float(disp.mean()), "max_kpt_disp_px": float(disp.max())}


def parity_inputs(man: dict[str, Any], n_random: int = 4, n_real: int = 8
                  ) -> dict[str, np.ndarray]:
    """Seeded random inputs and real crops of the student's report split (when readable)."""
    w, h = man["preprocessing"]["input_size"]
    rng = np.random.default_rng(0)
    out = {"random": rng.standard_normal((n_random, 3, h, w)).astype(np.float32)}
    try:
        from okdhp_edge.evaluate import report_dataset

        ds = report_dataset(man)
        idx = np.linspace(0, len(ds) - 1, min(n_real, len(ds))).astype(int)
        out["real"] = np.stack([ds[int(i)]["image"] for i in idx])
    except Exception as exc:  # noqa: BLE001 - parity on random inputs still runs
        log.warning("no real parity inputs for %s: %s", man["name"], exc)
    return out


def export_student(student_yaml: Path, out_dir: Optional[Path] = None,
                   formats: tuple[str, ...] = DEFAULT_FORMATS, force: bool = False
                   ) -> dict[str, Any]:
    """Export a student and return its export manifest (also written as ``export.yaml``).

    Reuses an earlier export whose weights hash and formats match, unless ``force``.
    """
    import torch

    from okdhp_edge.export.onnx_export import export_onnx, onnx_metadata
    from okdhp_edge.export.openvino_export import export_openvino
    from okdhp_edge.export.tensorrt_export import build_engine, tensorrt_unavailable_reason
    from okdhp_edge.runtime import BackendUnavailable, make_runner
    from okdhp_edge.students import load_student

    student_yaml = Path(student_yaml)
    model, man = load_student(student_yaml)
    out_dir = Path(out_dir or student_yaml.parent / "export")
    manifest_path = out_dir / "export.yaml"
    if manifest_path.is_file() and not force:
        old = read_yaml(manifest_path)
        if (old.get("weights_sha256") == man["weights"]["sha256"]
                and set(formats) <= set(old.get("formats", {}))
                and all((out_dir / f["file"]).is_file() for f in old["formats"].values()
                        if f.get("file"))):
            return old
    size = tuple(man["preprocessing"]["input_size"])
    stride = int(man["preprocessing"]["heatmap_stride"])
    meta = onnx_metadata(man)
    record: dict[str, Any] = {"schema": 1, "student": man["name"],
                              "weights_sha256": man["weights"]["sha256"],
                              "preprocessing": man["preprocessing"], "formats": {}}
    onnx_path = out_dir / FORMATS["onnx"]["file"]
    export_onnx(model, onnx_path, size, meta, dynamic_batch=False)
    inputs = parity_inputs(man)
    model.eval()
    with torch.no_grad():
        ref = {k: model(torch.from_numpy(v)).heatmap.numpy() for k, v in inputs.items()}
    trt_reason = tensorrt_unavailable_reason()
    for fmt in formats:
        entry: dict[str, Any] = {"backend": FORMATS[fmt]["backend"]}
        try:
            if fmt == "onnx_dynamic":
                export_onnx(model, out_dir / FORMATS[fmt]["file"], size, meta, dynamic_batch=True)
            elif fmt.startswith("openvino"):
                export_openvino(onnx_path, out_dir / FORMATS[fmt]["file"],
                                compress_fp16=fmt.endswith("fp16"))
            elif fmt.startswith("tensorrt"):
                if trt_reason:
                    raise BackendUnavailable(trt_reason)
                build_engine(onnx_path, out_dir / FORMATS[fmt]["file"],
                             fp16=fmt.endswith("fp16"))
        except BackendUnavailable as exc:
            entry.update(available=False, reason=str(exc))
            record["formats"][fmt] = entry
            continue
        files = _files_of(fmt, out_dir)
        entry.update(available=True, file=FORMATS[fmt]["file"],
                     sha256={str(p.relative_to(out_dir)): sha256_file(p) for p in files})
        entry["parity"] = _check_parity(fmt, out_dir / FORMATS[fmt]["file"], inputs, ref,
                                        stride, make_runner)
        record["formats"][fmt] = entry
    write_yaml(manifest_path, record)
    return record


def _check_parity(fmt: str, path: Path, inputs: dict[str, np.ndarray],
                  ref: dict[str, np.ndarray], stride: int, make_runner) -> dict[str, Any]:
    precision = "fp16" if fmt.endswith("fp16") else "fp32"
    backend = FORMATS[fmt]["backend"]
    device = "cuda" if backend == "tensorrt" else "cpu"
    # the export itself is checked at fp32 execution where the runtime allows it
    runner = make_runner(backend, "fp32", threads=1, device=device)
    try:
        runner.load(str(path))
        res: dict[str, Any] = {}
        for k, x in inputs.items():
            res[k] = parity(ref[k], run_one_by_one(runner, x), stride)
    except Exception as exc:  # noqa: BLE001 - a failed parity is reported, not hidden
        return {"passed": False, "error": f"{type(exc).__name__}: {exc}"}
    finally:
        runner.close()
    tol_err, tol_disp = TOLERANCE[precision]
    res["passed"] = bool(all(v["max_abs_heatmap_err"] <= tol_err
                             and v["mean_kpt_disp_px"] <= tol_disp for v in res.values()))
    res["tolerance"] = {"max_abs_heatmap_err": tol_err, "mean_kpt_disp_px": tol_disp}
    if not res["passed"]:
        log.warning("parity FAILED for %s: %s", path, res)
    return res
