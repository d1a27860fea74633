"""ONNX Runtime runner: CPU execution provider; CUDA / TensorRT EPs with onnxruntime-gpu."""

from __future__ import annotations

from typing import Any, Optional

import numpy as np

from okdhp_edge.runtime.base import BackendUnavailable, Runner

_PROVIDERS = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
}


class OnnxRuntimeRunner(Runner):
    """``device`` cpu or cuda (fp32, int8 QDQ files) or tensorrt (fp32 / fp16 through the
    TRT EP)."""

    backend = "onnxruntime"

    def load(self, path: str) -> None:
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise BackendUnavailable(f"onnxruntime is not installed ({exc})") from None
        provider = _PROVIDERS.get(self.device)
        if provider is None or provider not in ort.get_available_providers():
            raise BackendUnavailable(
                f"ONNX Runtime provider for device '{self.device}' is not available here "
                f"(have: {', '.join(ort.get_available_providers())})")
        # the file carries its precision: fp32, or int8 Q/DQ nodes (model_int8.onnx);
        # fp16 exists only through the TensorRT execution provider
        if self.precision not in ("fp32", "int8") and not (self.device == "tensorrt"
                                                           and self.precision == "fp16"):
            raise BackendUnavailable(
                f"onnxruntime/{self.device} offers fp32 and int8 (a QDQ file), not "
                f"'{self.precision}'")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = self.threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # errors only: graph clean-up notes (one per unused ReLU6 bound of a MobileNetV2)
        # would flood the console
        opts.log_severity_level = 3
        prov_opts: list[Any] = [{}]
        if self.device == "tensorrt":
            prov_opts = [{"trt_fp16_enable": self.precision == "fp16"}]
        self.session = ort.InferenceSession(path, opts, providers=[provider],
                                            provider_options=prov_opts)
        self.input_name = self.session.get_inputs()[0].name
        self.output_names = [self.session.get_outputs()[0].name]
        self._version = ort.__version__

    def model_metadata(self) -> dict[str, str]:
        meta = self.session.get_modelmeta().custom_metadata_map
        return {k: v for k, v in meta.items() if k.startswith("okdhp_")}

    def input_hw(self) -> Optional[tuple[int, int]]:
        shape = self.session.get_inputs()[0].shape
        if len(shape) != 4 or not all(isinstance(d, int) for d in shape[2:]):
            return None
        return shape[2], shape[3]

    def run(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(self.output_names, {self.input_name: x})[0]

    def close(self) -> None:
        self.session = None

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d.update(provider=_PROVIDERS[self.device], version=getattr(self, "_version", None),
                 intra_op_threads=self.threads, inter_op_threads=1)
        return d
