"""OpenVINO IR from the ONNX file: fp32 weights, or fp16-compressed weights."""

from __future__ import annotations

import logging
from pathlib import Path

from okdhp_edge.runtime.base import BackendUnavailable

log = logging.getLogger(__name__)


def export_openvino(onnx_path: Path, xml_path: Path, compress_fp16: bool = False) -> Path:
    """Convert ``onnx_path`` with ``openvino.convert_model`` and ``save_model``.

    Writes ``xml_path`` and its ``.bin``; both are written under temporary names and
    renamed so a crash never leaves a half IR.

    Raises:
        BackendUnavailable: the ``openvino`` package is not installed (a GPU box or an
            embedded target may have TensorRT and ONNX Runtime only).
    """
    try:
        import openvino as ov
    except ImportError as exc:
        raise BackendUnavailable(f"openvino is not installed ({exc})") from None

    xml_path = Path(xml_path)
    xml_path.parent.mkdir(parents=True, exist_ok=True)
    model = ov.convert_model(str(onnx_path))
    tmp_xml = xml_path.with_name(f".{xml_path.stem}.tmp.xml")
    ov.save_model(model, str(tmp_xml), compress_to_fp16=compress_fp16)
    tmp_bin = tmp_xml.with_suffix(".bin")
    # the .xml names its .bin by file stem: rename both, .bin first
    final_bin = xml_path.with_suffix(".bin")
    tmp_bin.replace(final_bin)
    text = tmp_xml.read_text()
    tmp_xml.unlink()
    from okdhp_edge.utils.io import atomic_write_text

    atomic_write_text(xml_path, text)
    return xml_path
