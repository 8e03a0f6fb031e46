"""Export of a fine-tuned latent diffusion model to ONNX / TensorRT artifacts.

Installed as ``histoaug.export``.
"""
