"""Which backends can run a model on a device, the ``auto`` choice, and construction.

No silent fallback: asking for a backend that cannot run raises InvalidArgumentError with the
reason; ``auto`` logs what it picked and why, and the reason travels with the Synthesizer
(``Synthesizer.choice``) into the provenance of what it writes.

``auto`` on the CPU (measured on the 2-core development CPU, benchmarks/RESULTS.md): the UNet
compiled ahead of time in bf16 is the fastest runtime (2.3x diffusers fp32 at batch 32), where
Inductor finds a C++ compiler and the CPU has native bf16. One rule decides whether compiling
pays, for the library, the CLI and the mixing pool alike (``compile_pays``): a compiled
Synthesizer runs every block at one UNet batch shape per guidance factor (short blocks are
padded), so the cost is ~40 s per shape the compile cache lacks and ~1 s per shape it holds,
and the saving ~0.0165 s per patch against the fastest uncompiled runtime. A job of known size
(``expected_patches``: ``histoaug generate --n``, the pool's epoch share) compiles when the
saving exceeds the cost; a job of unknown size (a plain ``load_synthesizer()``) compiles only
when the cache already holds every shape it needs, so nobody waits for a compile they could not
foresee. Otherwise the uncompiled order holds: onnxruntime for artifacts, torch fp32 otherwise.

``auto`` on CUDA (its own block below, ``cuda_auto_candidates``): only the runtimes that
``histoaug/gpu_verified.json`` lists (they passed ``pytest -m gpu`` on a real GPU), the
measured-fastest first; ``load_synthesizer`` tries them in that order and falls through, with the
reason logged, when one cannot be built here (an ORT CUDA provider that is listed but does not
load, say). With nothing listed it runs the plain torch backend, eager in fp32 (the runtime whose
patches agree with the CPU reference) and says so: no unverified fast path that changes results.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from histoaug.errors import InvalidArgumentError
from histoaug.synthesis.backends.registry import BACKEND_NAMES, BACKENDS
from histoaug.synthesis.model_source import ModelFiles
from histoaug.synthesis.sampling import Backend

logger = logging.getLogger(__name__)

__all__ = ["BACKEND_NAMES", "RuntimeChoice", "choose_runtime", "compile_pays", "create_backend", "resolve_device",
           "unavailable_reason"]

# benchmarks/RESULTS.md ("Compile cost and the auto threshold"): a cold AOTInductor compile of the
# embedded UNet measured 31-50 s per shape on the 2-core CPU (40 s taken), loading a cached package ~1 s,
# and compiled bf16 saves 1/24.55 - 1/41.33 = 0.0165 s per patch over onnxruntime fp32.
COLD_COMPILE_S = 40.0
CACHED_LOAD_S = 1.0
SAVING_PER_PATCH_S = 0.0165
# the block size of a job that does not say (Synthesizer.generate's default batch)
DEFAULT_JOB_BATCH = 32


def resolve_device(device: str | torch.device | None) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise InvalidArgumentError(f"unknown device {device!r}") from exc
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise InvalidArgumentError(f"device {device!r} asked for, but no CUDA device is visible")
    if resolved.type not in ("cpu", "cuda"):
        raise InvalidArgumentError(f"device {device!r} is not supported (cpu or cuda)")
    return resolved


def unavailable_reason(name: str, model: ModelFiles, device: torch.device) -> str | None:
    """None when backend ``name`` can run ``model`` on ``device``, else why not."""
    entry = BACKENDS.get(name)
    if entry is None:
        raise InvalidArgumentError(f"unknown backend {name!r}; choose auto or one of {', '.join(BACKEND_NAMES)}")
    if entry.needs_export and model.kind != "artifact":
        return (f"{name} runs exported artifacts; export this model first "
                f"(histoaug export {model.root} OUT --format onnx)")
    return entry.unavailable(device)


@dataclass(frozen=True)
class RuntimeChoice:
    """The runtime a load resolved to, and why (logged, and recorded in generated files)."""

    backend: str
    dtype: str | None
    compile: bool
    reason: str
    graphs: bool = False  # CUDA graphs (torch backend on CUDA)

    def as_dict(self) -> dict[str, object]:
        info: dict[str, object] = {"backend": self.backend, "dtype": self.dtype, "compile": self.compile,
                                   "reason": self.reason}
        if self.graphs:
            info["graphs"] = True
        return info


# Uncompiled order: measured on CPU (benchmarks/RESULTS.md, "Synthesis (issue 3)").
CPU_PREFERENCE = (("onnxruntime", None), ("torch", "fp32"))


def cpu_has_native_bf16() -> bool:
    """Whether oneDNN runs bf16 natively here (AVX-512-bf16 / AMX); emulated bf16 is slower than fp32."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def compile_pays(expected_patches: int | None, cached: int, missing: int) -> tuple[bool, str]:
    """(compile?, why) from the job size and how many of the job's UNet shapes the compile cache
    holds (``cached``) or lacks (``missing``): the one rule for the library, the CLI and the pool."""
    cost = missing * COLD_COMPILE_S + cached * CACHED_LOAD_S
    state = (f"the compile cache holds {cached} of the {cached + missing} UNet shape(s) this job needs "
             f"(~{cost:.0f} s to {'load' if not missing else 'compile'})")
    if expected_patches is None:
        if missing:
            return False, (f"job size unknown and {state}: pass expected_patches=N (compiling pays from "
                           f"~{round(cost / SAVING_PER_PATCH_S)} patches) or compile=True")
        return True, f"{state}; compiled bf16 is the fastest measured CPU runtime"
    saving = expected_patches * SAVING_PER_PATCH_S
    if saving <= cost:
        return False, f"a {expected_patches}-patch job saves ~{saving:.0f} s by compiling and {state}"
    return True, f"a {expected_patches}-patch job saves ~{saving:.0f} s by compiling and {state}"


def _compiled_cpu_reason(model: ModelFiles, device: torch.device, dtype: str | None,
                         expected_patches: int | None, batch_size: int | None,
                         guidance: float | None) -> tuple[bool, str]:
    """(compile?, why) for ``auto`` on the CPU with no compile setting asked."""
    from histoaug.synthesis.backends.torch_backend import compile_unavailable_reason, compiled_unet_cached
    from histoaug.synthesis.defaults import DEFAULT_GUIDANCE
    from histoaug.synthesis.sampling import SamplerSettings

    if dtype not in (None, "bf16"):
        return False, f"dtype {dtype} asked for; the compiled path runs bf16"
    if (reason := compile_unavailable_reason(device)) is not None:
        return False, f"no compiled path: {reason}"
    if not cpu_has_native_bf16():
        return False, "no compiled path: this CPU has no native bf16"
    block = batch_size or DEFAULT_JOB_BATCH
    factors = SamplerSettings(guidance=DEFAULT_GUIDANCE if guidance is None else float(guidance)).unet_batch_factors()
    shapes = sorted(block * f for f in factors)
    cached = sum(compiled_unet_cached(model, device, "bf16", unet_batch) for unet_batch in shapes)
    return compile_pays(expected_patches, cached, len(shapes) - cached)


def _first_available(model: ModelFiles, device: torch.device, dtype: str | None,
                     why_not_compiled: str | None) -> RuntimeChoice:
    preference = CPU_PREFERENCE
    skipped = [why_not_compiled] if why_not_compiled else []
    for name, preferred in preference:
        reason = unavailable_reason(name, model, device)
        fixed = BACKENDS[name].fixed_dtype(model)
        if reason is None and dtype is not None and fixed is not None and dtype != fixed:
            reason = f"runs the artifact's export dtype {fixed}, not {dtype}"
        if reason is None:
            return RuntimeChoice(name, dtype or preferred, False, "; ".join(skipped) or "first choice")
        skipped.append(f"{name}: {reason}")
    raise InvalidArgumentError("no backend can run this model: " + "; ".join(skipped))


def choose_runtime(model: ModelFiles, device: torch.device, backend: str = "auto", dtype: str | None = None,
                   compile: bool | None = None, expected_patches: int | None = None, *,
                   batch_size: int | None = None, guidance: float | None = None) -> RuntimeChoice:
    """Resolve ``backend="auto"`` (and ``compile=None``) to a concrete runtime, with the reason.

    ``expected_patches``, ``batch_size`` and ``guidance`` describe the job (None: unknown, the
    default block of 32, the default guidance); they decide whether compiling pays. An explicit
    backend is taken as asked (``compile=None`` means no compile there).
    """
    if backend != "auto":
        return RuntimeChoice(backend, dtype, bool(compile), "asked for")
    if device.type == "cuda" and not compile:
        choice = cuda_auto_candidates(model, device, dtype)[0]
        _log_choice(choice, device)
        return choice
    if compile:
        chosen = dtype or ("bf16" if device.type == "cpu" and cpu_has_native_bf16() else None)
        choice = RuntimeChoice("torch", chosen, True, "compile asked for; it applies to torch only")
    elif compile is None and device.type == "cpu":
        compiled, why = _compiled_cpu_reason(model, device, dtype, expected_patches, batch_size, guidance)
        choice = (RuntimeChoice("torch", "bf16", True, why) if compiled
                  else _first_available(model, device, dtype, f"not compiled: {why}"))
    else:
        choice = _first_available(model, device, dtype, None)
    logger.info("backend auto -> %s%s%s on %s (%s)", choice.backend, f" {choice.dtype}" if choice.dtype else "",
                " compiled" if choice.compile else "", device, choice.reason)
    return choice


# --- auto on CUDA: the verified list only ------------------------------------------------------


def _log_choice(choice: RuntimeChoice, device: torch.device) -> None:
    logger.info("backend auto -> %s%s%s on %s (%s)", choice.backend, f" {choice.dtype}" if choice.dtype else "",
                " graphs" if choice.graphs else "", device, choice.reason)


def cuda_auto_candidates(model: ModelFiles, device: torch.device, dtype: str | None = None,
                         table: dict[str, dict[str, object]] | None = None) -> list[RuntimeChoice]:
    """``auto``'s runtimes on CUDA, in the order to try them: the listed (verified) runtimes that can run
    this model here, measured-fastest first; plain torch eager when none is listed or usable.

    ``table`` replaces the packaged gpu_verified.json (tests).
    """
    from histoaug.synthesis.backends.gpu_verified import verified_runtimes

    listed = verified_runtimes(table)
    candidates: list[RuntimeChoice] = []
    skipped: list[str] = []
    for runtime in listed:
        reason = unavailable_reason(runtime.backend, model, device)
        fixed = BACKENDS[runtime.backend].fixed_dtype(model) if runtime.backend in BACKENDS else None
        if reason is None and dtype is not None and (runtime.dtype or fixed) not in (None, dtype):
            reason = f"verified in {runtime.dtype or fixed}, {dtype} asked for"
        if reason is not None:
            skipped.append(f"{runtime.name}: {reason}")
            continue
        speed = f", {runtime.patches_per_second:.0f} patches/s" if runtime.patches_per_second else ""
        where = f" on {runtime.device}" if runtime.device else ""
        candidates.append(RuntimeChoice(runtime.backend, runtime.dtype if runtime.backend == "torch" else None,
                                        runtime.compile, f"verified on a GPU{where}{speed} (gpu_verified.json)",
                                        graphs=runtime.graphs))
    fallback_dtype = dtype or "fp32"
    if not listed:
        why = ("histoaug/gpu_verified.json lists no runtime verified on a GPU yet, so auto runs the plain torch "
               f"backend, eager, in {fallback_dtype} (no graphs, compile, TensorRT or ORT); ask for "
               "backend/dtype/graphs explicitly for speed")
    elif not candidates:
        why = ("no runtime of gpu_verified.json can run here (" + "; ".join(skipped) + f"), so plain torch eager "
               f"{fallback_dtype}")
    else:
        why = f"none of the verified runtimes could be built here, so plain torch eager {fallback_dtype}"
    candidates.append(RuntimeChoice("torch", fallback_dtype, False, why))
    return candidates


def create_backend(name: str, model: ModelFiles, device: torch.device, dtype: str | None, *,
                   compile: bool = False, graphs: bool = False) -> Backend:
    """Construct backend ``name``; ``dtype`` None means the model's/backend's default.

    ``compile`` (ahead-of-time compiled UNet) exists for the torch backend only; the ONNX backends
    are graph-optimised by their runtime already.
    """
    reason = unavailable_reason(name, model, device)
    if reason is not None:
        raise InvalidArgumentError(f"backend {name!r} is unavailable: {reason}")
    entry = BACKENDS[name]
    if compile and not entry.compiles:
        raise InvalidArgumentError(f"compile applies to the torch backend, not {name!r}")
    if graphs and not entry.graphs:
        raise InvalidArgumentError(f"graphs applies to the torch backend, not {name!r}")
    fixed = entry.fixed_dtype(model)
    if dtype is not None and fixed is not None and dtype != fixed:
        raise InvalidArgumentError(f"this artifact was exported as {fixed}; {name} runs it in that dtype "
                                   f"(re-export with --dtype {dtype})")
    return entry.create(model, device, dtype, compile, graphs=graphs) if graphs else \
        entry.create(model, device, dtype, compile)
