"""Synthesis backends: torch, ONNX Runtime, TensorRT, and the choice between them."""
