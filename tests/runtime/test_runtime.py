"""Runtimes: a backend that cannot run here is reported unavailable with the reason."""

import pytest

from okdhp_edge.manifest import zoo_students


def test_unavailable_backend_reported(tiny_zoo):
    from okdhp_edge.runtime import BackendUnavailable, make_runner

    d, _ = zoo_students(tiny_zoo)[0]
    r = make_runner("tensorrt", "fp16")
    with pytest.raises(BackendUnavailable):
        r.load(str(d / "export" / "model_fp16.engine"))
    r = make_runner("onnxruntime", "fp32", device="cuda")
    with pytest.raises(BackendUnavailable, match="provider"):
        r.load(str(d / "export" / "model.onnx"))
