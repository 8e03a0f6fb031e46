"""Cost of candidate architectures for the embedded default model (torch fp32, CPU, random weights).

Times one UNet call at batch 64 (32 patches with classifier-free guidance) and one VAE decode at
batch 32, and derives patches/s at STEPS sampler steps. This is the measured side of the
cost/quality comparison in histoaug/default_model/MODEL_CARD.md::

    .venv/bin/python benchmarks/default_model_cost.py [--steps 20] [--threads 2]
"""

from __future__ import annotations

import argparse
import functools
import time

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel

CROSS_DOWN, CROSS_UP = ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"), ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D")
ATTN_LOW_DOWN, ATTN_LOW_UP = ("DownBlock2D", "CrossAttnDownBlock2D"), ("CrossAttnUpBlock2D", "UpBlock2D")

UNETS = {  # name: (latent channels, latent side, channels, down blocks, up blocks, heads, norm groups)
    "4x24x24, (32, 64), attention at 12": (4, 24, (32, 64), ATTN_LOW_DOWN, ATTN_LOW_UP, 2, 16),
    "4x12x12, (64, 128), attention at 12 and 6": (4, 12, (64, 128), CROSS_DOWN, CROSS_UP, 4, 32),
    "4x12x12, (64, 128), attention at 6": (4, 12, (64, 128), ATTN_LOW_DOWN, ATTN_LOW_UP, 4, 32),
    "4x12x12, (32, 64), attention at 12 and 6": (4, 12, (32, 64), CROSS_DOWN, CROSS_UP, 2, 16),
    "4x12x12, (32, 64), attention at 6 [histo96]": (4, 12, (32, 64), ATTN_LOW_DOWN, ATTN_LOW_UP, 2, 16),
    "16x12x12, (32, 64), attention at 6": (16, 12, (32, 64), ATTN_LOW_DOWN, ATTN_LOW_UP, 2, 16),
}
VAES = {  # name: (channels, norm groups, latent channels)
    "f8 (32, 64, 64, 64), 4 latent ch": ((32, 64, 64, 64), 32, 4),
    "f8 (16, 32, 64, 64), 4 latent ch [histo96]": ((16, 32, 64, 64), 8, 4),
    "f8 (16, 32, 64, 64), 16 latent ch": ((16, 32, 64, 64), 8, 16),
    "f8 (8, 16, 32, 64), 16 latent ch": ((8, 16, 32, 64), 8, 16),
    "f4 (16, 32, 64), 4 latent ch": ((16, 32, 64), 8, 4),
}


def best_ms(fn, repeats: int = 5) -> float:
    with torch.inference_mode():
        fn()
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
    return 1000 * min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {args.threads} threads; UNet batch 64 (32 patches x CFG), decode batch 32")
    for name, (latent, side, channels, down, up, heads, groups) in UNETS.items():
        unet = UNet2DConditionModel(sample_size=side, in_channels=latent, out_channels=latent, down_block_types=down,
                                    up_block_types=up, block_out_channels=channels, layers_per_block=1,
                                    norm_num_groups=groups, cross_attention_dim=64, attention_head_dim=heads).eval()
        x, t, text = torch.randn(64, latent, side, side), torch.full((64,), 500.0), torch.randn(64, 77, 64)
        ms = best_ms(functools.partial(unet, x, t, encoder_hidden_states=text))
        params = sum(p.numel() for p in unet.parameters()) / 1e6
        print(f"UNet {name:<50} {params:5.2f} M params  {ms:7.1f} ms/call  "
              f"{args.steps * ms / 32:6.1f} ms/patch at {args.steps} steps")
    for name, (channels, groups, latent) in VAES.items():
        n = len(channels)
        vae = AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * n,
                            up_block_types=("UpDecoderBlock2D",) * n, block_out_channels=channels,
                            layers_per_block=1, latent_channels=latent, norm_num_groups=groups,
                            sample_size=96).eval()
        side = 96 // 2 ** (n - 1)
        ms = best_ms(functools.partial(vae.decode, torch.randn(32, latent, side, side)), repeats=3)
        params = sum(p.numel() for p in vae.parameters()) / 1e6
        print(f"VAE  {name:<50} {params:5.2f} M params  {ms:7.1f} ms/decode {ms / 32:6.1f} ms/patch")


if __name__ == "__main__":
    main()
