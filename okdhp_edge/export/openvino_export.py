"""OpenVINO IR from the ONNX file: fp32 weights, or fp16-compressed weights."""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import Any

from okdhp_edge.runtime.base import BackendUnavailable

log = logging.getLogger(__name__)


def save_ir(model: Any, xml_path: Path, compress_fp16: bool = False) -> Path:
    """``openvino.save_model`` under temporary names unique to this call, then rename the
    ``.bin`` and the ``.xml`` into place (the ``.xml`` last: it names its ``.bin`` by stem),
    so a crash never leaves a half IR and two exports of one model never collide."""
    import openvino as ov

    xml_path = Path(xml_path)
    xml_path.parent.mkdir(parents=True, exist_ok=True)
    tmp_dir = Path(tempfile.mkdtemp(prefix=f".{xml_path.stem}.", dir=xml_path.parent))
    try:
        tmp_xml = tmp_dir / xml_path.name
        ov.save_model(model, str(tmp_xml), compress_to_fp16=compress_fp16)
        os.replace(tmp_xml.with_suffix(".bin"), xml_path.with_suffix(".bin"))
        os.replace(tmp_xml, xml_path)
    finally:
        for leftover in tmp_dir.glob("*"):
            leftover.unlink()
        tmp_dir.rmdir()
    return xml_path


def export_openvino(onnx_path: Path, xml_path: Path, compress_fp16: bool = False) -> Path:
    """Convert ``onnx_path`` with ``openvino.convert_model`` and save it as an IR.

    Raises:
        BackendUnavailable: the ``openvino`` package is not installed (a GPU box or an
            embedded target may have TensorRT and ONNX Runtime only).
    """
    try:
        import openvino as ov
    except ImportError as exc:
        raise BackendUnavailable(f"openvino is not installed ({exc})") from None
    return save_ir(ov.convert_model(str(onnx_path)), xml_path, compress_fp16)
