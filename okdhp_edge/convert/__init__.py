"""The torch-side conversions the backends build their files from: the ONNX export, the
sub-pixel rewrite of transposed convolutions, a quantization-aware student's PT2E program
and the INT8 calibration (the recipe's shared fields) with its data. Below
:mod:`okdhp_edge.backends`, which reads them; nothing here knows a runtime."""
