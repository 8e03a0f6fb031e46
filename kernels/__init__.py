"""Hand-written ops the synthesis runtime uses where they beat the library kernels.

Installed as ``histoaug.kernels``. What is here now:

* :mod:`histoaug.kernels.attention` -- short-sequence attention (one batched matmul, a
  softmax, a second matmul) and ``ShortSequenceAttnProcessor``, the diffusers attention
  processor the torch backend installs on the CPU.

Each kernel module states the torch reference it must match, and its test checks it against
that reference. See docs/architecture.md ("Where to add a kernel").
"""
