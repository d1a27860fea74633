"""Runtime: one Runner interface over ONNX Runtime, OpenVINO, TensorRT and PyTorch, and
deployable bundles (image + person box -> keypoints). Importing it does not import torch.
"""

from __future__ import annotations

from okdhp_edge.runtime.base import BackendUnavailable, Runner
from okdhp_edge.targets import BACKENDS


def make_runner(backend: str, precision: str = "fp32", threads: int = 1,
                device: str = "cpu") -> Runner:
    """A runner of ``backend`` (torch, onnxruntime, openvino, tensorrt, torch_tensorrt)."""
    if backend == "onnxruntime":
        from okdhp_edge.runtime.onnxruntime_runner import OnnxRuntimeRunner as cls
    elif backend == "openvino":
        from okdhp_edge.runtime.openvino_runner import OpenVINORunner as cls
    elif backend == "tensorrt":
        from okdhp_edge.runtime.tensorrt_runner import TensorRTRunner as cls
    elif backend == "torch":
        from okdhp_edge.runtime.torch_runner import TorchRunner as cls
    elif backend == "torch_tensorrt":
        from okdhp_edge.runtime.torch_runner import TorchTensorRTRunner as cls
    else:
        raise ValueError(f"unknown backend '{backend}'; expected one of {', '.join(BACKENDS)}")
    return cls(precision, threads, device)


__all__ = ["BACKENDS", "BackendUnavailable", "Runner", "make_runner"]
