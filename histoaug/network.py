"""Whether a download may be tried: offline is detected at once, not after a minute of retries.

histoaug downloads nothing by itself; a few user choices name something that is fetched when
online (a hub id such as ``facebook/dino-vits16`` for ``prompts build --embedder``, a hub model for
``eval --features``, the FID Inception network). Offline, huggingface_hub and transformers retry
each file for ~25 s before their (good) error. So before any such fetch: the Hugging Face offline
variables are honoured, and otherwise one TCP connection to the host is tried with a short
time-out; when either says offline, only local copies are used (``local_files_only``) and a
missing one fails in one line.
"""

from __future__ import annotations

import functools
import logging
import os
import socket

logger = logging.getLogger(__name__)

OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
CONNECT_TIMEOUT_S = 2.0
HUB_HOST = "huggingface.co"


def offline_reason(host: str | None = None) -> str | None:
    """None when ``host`` (default: the Hugging Face hub) can be reached, else why a download is not
    tried (said in errors)."""
    for name in OFFLINE_VARIABLES:
        if os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on"):
            return f"{name} is set"
    return _unreachable(host or HUB_HOST)


@functools.cache
def _unreachable(host: str) -> str | None:
    """One connection attempt per host and process (the answer is kept: a retry would cost the same)."""
    try:
        with socket.create_connection((host, 443), timeout=CONNECT_TIMEOUT_S):
            return None
    except OSError as exc:
        reason = f"{host} cannot be reached ({exc.strerror or type(exc).__name__})"
        logger.info("offline: %s; only local copies are used", reason)
        return reason
