"""Log lines that other libraries print because of how histoaug uses them, and that the user cannot act on.

Each is matched exactly (logger and message), so anything else those libraries say still shows:

* transformers, when diffusers imports ``CLIPImageProcessor`` and torchvision is absent (histoaug
  does not depend on torchvision, DESIGN.md): "`X` requires torchvision (not installed); falling
  back to `XPil`" -- histoaug never uses an image processor's torchvision backend;
* torch.onnx's exporter, once per registry build: "torchvision is not installed. Skipping
  torchvision::nms" (and roi_align, roi_pool, deform_conv2d) -- histoaug's graphs hold none of them;
* diffusers, on a dtype cast that has nothing to keep in float32: "There are modules in X that should
  be kept in float32: []" -- the same warning with modules listed is kept.
"""

from __future__ import annotations

import logging
import re

QUIET = {
    "transformers.utils.import_utils": re.compile(r"requires torchvision \(not installed\); falling back to"),
    "torch.onnx._internal.exporter._registration":
        re.compile(r"^torchvision is not installed\. Skipping torchvision::"),
    "diffusers.models.modeling_utils": re.compile(r"that should be kept in float32: \[\]\."),
}


class _DropMatching(logging.Filter):
    def __init__(self, pattern: re.Pattern[str]) -> None:
        super().__init__()
        self.pattern = pattern

    def filter(self, record: logging.LogRecord) -> bool:
        return not self.pattern.search(record.getMessage())


def quiet_library_noise() -> None:
    """Attach the filters (idempotent: once per logger)."""
    for name, pattern in QUIET.items():
        logger = logging.getLogger(name)
        if not any(isinstance(existing, _DropMatching) for existing in logger.filters):
            logger.addFilter(_DropMatching(pattern))
