"""Which implementation a fused op runs: its Triton kernel or its torch reference.

A Triton kernel runs only on CUDA tensors and only where Triton imports (or on CPU tensors under
``TRITON_INTERPRET=1``, Triton's CPU interpreter, for tests); everywhere else the torch reference
runs (the same function, more memory passes). The choice is logged once per (op, reason) and
reported by :func:`kernels_runtime_id`, so a backend that uses these ops can put it in its
``runtime_id`` (the Triton path rounds differently from the reference in the last bits).

Kernels are JIT-compiled on first use, not at import, and kept per interpreter mode: under
``TRITON_INTERPRET=1`` (read when a kernel is first built) Triton runs them on the CPU with
numpy, which is how CI checks them against their references without a GPU. Triton decides at
*its own import* whether its library functions (``tl.sum``, ...) are interpreted, so the
interpreter only works in a process that imported Triton with ``TRITON_INTERPRET=1`` already set;
elsewhere CPU tensors get the reference, with that reason logged.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import os
from collections.abc import Callable

import torch

logger = logging.getLogger(__name__)

_LOGGED: set[tuple[str, str]] = set()


def interpreting() -> bool:
    """Whether Triton kernels run in its CPU interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


@functools.cache
def triton_import_error() -> str | None:
    """None when ``import triton`` works, else why not (one line)."""
    if importlib.util.find_spec("triton") is None:
        return "triton is not installed"
    try:
        import triton.language  # noqa: F401
    except Exception as exc:  # a broken install: report it, never crash an import of histoaug
        return f"triton does not import ({type(exc).__name__}: {exc})"
    return None


def interpreter_unavailable_reason() -> str | None:
    """None when Triton's CPU interpreter can run kernels in this process, else why not."""
    error = triton_import_error()
    if error is not None:
        return error
    import triton.language as tl

    try:
        from triton.runtime.interpreter import InterpretedFunction
    except ImportError as exc:  # another Triton layout: no way to tell, so no interpreted kernels
        return f"this Triton has no interpreter check ({exc})"
    if not isinstance(tl.sum, InterpretedFunction):
        return "triton was imported before TRITON_INTERPRET=1 was set, so its interpreter cannot run here"
    return None


def triton_unavailable_reason(tensor: torch.Tensor) -> str | None:
    """None when the Triton kernel can run on ``tensor``, else why the reference runs instead."""
    if tensor.device.type == "cpu" and interpreting():
        return interpreter_unavailable_reason()
    if tensor.device.type != "cuda":
        return f"tensors on {tensor.device.type}, Triton kernels run on CUDA only"
    return triton_import_error()


_BROKEN: dict[str, str] = {}


def mark_broken(op: str, exc: BaseException) -> None:
    """Record that ``op``'s Triton kernel failed to build or launch here: the reference runs from now on
    (logged once, as a warning, with the first line of the error; ``kernels_runtime_id`` reports it)."""
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
    _BROKEN[op] = f"its Triton kernel failed here ({type(exc).__name__}: {first})"
    logger.warning("%s: Triton kernel failed (%s); the torch reference runs from now on", op, first)


def use_triton(op: str, tensor: torch.Tensor) -> bool:
    """The dispatch decision for ``op`` on ``tensor``; a fallback is logged once per reason."""
    reason = _BROKEN.get(op) or triton_unavailable_reason(tensor)
    if reason is None:
        return True
    if (op, reason) not in _LOGGED:
        _LOGGED.add((op, reason))
        logger.info("%s: torch reference (%s)", op, reason)
    return False


_JIT_CACHE: dict[tuple[Callable, bool], Callable] = {}


def jit(fn: Callable) -> Callable:
    """``triton.jit(fn)``, built on first use and cached per interpreter mode."""
    key = (fn, interpreting())
    if key not in _JIT_CACHE:
        import triton

        _JIT_CACHE[key] = triton.jit(fn)
    return _JIT_CACHE[key]


def kernels_runtime_id(device: torch.device) -> dict[str, str]:
    """What the fused ops run as on ``device``: ``{"kernels": "triton 3.x" | "torch reference"}``."""
    if device.type != "cuda":
        return {"kernels": "torch reference"}
    error = triton_import_error()
    if error is not None:
        return {"kernels": f"torch reference ({error})"}
    import triton

    if _BROKEN:
        return {"kernels": f"triton {triton.__version__}; reference for " + ", ".join(sorted(_BROKEN))}
    return {"kernels": f"triton {triton.__version__}"}
