"""Synthesis runtime: one Synthesizer over torch, ONNX Runtime and TensorRT backends."""
