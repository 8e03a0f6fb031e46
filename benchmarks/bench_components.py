"""Where a batch's time goes: one UNet call (CFG batch) and one VAE decode, per runtime, interleaved.

Uses the histoaug backends themselves (``torch:fp32`` runs diffusers' own UNet/VAE modules, with
histoaug's CPU attention processor, equal to diffusers' within 1e-5),
round-robin with the best time kept, so load from other processes biases none of them alone.
Prints, per runtime, the seconds per call, GFLOP/s and fraction of the measured bf16 matmul
ceiling, the batch time they imply at ``--steps``, and the patches/s the ceiling itself allows.

    .venv/bin/python benchmarks/bench_components.py --batch 32 --steps 20 --rounds 7 \\
        --backends torch:fp32,torch:bf16,torch:bf16:compile,onnxruntime:fp32
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from histoaug.benchmarking import (
    BackendSpec,
    decoder_flops_per_sample,
    matmul_ceiling,
    unet_flops_per_sample,
)
from histoaug.synthesis.backends.selection import create_backend
from histoaug.synthesis.model_source import open_model, resolve_source


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="default", help="'default' or an artifact dir that is also a pipeline dir")
    parser.add_argument("--backends", default="torch:fp32,torch:bf16,torch:bf16:compile,onnxruntime:fp32")
    parser.add_argument("--batch", type=int, default=32, help="patches per batch (the UNet sees 2x with CFG)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()

    model = open_model(resolve_source(args.model))
    device = torch.device("cpu")
    specs = [BackendSpec.parse(text) for text in args.backends.split(",")]
    backends = {spec.label: create_backend(spec.name, model, device, spec.dtype if spec.name == "torch" else None,
                                           compile=spec.compile) for spec in specs}
    shape = (model.latent_channels, model.latent_size, model.latent_size)
    latents = torch.randn(2 * args.batch, *shape, generator=torch.Generator().manual_seed(0))
    timesteps = torch.full((2 * args.batch,), 500.0)
    embeddings = model.embeddings.cond[torch.arange(2 * args.batch) % len(model.embeddings.cond)]
    calls = {}
    for label, backend in backends.items():
        calls[(label, "unet")] = lambda b=backend: b.predict_noise(latents, timesteps, embeddings)
        calls[(label, "decode")] = lambda b=backend: b.decode(latents[: args.batch])
    for call in calls.values():  # warm-up (and compile)
        call()
    best = dict.fromkeys(calls, float("inf"))
    ceiling = 0.0
    for _ in range(args.rounds):
        for key, call in calls.items():
            start = time.perf_counter()
            call()
            best[key] = min(best[key], time.perf_counter() - start)
        ceiling = max(ceiling, matmul_ceiling(torch.bfloat16, repeats=2))

    unet_flops = unet_flops_per_sample(model.root) * 2 * args.batch
    decode_flops = decoder_flops_per_sample(model.root) * args.batch
    batch_flops = unet_flops * args.steps + decode_flops
    rows = {}
    for label in backends:
        unet, decode = best[(label, "unet")], best[(label, "decode")]
        batch_seconds = unet * args.steps + decode
        rows[label] = {
            "unet_seconds": unet, "unet_gflops": unet_flops / unet / 1e9,
            "unet_fraction_bf16_ceiling": unet_flops / unet / 1e9 / ceiling,
            "decode_seconds": decode, "decode_gflops": decode_flops / decode / 1e9,
            "decode_fraction_bf16_ceiling": decode_flops / decode / 1e9 / ceiling,
            "implied_patches_per_second": args.batch / batch_seconds,
            "decode_share_of_batch": decode / batch_seconds,
        }
    print(json.dumps({
        "model": str(model.root), "batch": args.batch, "steps": args.steps, "rounds": args.rounds,
        "threads": torch.get_num_threads(), "bf16_ceiling_gflops": ceiling,
        "unet_gflop_per_call": unet_flops / 1e9, "decode_gflop_per_call": decode_flops / 1e9,
        "gflop_per_patch": batch_flops / args.batch / 1e9,
        "patches_per_second_at_bf16_ceiling": ceiling * 1e9 / (batch_flops / args.batch),
        "runtimes": rows,
    }, indent=2))


if __name__ == "__main__":
    main()
