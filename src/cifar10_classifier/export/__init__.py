"""Export: the inference graph to ONNX (fp32) and its int8 quantization with ONNX Runtime. Needs torch."""
