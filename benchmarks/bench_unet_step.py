"""One denoising step's UNet call (the cost that dominates generation), per runtime, interleaved.

Short calls repeated round-robin with the best time kept are far less sensitive to other
processes on a shared 2-core machine than one long generation run. Batch = 2 x patches (CFG).

    .venv/bin/python benchmarks/bench_unet_step.py --model DIR --artifact DIR --batch 64 --rounds 7
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from histoaug.benchmarking import matmul_ceiling, unet_flops_per_sample


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", type=Path, required=True, help="diffusers pipeline dir")
    parser.add_argument("--artifact", type=Path, required=True, help="its fp32 ONNX artifact")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()

    from diffusers import UNet2DConditionModel

    from histoaug.synthesis.backends.onnxruntime_backend import open_session

    fp32 = UNet2DConditionModel.from_pretrained(args.model, subfolder="unet").eval()
    bf16 = UNet2DConditionModel.from_pretrained(args.model, subfolder="unet", torch_dtype=torch.bfloat16).eval()
    bf16 = bf16.to(memory_format=torch.channels_last)
    session = open_session(args.artifact / "onnx" / "unet.onnx", torch.device("cpu"))
    c, s = fp32.config.in_channels, fp32.config.sample_size
    x = torch.randn(args.batch, c, s, s)
    t = torch.full((args.batch,), 500.0)
    e = torch.randn(args.batch, 77, fp32.config.cross_attention_dim)
    xb = x.bfloat16().contiguous(memory_format=torch.channels_last)
    feeds = {"sample": x.numpy(), "timestep": t.numpy(), "encoder_hidden_states": e.numpy()}
    calls = {
        "torch fp32 (= diffusers' UNet call)": lambda: fp32(x, t, e),
        "torch bf16 channels-last": lambda: bf16(xb, t, e.bfloat16()),
        "onnxruntime fp32": lambda: session.run(None, feeds),
    }
    best = dict.fromkeys(calls, float("inf"))
    ceilings = {"fp32": 0.0, "bf16": 0.0}
    with torch.inference_mode():
        for call in calls.values():
            call()
        for _ in range(args.rounds):
            for name, call in calls.items():
                start = time.perf_counter()
                call()
                best[name] = min(best[name], time.perf_counter() - start)
            ceilings["fp32"] = max(ceilings["fp32"], matmul_ceiling(torch.float32, repeats=2))
            ceilings["bf16"] = max(ceilings["bf16"], matmul_ceiling(torch.bfloat16, repeats=2))
    flops = unet_flops_per_sample(args.model) * args.batch
    reference = best["torch fp32 (= diffusers' UNet call)"]
    rows = {name: {"seconds": sec, "speedup": reference / sec, "gflops": flops / sec / 1e9,
                   "fraction_bf16_ceiling": flops / sec / 1e9 / ceilings["bf16"],
                   "fraction_fp32_ceiling": flops / sec / 1e9 / ceilings["fp32"]} for name, sec in best.items()}
    print(json.dumps({"batch": args.batch, "rounds": args.rounds, "gflop_per_call": flops / 1e9,
                      "ceilings_gflops": ceilings, "threads": torch.get_num_threads(), "calls": rows},
                     indent=2, default=float))


if __name__ == "__main__":
    main()
