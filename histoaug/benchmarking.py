"""Throughput measurements: histoaug backends vs diffusers' StableDiffusionPipeline, FLOPs, ceilings.

Used by ``histoaug bench`` and ``benchmarks/test_bench_synthesis.py``. A layer above synthesis,
export and models (it builds, exports and runs models), so none of them imports it. The baseline runs in the
same process on the same weights, scheduler, steps, guidance, batch and per-sample seeds, so
its outputs are comparable patch for patch (PSNR against the baseline is reported too).
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from histoaug.errors import InvalidArgumentError
from histoaug.image_metrics import psnr
from histoaug.synthesis.defaults import DEFAULT_GUIDANCE, DEFAULT_SCHEDULER, DEFAULT_STEPS
from histoaug.synthesis.model_source import open_model
from histoaug.synthesis.schedulers import make_scheduler

if TYPE_CHECKING:
    from histoaug.synthesis.synthesizer import Synthesizer

logger = logging.getLogger(__name__)


@dataclass
class BenchResult:
    name: str
    batch: int
    seconds: float
    patches_per_second: float
    max_abs_diff_vs_baseline: int | None = None
    psnr_vs_baseline_db: float | None = None
    unet_gflops_per_second: float | None = None

    def as_dict(self) -> dict:
        return asdict(self)


def matmul_ceiling(dtype: torch.dtype, size: int = 2048, repeats: int = 10, device: str = "cpu") -> float:
    """Measured GFLOP/s of a large square matmul through torch on ``device`` (best of ``repeats``)."""
    a = torch.randn(size, size).to(device=device, dtype=dtype)
    b = torch.randn(size, size).to(device=device, dtype=dtype)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(repeats):
        if a.is_cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        torch.mm(a, b)
        if a.is_cuda:
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best / 1e9


def unet_flops_per_sample(model_dir: Path) -> float:
    """FLOPs of one UNet evaluation of one latent (torch's FlopCounterMode: matmuls and convs)."""
    from diffusers import UNet2DConditionModel
    from torch.utils.flop_counter import FlopCounterMode

    model = open_model(model_dir)
    unet = UNet2DConditionModel.from_pretrained(model.root, subfolder="unet", use_safetensors=True).eval()
    shape = (1, model.latent_channels, model.latent_size, model.latent_size)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        unet(torch.zeros(shape), torch.tensor([500.0]), model.embeddings.cond[:1])
    return float(counter.get_total_flops())


def decoder_flops_per_sample(model_dir: Path) -> float:
    """FLOPs of one VAE decode of one latent (torch's FlopCounterMode: matmuls and convs)."""
    from diffusers import AutoencoderKL
    from torch.utils.flop_counter import FlopCounterMode

    model = open_model(model_dir)
    vae = AutoencoderKL.from_pretrained(model.root, subfolder="vae", use_safetensors=True).eval()
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        vae.decode(torch.zeros(1, model.latent_channels, model.latent_size, model.latent_size))
    return float(counter.get_total_flops())


def workload(model_dir: Path, batch: int, seed: int = 0) -> tuple[list[int], list[int], list[int]]:
    """Balanced labels, distinct seeds and the prompt ids histoaug would pick, for one batch."""
    from histoaug.synthesis.requests import build_request

    model = open_model(model_dir)
    labels = [i % 2 for i in range(batch)]
    seeds = [seed * 100_003 + i for i in range(batch)]
    request = build_request(model.prompts, labels, seeds)
    return labels, seeds, request.prompt_ids.tolist()


class DiffusersBaseline:
    """diffusers StableDiffusionPipeline (fp32, default settings) on the same weights and workload.

    Loaded once and warmed up like the histoaug runtimes, so neither side pays first-call costs
    (oneDNN primitive creation, allocator growth) inside the timing.
    """

    def __init__(self, model_dir: Path, scheduler: str, device: str = "cpu") -> None:
        from diffusers import StableDiffusionPipeline

        self.model_dir = model_dir
        self.model = open_model(model_dir)
        self.pipe = StableDiffusionPipeline.from_pretrained(model_dir, safety_checker=None,
                                                            requires_safety_checker=False).to(device)
        self.pipe.scheduler = make_scheduler(scheduler, self.pipe.scheduler.config)
        self.pipe.set_progress_bar_config(disable=True)

    def run(self, batch: int, steps: int, guidance: float, guidance_rescale: float = 0.0) -> tuple[np.ndarray, float]:
        """(uint8 patches, seconds) for the ``workload`` batch."""
        _, seeds, prompt_ids = workload(self.model_dir, batch)
        texts = [self.model.prompts[i].text for i in prompt_ids]
        size = self.model.image_size
        generators = [torch.Generator().manual_seed(s) for s in seeds]
        start = time.perf_counter()
        images = self.pipe(texts, height=size, width=size, num_inference_steps=steps, guidance_scale=guidance,
                           guidance_rescale=guidance_rescale, generator=generators, output_type="np").images
        seconds = time.perf_counter() - start
        if size != 96:
            from histoaug.synthesis.postprocess import to_uint8_patches

            return to_uint8_patches(torch.from_numpy(images).permute(0, 3, 1, 2) * 2 - 1), seconds
        return (images * 255).round().astype(np.uint8), seconds


def run_diffusers(model_dir: Path, batch: int, steps: int, guidance: float, scheduler: str,
                  repeats: int = 1, guidance_rescale: float = 0.0) -> tuple[np.ndarray, float]:
    """The baseline on one batch: (patches, best seconds of ``repeats`` after a warm-up call)."""
    baseline = DiffusersBaseline(model_dir, scheduler)
    baseline.run(batch, 2, guidance, guidance_rescale)
    runs = [baseline.run(batch, steps, guidance, guidance_rescale) for _ in range(repeats)]
    return runs[-1][0], min(seconds for _, seconds in runs)


def run_histoaug(synthesizer, model_dir: Path, batch: int, steps: int, guidance: float, scheduler: str,
                 repeats: int = 1, **options) -> tuple[np.ndarray, float]:
    """(patches, best seconds of ``repeats``) for the ``workload`` batch; ``options`` go to generate()."""
    labels, seeds, prompt_ids = workload(model_dir, batch)
    best, images = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        images = synthesizer.generate(labels, seeds, prompt_ids, steps=steps, guidance=guidance,
                                      scheduler=scheduler, batch_size=batch, **options)
        best = min(best, time.perf_counter() - start)
    return images, best


BASELINE = "diffusers StableDiffusionPipeline fp32"


AUTO = "auto"
# ``auto`` is benchmarked as a long generation job gets it (``histoaug generate --n 100000``): the
# compile decision depends on the job's size (histoaug.synthesis.backends.selection.compile_pays)
AUTO_JOB_PATCHES = 100_000


@dataclass(frozen=True)
class BackendSpec:
    """One benchmarked runtime: backend name, dtype, and (torch) whether the UNet is compiled.

    ``auto`` is what a user gets with no speed flags for a long job (``histoaug generate --n 100000``,
    ``load_synthesizer(source, expected_patches=100000)``): resolved at load, and reported with the
    runtime it resolved to.
    """

    name: str
    dtype: str = "fp32"
    compile: bool = False

    @classmethod
    def parse(cls, text: str, device: str = "cpu") -> BackendSpec:
        """``auto`` or ``NAME[:DTYPE[:compile]]``, e.g. ``onnxruntime``, ``torch:bf16``, ``torch:bf16:compile``.

        Checked here, before any model is built or exported: known backend and dtype, compile
        only for torch and only where Inductor can build for ``device``.
        """
        from histoaug.dtypes import DTYPES
        from histoaug.synthesis.backends.registry import BACKEND_NAMES
        from histoaug.synthesis.backends.torch_backend import compile_unavailable_reason

        if text.strip() == AUTO:
            return cls(AUTO, "", False)
        parts = text.strip().split(":")
        if not parts[0] or len(parts) > 3 or (len(parts) == 3 and parts[2] != "compile"):
            raise InvalidArgumentError(f"backend spec must be NAME[:DTYPE[:compile]], got {text!r}")
        spec = cls(parts[0], parts[1] if len(parts) > 1 and parts[1] else "fp32", len(parts) == 3)
        if spec.name not in BACKEND_NAMES:
            raise InvalidArgumentError(f"unknown backend {spec.name!r} in {text!r}; choose auto or one of "
                                       f"{', '.join(BACKEND_NAMES)}")
        if spec.dtype not in DTYPES:
            raise InvalidArgumentError(f"unknown dtype {spec.dtype!r} in {text!r}; choose one of {', '.join(DTYPES)}")
        if spec.compile and spec.name != "torch":
            raise InvalidArgumentError(f"compile applies to the torch backend, not {spec.name!r} ({text!r})")
        if spec.compile and (reason := compile_unavailable_reason(torch.device(device))) is not None:
            raise InvalidArgumentError(f"{text!r}: torch backend cannot compile here: {reason}")
        return spec

    @property
    def label(self) -> str:
        """The runtime's name in reports, e.g. ``histoaug torch bf16 compiled``."""
        if self.name == AUTO:
            return "histoaug auto"
        return f"histoaug {self.name} {self.dtype}" + (" compiled" if self.compile else "")

    def load(self, model: Path, artifact: Path | None, device: str = "cpu") -> Synthesizer:
        """This runtime on ``device``: torch runs the pipeline dir, the ONNX backends (and auto, which
        may pick them) the artifact when there is one."""
        from histoaug.synthesis.synthesizer import load_synthesizer

        if self.name == AUTO:
            return load_synthesizer(artifact or model, device=device, expected_patches=AUTO_JOB_PATCHES)
        return load_synthesizer(model if self.name == "torch" else artifact, backend=self.name, device=device,
                                dtype=self.dtype, compile=self.compile)


def resolved_label(synthesizer: Synthesizer) -> str:
    """What a runtime resolved to, e.g. ``torch bf16 compiled``."""
    return f"{synthesizer.backend} {synthesizer.dtype}" + (" compiled" if synthesizer.compiled else "")


@dataclass(frozen=True)
class BenchConfig:
    """One benchmark run: which model, which backends/dtypes, which workload."""

    model: str | Path | None = None  # "default", a pipeline dir (or artifact that is one); None -> build ``preset``
    preset: str = "small"
    workdir: Path | None = None
    backends: tuple[BackendSpec, ...] = (BackendSpec("torch", "fp32"), BackendSpec("torch", "bf16"),
                                         BackendSpec("onnxruntime", "fp32"))
    batches: tuple[int, ...] = (32,)
    steps: int = DEFAULT_STEPS
    guidance: float = DEFAULT_GUIDANCE
    scheduler: str = DEFAULT_SCHEDULER
    guidance_rescale: float = 0.0  # both sides: histoaug's sampler and diffusers' guidance_rescale
    baseline: bool = True
    repeats: int = 1
    device: str = "cpu"


def prepare_models(config: BenchConfig) -> tuple[Path, Path | None]:
    """The pipeline dir (built from the preset when none is given) and, if an ONNX backend is
    benchmarked, its fp32 artifact (exported once into the work dir)."""
    from histoaug.export.artifact import ExportSettings, export_model
    from histoaug.models import build_pipeline, save_pipeline
    from histoaug.prompts import PromptBank

    workdir = Path(config.workdir or Path.cwd() / ".histoaug-bench")
    workdir.mkdir(parents=True, exist_ok=True)
    from histoaug.synthesis.artifact_format import is_artifact, is_pipeline_dir
    from histoaug.synthesis.model_source import resolve_source

    model = None if config.model is None else resolve_source(config.model)
    if model is not None and is_artifact(model):  # already an artifact: benchmark it as is
        if not is_pipeline_dir(model):
            raise InvalidArgumentError(f"{model} is an artifact without its text encoder, so diffusers cannot load "
                                       "it for the baseline; pass the pipeline dir it was exported from")
        return model, model
    if model is None:
        model = workdir / f"{config.preset}-model"
        if not is_pipeline_dir(model):
            save_pipeline(build_pipeline(config.preset, seed=0), model, overwrite=True)
            PromptBank.baseline().save(model, overwrite=True)
    artifact = None
    if any(spec.name != "torch" for spec in config.backends):
        artifact = workdir / f"{model.name}-onnx-fp32"
        if not is_artifact(artifact):
            export_model(model, artifact, ExportSettings(format="onnx", dtype="fp32", batch=2, overwrite=True))
    return model, artifact


def run_benchmark(config: BenchConfig) -> dict:
    """Measure every (backend, dtype) at every batch, plus the diffusers baseline and the ceilings.

    Runs are interleaved (baseline, then each backend, ``repeats`` rounds) and the best time of
    each is kept, so load from other processes on a shared machine biases none of them alone.
    """
    model, artifact = prepare_models(config)
    flops = unet_flops_per_sample(model)
    decoder_flops = decoder_flops_per_sample(model)
    cfg = 2 if config.guidance > 1 else 1
    ceilings = {"fp32": matmul_ceiling(torch.float32, device=config.device),
                "bf16": matmul_ceiling(torch.bfloat16, device=config.device)}
    report: dict = {"model": str(model), "unet_gflop_per_sample_eval": flops / 1e9,
                    "decoder_gflop_per_sample": decoder_flops / 1e9, "steps": config.steps,
                    "guidance": config.guidance, "guidance_rescale": config.guidance_rescale,
                    "scheduler": config.scheduler, "threads": torch.get_num_threads(),
                    "repeats": config.repeats, "device": config.device, "matmul_ceiling_gflops": ceilings,
                    "results": []}

    def gflops(batch: int, seconds: float) -> float:
        return flops * batch * cfg * config.steps / seconds / 1e9

    synths = {spec.label: spec.load(model, artifact, config.device) for spec in config.backends}
    report["resolved"] = {label: {"runtime": resolved_label(synth), "reason": synth.choice.reason,
                                  "runtime_id": synth.runtime} for label, synth in synths.items()}
    baseline = DiffusersBaseline(model, config.scheduler, config.device) if config.baseline else None
    for batch in config.batches:
        # warm-up at this batch shape, untimed: compile / engine build (prepare), then first-call costs
        if baseline is not None:
            baseline.run(batch, 2, config.guidance, config.guidance_rescale)
        for synth in synths.values():
            synth.prepare([batch], config.guidance)
            run_histoaug(synth, model, batch, 2, config.guidance, config.scheduler,
                         guidance_rescale=config.guidance_rescale)
        best: dict[str, float] = {}
        images: dict[str, np.ndarray] = {}
        for _ in range(config.repeats):
            if baseline is not None:
                out, seconds = baseline.run(batch, config.steps, config.guidance, config.guidance_rescale)
                best[BASELINE] = min(best.get(BASELINE, float("inf")), seconds)
                images[BASELINE] = out
            for label, synth in synths.items():
                out, seconds = run_histoaug(synth, model, batch, config.steps, config.guidance, config.scheduler,
                                            guidance_rescale=config.guidance_rescale)
                best[label] = min(best.get(label, float("inf")), seconds)
                images[label] = out
        for label, seconds in best.items():
            result = BenchResult(label, batch, seconds, batch / seconds, unet_gflops_per_second=gflops(batch, seconds))
            if BASELINE in images:
                result.max_abs_diff_vs_baseline = int(np.abs(images[label].astype(int) - images[BASELINE]).max())
                result.psnr_vs_baseline_db = psnr(images[label], images[BASELINE])
            row = result.as_dict()
            row["speedup_vs_diffusers"] = best[BASELINE] / seconds if BASELINE in best else None
            row["fraction_of_bf16_ceiling"] = row["unet_gflops_per_second"] / ceilings["bf16"]
            # the whole pipeline's work (UNet steps + decode) per second, against the bf16 ceiling
            per_patch = flops * cfg * config.steps + decoder_flops
            row["pipeline_gflops_per_second"] = per_patch * batch / seconds / 1e9
            row["pipeline_fraction_of_bf16_ceiling"] = row["pipeline_gflops_per_second"] / ceilings["bf16"]
            row["fraction_of_fp32_ceiling"] = row["unet_gflops_per_second"] / ceilings["fp32"]
            report["results"].append(row)
            logger.info("%s batch %d: %.2f patches/s", label, batch, result.patches_per_second)
    report["best_batch"] = best_batch_summary(report["results"])
    return report


def best_batch_summary(rows: list[dict]) -> list[dict]:
    """Each runtime at its own best batch, and its speed-up over the baseline at the baseline's best
    batch (besides the same-batch speed-ups in the rows)."""
    best: dict[str, dict] = {}
    for row in rows:
        if row["name"] not in best or row["patches_per_second"] > best[row["name"]]["patches_per_second"]:
            best[row["name"]] = row
    reference = best.get(BASELINE)
    return [{"name": name, "best_batch": row["batch"], "patches_per_second": row["patches_per_second"],
             "speedup_vs_diffusers_best": (row["patches_per_second"] / reference["patches_per_second"]
                                           if reference else None)} for name, row in best.items()]


def format_report(report: dict) -> str:
    lines = [
        f"model {report['model']}: UNet {report['unet_gflop_per_sample_eval']:.3f} GFLOP per sample and step; "
        f"{report['steps']} {report['scheduler']} steps, guidance {report['guidance']}"
        + (f" (rescale {report['guidance_rescale']})" if report.get("guidance_rescale") else "") + ", "
        f"{report['threads']} threads; VAE decode {report.get('decoder_gflop_per_sample', 0):.3f} GFLOP per patch",
        "matmul ceilings: fp32 {fp32:.0f} GFLOP/s, bf16 {bf16:.0f} GFLOP/s".format(**report["matmul_ceiling_gflops"]),
        f"{'runtime':<42} {'batch':>5} {'patches/s':>10} {'speedup':>8} {'PSNR dB':>8} {'maxdiff':>7} "
        f"{'UNet GF/s':>9} {'%bf16':>6} {'%fp32':>6} {'all %bf16':>9}",
    ]
    for row in report["results"]:
        speed = f"{row['speedup_vs_diffusers']:.2f}x" if row["speedup_vs_diffusers"] else "-"
        psnr_text = "-" if row["psnr_vs_baseline_db"] is None else f"{row['psnr_vs_baseline_db']:.1f}"
        diff = "-" if row["max_abs_diff_vs_baseline"] is None else str(row["max_abs_diff_vs_baseline"])
        lines.append(f"{row['name']:<42} {row['batch']:>5} {row['patches_per_second']:>10.2f} {speed:>8} "
                     f"{psnr_text:>8} {diff:>7} {row['unet_gflops_per_second']:>9.1f} "
                     f"{100 * row['fraction_of_bf16_ceiling']:>5.0f}% {100 * row['fraction_of_fp32_ceiling']:>5.0f}% "
                     f"{100 * row.get('pipeline_fraction_of_bf16_ceiling', 0):>8.0f}%")
    for label, resolved in report.get("resolved", {}).items():
        if label.endswith("auto"):
            lines.append(f"{label} resolved to {resolved['runtime']} ({resolved['reason']})")
    for row in report.get("best_batch", []):
        speed = "-" if row["speedup_vs_diffusers_best"] is None else f"{row['speedup_vs_diffusers_best']:.2f}x"
        lines.append(f"best batch: {row['name']:<42} batch {row['best_batch']:>4} {row['patches_per_second']:>9.2f} "
                     f"patches/s, {speed} diffusers at its best batch")
    return "\n".join(lines)


def batch_layout_tolerance(synthesizer, model_dir: Path, n: int = 8, steps: int = 20, guidance: float = 2.0,
                           scheduler: str = "dpmsolver++", other_batches: tuple[int, ...] = (1, 3)) -> dict:
    """Same samples in one batch of ``n`` vs other batch sizes (and reversed order): max |diff| and PSNR."""
    labels, seeds, prompt_ids = workload(model_dir, n)
    kwargs = {"steps": steps, "guidance": guidance, "scheduler": scheduler}
    base = synthesizer.generate(labels, seeds, prompt_ids, batch_size=n, **kwargs)
    reverse = synthesizer.generate(labels[::-1], seeds[::-1], prompt_ids[::-1], batch_size=n, **kwargs)[::-1]
    report = {"backend": synthesizer.backend, "dtype": synthesizer.dtype, "compiled": synthesizer.compiled, "n": n,
              "reordered_bit_identical": bool(np.array_equal(base, reverse)), "other_batch_sizes": {}}
    for batch in other_batches:
        other = synthesizer.generate(labels, seeds, prompt_ids, batch_size=batch, **kwargs)
        report["other_batch_sizes"][batch] = {"max_abs_diff": int(np.abs(other.astype(int) - base).max()),
                                              "psnr_db": psnr(other, base)}
    return report
