"""The CPU speed levers tried for issue 3 beyond the shipped ones, each against its own reference.

Embedded model, UNet at batch 2 x ``--batch`` (CFG), decode at ``--batch``; interleaved rounds,
best time kept. Prints one JSON object (recorded in benchmarks/RESULTS.md):
- ``compile_variants``: the bf16 UNet through torch.compile with Inductor options
  (freezing, pattern matcher off, cpp_wrapper), vs eager bf16;
- ``compiled_decoder``: the bf16 decoder compiled vs eager;
- ``streams``: one 2-thread UNet call on the CFG batch vs two 1-thread calls on half batches
  in two Python threads (torch releases the GIL in its kernels);
- ``int8_onnxruntime``: onnxruntime's dynamic int8 quantisation of the exported UNet (Conv, MatMul)
  vs the fp32 graph.

    .venv/bin/python benchmarks/cpu_levers.py --batch 32 --rounds 5 > benchmarks/results/cpu_levers_b32.json
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from histoaug.synthesis.artifact_format import UNET_FILE
from histoaug.synthesis.backends.onnxruntime_backend import open_session
from histoaug.synthesis.backends.torch_backend import TorchBackend
from histoaug.synthesis.model_source import open_model


def best_times(calls: dict[str, Callable[[], object]], rounds: int) -> dict[str, float]:
    """Best seconds per call, after one warm-up call each, interleaved round-robin."""
    for call in calls.values():
        call()
    best = dict.fromkeys(calls, float("inf"))
    for _ in range(rounds):
        for name, call in calls.items():
            start = time.perf_counter()
            call()
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    model = open_model("default")
    cpu = torch.device("cpu")
    n = 2 * args.batch
    generator = torch.Generator().manual_seed(0)
    latents = torch.randn(n, model.latent_channels, model.latent_size, model.latent_size, generator=generator)
    timesteps = torch.full((n,), 500.0)
    embeddings = model.embeddings.cond[torch.arange(n) % len(model.embeddings.cond)]
    report: dict = {"batch": args.batch, "rounds": args.rounds, "threads": torch.get_num_threads()}

    eager = TorchBackend(model.root, cpu, "bf16")
    variants = {"eager bf16": eager}
    for name, options in {"freezing": {"freezing": True}, "no freezing": {},
                          "freezing, pattern matcher off": {"freezing": True, "pattern_matcher": False},
                          "freezing, cpp_wrapper": {"freezing": True, "cpp_wrapper": True}}.items():
        backend = TorchBackend(model.root, cpu, "bf16")
        backend.unet = torch.compile(backend.unet, dynamic=False, options=options)
        variants[f"compiled, {name}"] = backend
    unet_calls = {name: (lambda b=b: b.unet(b._prepare(latents), timesteps, embeddings.bfloat16(), return_dict=False))
                  for name, b in variants.items()}
    with torch.inference_mode():
        report["compile_variants_unet_seconds"] = best_times(unet_calls, args.rounds)

        decoder = TorchBackend(model.root, cpu, "bf16")
        decoder.vae.decoder = torch.compile(decoder.vae.decoder, dynamic=False)
        report["compiled_decoder_seconds"] = best_times(
            {"eager bf16": lambda: eager.decode(latents[: args.batch]),
             "compiled bf16": lambda: decoder.decode(latents[: args.batch])}, args.rounds)

        fp32 = TorchBackend(model.root, cpu, "fp32")
        half = args.batch

        def two_streams() -> None:
            def run(part: slice) -> None:
                torch.set_num_threads(1)
                fp32.predict_noise(latents[part], timesteps[part], embeddings[part])
            workers = [threading.Thread(target=run, args=(part,)) for part in (slice(0, half), slice(half, n))]
            for worker in workers:
                worker.start()
            for worker in workers:
                worker.join()

        threads = torch.get_num_threads()
        report["streams_unet_seconds"] = best_times(
            {"one call, 2 threads": lambda: (torch.set_num_threads(threads),
                                             fp32.predict_noise(latents, timesteps, embeddings)),
             "two half-batch calls, 1 thread each": two_streams}, args.rounds)
        torch.set_num_threads(threads)

    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory() as tmp:
        quantized = Path(tmp) / "unet_int8.onnx"
        quantize_dynamic(model.onnx_dir / UNET_FILE, quantized, weight_type=QuantType.QInt8,
                         op_types_to_quantize=["Conv", "MatMul"])
        feeds = {"sample": latents.numpy(), "timestep": timesteps.numpy(),
                 "encoder_hidden_states": embeddings.numpy().astype(np.float32)}
        sessions = {"fp32": open_session(model.onnx_dir / UNET_FILE, cpu),
                    "dynamic int8": open_session(quantized, cpu)}
        report["int8_onnxruntime_unet_seconds"] = best_times(
            {name: (lambda s=s: s.run(None, feeds)) for name, s in sessions.items()}, args.rounds)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
