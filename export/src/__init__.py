"""Export of a fine-tuned latent diffusion model to a histoaug artifact (``histoaug export``).

Installed as ``histoaug.export``. What is here now:

* :mod:`~histoaug.export.artifact` -- ``export_model``: a pipeline dir (or ``default``) ->
  a verified artifact, or a plain diffusers dir; written through
  :mod:`histoaug.synthesis.artifact_format`, which owns the layout and the manifest.
* :mod:`~histoaug.export.onnx_graphs` -- the UNet and the VAE decoder -> ONNX (opset 23,
  fused ``Attention``, dynamic batch, float32 I/O whatever the compute dtype).
* :mod:`~histoaug.export.graph_checks` -- one fused Attention node per attention block.
* :mod:`~histoaug.export.verify` -- ONNX Runtime vs torch on the same inputs, per dtype.

TensorRT engines are built from the artifact's ONNX graphs by the TensorRT backend
(:mod:`histoaug.synthesis.backends.tensorrt_backend`), not here, today.
"""
