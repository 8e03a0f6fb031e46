"""The compute dtypes histoaug names on its command line and in manifests, and their torch types.

One table for the torch backend, ONNX export, benchmarks and the CLI choices. Imports only torch.
"""

from __future__ import annotations

import torch

DTYPES: dict[str, torch.dtype] = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
DTYPE_NAMES = tuple(DTYPES)  # ("fp32", "bf16", "fp16")
