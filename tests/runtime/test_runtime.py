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


def test_a_bundles_missing_extra_is_named_once(tmp_path):
    """A runner's own reason already says which extra installs it: the bundle does not
    say it again (the ExecuTorch refusal named its extra twice)."""
    from okdhp_edge.errors import BackendUnavailable
    from okdhp_edge.runtime.bundle import unavailable_text

    named = BackendUnavailable("executorch is not installed (No module named 'executorch'); "
                               "pip install 'okdhp_edge[executorch]'")
    assert unavailable_text(tmp_path, named, "executorch").count("pip install") == 1
    bare = BackendUnavailable("the runtime refused the file")
    assert "this bundle needs pip install 'okdhp_edge[executorch]'" in unavailable_text(
        tmp_path, bare, "executorch")
