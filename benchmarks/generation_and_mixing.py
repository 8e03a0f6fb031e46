"""Benchmarks for ``histoaug generate`` (issue 7) and the synthesis pool (issue 6).

1. generate: end-to-end ``write_pcam`` (assignments + model + HDF5 writes + progress) against
   the bare ``Synthesizer.generate`` on the same blocks, same settings, same process.
2. mixing: DataLoader items/s over ``SyntheticPCam`` at ratio 0 (real only) and at ratio 0.5
   with a warm pool (median of interleaved epochs); the cold-start stall (construction to first
   batch with an empty store); the producer's patches/s.

Models: presets of ``histoaug.models`` with untrained weights (which does not change the cost):
"small" (96x96, latent 4x24x24, 5.9 M UNet parameters) for generate, "tiny" by default for the
pool so that filling an epoch takes minutes, not hours, on a 2-core CPU. Run:

    python benchmarks/generation_and_mixing.py --json benchmarks/results/generation_and_mixing.json
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from data_loading import build_files
from torch.utils.data import DataLoader

from histoaug import SyntheticPCam, load_synthesizer
from histoaug.generation.pcam_output import generate_block, write_pcam
from histoaug.generation.settings import GenerationSettings
from histoaug.mixing.pool import PoolConfig
from histoaug.models import build_pipeline, save_pipeline
from histoaug.prompts import Prompt, PromptBank
from histoaug.seeding import SampleAssigner


def morphology_bank(types: int = 33) -> PromptBank:
    template = "a histopathology image of {c} lymph node tissue, morphology type {m}"
    prompts = [Prompt(label * types + m, label, m, template.format(c=("healthy", "cancerous")[label], m=m))
               for label in (0, 1) for m in range(types)]
    return PromptBank(prompts, kind="morphology", template=template)


def preset_model(folder: Path, preset: str) -> Path:
    root = folder / preset
    if not root.exists():
        save_pipeline(build_pipeline(preset, seed=0), root)
        morphology_bank().save(root)
    return root


def bench_generate(model: Path, folder: Path, *, n: int, batch: int, steps: int, guidance: float) -> dict:
    synthesizer = load_synthesizer(str(model), backend="torch")
    settings = GenerationSettings(n=n, batch_size=batch, steps=steps, guidance=guidance)
    assigner = SampleAssigner(synthesizer.prompts, run_seed=0)
    generate_block(synthesizer, settings, assigner.assign(np.arange(batch)))  # warm-up
    started = time.perf_counter()
    for start, stop in settings.blocks():
        generate_block(synthesizer, settings, assigner.assign(np.arange(start, stop)))
    bare = n / (time.perf_counter() - started)
    started = time.perf_counter()
    write_pcam(synthesizer, settings, folder / "generated.h5", model_id=synthesizer.model_id, progress=False)
    end_to_end = n / (time.perf_counter() - started)
    return {"n": n, "batch": batch, "steps": steps, "guidance": guidance, "backend": synthesizer.backend,
            "dtype": synthesizer.dtype, "bare_patches_per_s": bare, "generate_patches_per_s": end_to_end,
            "ratio": end_to_end / bare}


def loader_rate(dataset: SyntheticPCam, workers: int) -> tuple[float, float]:
    """(items/s over one epoch, seconds to the first batch)."""
    started = time.perf_counter()
    first = None
    items = 0
    for images, _ in DataLoader(dataset, batch_size=256, sampler=dataset.sampler(), num_workers=workers):
        first = first if first is not None else time.perf_counter() - started
        items += len(images)
    return items / (time.perf_counter() - started), first or 0.0


def bench_mixing(model: Path, folder: Path, *, items: int, steps: int, workers: int, repeats: int = 5) -> dict:
    real = build_files(folder / "real", items, compressed=False)
    options = {"steps": steps, "guidance": 2.0}
    config = PoolConfig(directory=folder / "pool", batch_size=64)
    started = time.perf_counter()
    with SyntheticPCam(real, ratio=0.5, synthesizer=str(model), generate_options=options, backend="torch",
                       pool=config) as cold:
        startup = time.perf_counter() - started
        loader = iter(DataLoader(cold, batch_size=256, sampler=cold.sampler(), num_workers=workers))
        next(loader)
        cold_first_batch = time.perf_counter() - started
        del loader
        cold.warm_up()
        cold_stats = cold.pool_stats()
    baseline = SyntheticPCam(real, ratio=0.0)
    warm = SyntheticPCam(real, ratio=0.5, synthesizer=str(model), generate_options=options, backend="torch",
                         pool=PoolConfig(directory=folder / "pool", batch_size=64, lookahead_epochs=0))
    with warm:
        real_rates, warm_rates = [], []
        for _ in range(repeats):  # interleaved, so load changes hit both alike
            real_rates.append(loader_rate(baseline, workers)[0])
            warm_rates.append(loader_rate(warm, workers)[0])
        warm_stats = warm.pool_stats()
    real_rate, warm_rate = float(np.median(real_rates)), float(np.median(warm_rates))
    return {
        "items": items, "workers": workers, "steps": steps, "repeats": repeats,
        "ratio0_items_per_s": real_rate, "ratio05_warm_items_per_s": warm_rate,
        "ratio0_all": real_rates, "ratio05_warm_all": warm_rates,
        "warm_over_ratio0": warm_rate / real_rate,
        "pool_start_s": startup, "cold_first_batch_s": cold_first_batch,
        "producer_patches_per_s": cold_stats.producer_patches_per_s,
        "warm_hits": warm_stats.hits, "warm_waits": warm_stats.waits,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=256, help="patches for the generate benchmark")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--guidance", type=float, default=2.0)
    parser.add_argument("--items", type=int, default=2048, help="real items for the mixing benchmark")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--preset", default="small", help="model preset for the generate benchmark")
    parser.add_argument("--mixing-preset", default="tiny", help="model preset for the pool benchmark")
    parser.add_argument("--only", choices=("generate", "mixing"), help="run one of the two benchmarks")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        generate = mixing = None
        if args.only != "mixing":
            generate = bench_generate(preset_model(folder, args.preset), folder, n=args.n, batch=args.batch,
                                      steps=args.steps, guidance=args.guidance)
            print(f"generate: bare Synthesizer.generate {generate['bare_patches_per_s']:.1f} patches/s, "
                  f"histoaug generate end to end {generate['generate_patches_per_s']:.1f} patches/s "
                  f"({generate['ratio']:.1%})")
        if args.only != "generate":
            mixing = bench_mixing(preset_model(folder, args.mixing_preset), folder, items=args.items,
                                  steps=args.steps, workers=args.workers)
            print(f"mixing: ratio 0 {mixing['ratio0_items_per_s']:.0f} items/s, ratio 0.5 warm pool "
                  f"{mixing['ratio05_warm_items_per_s']:.0f} items/s ({mixing['warm_over_ratio0']:.0%}); "
                  f"producer {mixing['producer_patches_per_s']:.1f} patches/s; cold start: pool ready in "
                  f"{mixing['pool_start_s']:.1f} s, first batch after {mixing['cold_first_batch_s']:.1f} s")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"torch": torch.__version__, "threads": torch.get_num_threads(),
                                         "settings": {k: str(v) for k, v in vars(args).items()},
                                         "generate": generate, "mixing": mixing}, indent=2) + "\n")


if __name__ == "__main__":
    main()
