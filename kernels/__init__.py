"""Fused ops used by the synthesis runtime (attention, norms, post-processing).

Installed as ``histoaug.kernels``. Each kernel module states the torch reference it must match.
"""
