"""Hand-written ops the synthesis runtime uses where they beat the library kernels.

Installed as ``histoaug.kernels``. What is here now:

* :mod:`~histoaug.kernels.attention` -- short-sequence attention (one batched matmul, a
  softmax, a second matmul) and its diffusers attention processor; the torch backend installs
  it on the CPU.
* :mod:`~histoaug.kernels.group_norm` -- GroupNorm fused with an optional pre-norm add and a
  SiLU, in Triton; :mod:`~histoaug.kernels.diffusers_fusion` swaps a diffusers UNet's or VAE's
  norms for it.
* :mod:`~histoaug.kernels.postprocess` -- decoded images -> uint8 NHWC patches (clamp,
  antialiased resize, quantise, transpose) in one Triton pass.
* :mod:`~histoaug.kernels.dispatch` -- which implementation runs: the Triton kernel (CUDA, or
  the CPU under ``TRITON_INTERPRET=1`` in tests) or the torch reference.

Each kernel module states the torch reference it must match, and its test checks it against
that reference. See docs/architecture.md ("Where to add a kernel").
"""
