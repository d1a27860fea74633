"""Export students: ONNX (+ metadata), OpenVINO IR (fp32 / fp16), TensorRT engines."""
