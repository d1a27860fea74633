"""OpenVINO runner: inference precision set explicitly and read back from the compiled
model (on CPUs with AMX or AVX512-BF16 OpenVINO's default is bf16)."""

from __future__ import annotations

from typing import Any, Optional

import numpy as np

from okdhp_edge.runtime.base import BackendUnavailable, Runner

# int8: the IR's FakeQuantize layers run in int8; the rest in f32, explicitly (a CPU with
# native bf16 would otherwise run it in bf16)
_HINT = {"fp32": "f32", "bf16": "bf16", "fp16": "f16", "int8": "f32"}


class OpenVINORunner(Runner):
    """``device``: CPU, GPU or NPU (OpenVINO device names, case-insensitive)."""

    backend = "openvino"

    def load(self, path: str) -> None:
        try:
            import openvino as ov
        except ImportError as exc:
            raise BackendUnavailable(f"openvino is not installed ({exc})") from None
        core = ov.Core()
        dev = self.device.upper()
        if dev not in core.available_devices:
            raise BackendUnavailable(f"OpenVINO device '{dev}' not present "
                                     f"(have: {', '.join(core.available_devices)})")
        if self.precision not in _HINT:
            raise BackendUnavailable(f"unknown OpenVINO precision '{self.precision}'")
        caps = core.get_property(dev, "OPTIMIZATION_CAPABILITIES")
        hint = _HINT[self.precision]
        if self.precision == "bf16" and "BF16" not in caps:
            raise BackendUnavailable(
                f"OpenVINO {dev} has no native bf16 (capabilities: {', '.join(caps)})")
        if self.precision == "fp16" and "FP16" not in caps:
            # fp16 here means the fp16-compressed IR; without native f16 execution it
            # runs in f32 (weights decompressed), which describe() records
            hint = "f32"
        config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": hint,
                                  "PERFORMANCE_HINT": "LATENCY"}
        if dev == "CPU":
            config["INFERENCE_NUM_THREADS"] = self.threads
        model = core.read_model(path)
        self._metadata = _framework_metadata(model)
        self.compiled = core.compile_model(model, dev, config)
        self.request = self.compiled.create_infer_request()
        ran = self.compiled.get_property("INFERENCE_PRECISION_HINT")
        self.actual_precision = ran.get_type_name() if hasattr(ran, "get_type_name") else str(ran)
        self.output = self.compiled.output(0)
        self._version = ov.__version__

    def run(self, x: np.ndarray) -> np.ndarray:
        return self.request.infer({0: x}, share_inputs=True)[self.output]

    def model_metadata(self) -> dict[str, str]:
        return dict(self._metadata)

    def input_hw(self) -> Optional[tuple[int, int]]:
        shape = self.compiled.input(0).get_partial_shape()
        dims = [shape[i] for i in (2, 3)] if shape.rank.get_length() == 4 else []
        if len(dims) != 2 or not all(d.is_static for d in dims):
            return None
        return dims[0].get_length(), dims[1].get_length()

    def runtime_latency_ms(self) -> Optional[float]:
        """``InferRequest.latency``: what ``benchmark_app`` reads."""
        return float(self.request.latency)

    def close(self) -> None:
        self.request = None
        self.compiled = None

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d.update(device=self.device.upper(), version=getattr(self, "_version", None),
                 inference_precision=getattr(self, "actual_precision", None),
                 performance_hint="LATENCY")
        return d


def _framework_metadata(model: Any) -> dict[str, str]:
    """The ONNX file's ``okdhp_*`` metadata, which conversion keeps in the IR's rt_info
    under ``framework`` (and NNCF and fp16 compression keep with it)."""
    if not model.has_rt_info(["framework"]):
        return {}
    keys = model.get_rt_info()["framework"].keys()
    return {k: model.get_rt_info(["framework", k]).astype(str) for k in keys
            if k.startswith("okdhp_")}
