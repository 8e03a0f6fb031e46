"""The measurements behind ``histoaug audit``'s near-copy floor (docs/audit.md, "Why these thresholds").

Brute force over the bundled sample's 1,200 training patches (no search, so no candidate can be
missed): for held-out patches (valid: same slides, no shared pixel; test: other slides) and for 60
planted copies of training patches (each flipped/rotated one of the 8 ways, then JPEG-compressed
or noised), the best-of-8 correlation with any training patch, two ways: raw RGB pixels, and the
band-pass grey detail the audit uses (histoaug.evaluation.pixel_similarity.detail).

``--vae-round-trip ROOT`` adds the sensitivity check for the embedded model: its training patches
(ROOT:train) encoded and decoded by its own VAE, i.e. what a generator that memorised them
perfectly could at best output through that decoder, against the originals. Run:

    OMP_NUM_THREADS=1 .venv/bin/python scripts/audit_calibration.py [--vae-round-trip ROOT]   # ~1-2 min
"""

from __future__ import annotations

import argparse
import io

import numpy as np
import torch
from PIL import Image

from histoaug import PCam, sample_root
from histoaug.evaluation.pixel_similarity import centred_unit, detail, dihedral


def _load(split: str) -> np.ndarray:
    data = PCam(sample_root(), split)
    return data.read_images(np.arange(len(data)))


def _jpeg(image: np.ndarray, quality: int) -> np.ndarray:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=quality)
    return np.array(Image.open(buffer))


def _best(queries: np.ndarray, train: np.ndarray, kind: str) -> np.ndarray:
    def prepare(images: np.ndarray) -> torch.Tensor:
        return detail(images) if kind == "detail" else torch.from_numpy(np.ascontiguousarray(images)).float()

    base = centred_unit(prepare(train).reshape(len(train), -1), 0.5)
    q = prepare(queries)
    best = torch.full((len(queries),), -1.0)
    for t in range(8):
        turned = centred_unit(dihedral(q, t).reshape(len(q), -1), 0.5)
        best = torch.maximum(best, (turned @ base.T).max(dim=1).values)
    return best.numpy()


def vae_round_trip(root: str) -> np.ndarray:
    """Best aligned detail correlation of each training patch of ``root`` with its default-VAE reconstruction."""
    from diffusers import AutoencoderKL

    from histoaug.evaluation.pixel_similarity import aligned_correlation
    from histoaug.synthesis.model_source import default_model_dir

    vae = AutoencoderKL.from_pretrained(default_model_dir() / "vae").eval()
    data = PCam(root, "train")
    x = data.read_images(np.arange(len(data)))
    with torch.no_grad():
        pixels = torch.from_numpy(x).permute(0, 3, 1, 2).float() / 127.5 - 1
        decoded = vae.decode(vae.encode(pixels).latent_dist.mean).sample.clamp(-1, 1)
    rec = ((decoded + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()
    return aligned_correlation(rec, x[:, None])[0][:, 0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vae-round-trip", metavar="ROOT", help="the embedded model's training data (PCam root)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    train, valid, test = _load("train"), _load("valid"), _load("test")
    rng = np.random.default_rng(0)
    kinds: dict[str, list[np.ndarray]] = {"copy + JPEG 75": [], "copy + JPEG 50": [], "copy + noise 8": [],
                                          "copy + noise 15": []}
    for j, i in enumerate(rng.choice(len(train), 60, replace=False)):
        image = np.ascontiguousarray(dihedral(train[i], j % 8))
        kinds["copy + JPEG 75"].append(_jpeg(image, 75))
        kinds["copy + JPEG 50"].append(_jpeg(image, 50))
        kinds["copy + noise 8"].append(np.clip(image + rng.normal(0, 8, image.shape), 0, 255).astype(np.uint8))
        kinds["copy + noise 15"].append(np.clip(image + rng.normal(0, 15, image.shape), 0, 255).astype(np.uint8))
    sets = {"valid (same slides)": valid, "test (other slides)": test, **{k: np.stack(v) for k, v in kinds.items()}}
    print("| patches | n | raw RGB: median / max (min for copies) | band-pass detail: median / max (min for copies) |")
    print("| --- | ---: | ---: | ---: |")
    for name, images in sets.items():
        cells = []
        for kind in ("raw", "detail"):
            best = _best(images, train, kind)
            extreme = best.min() if name.startswith("copy") else best.max()
            cells.append(f"{np.median(best):.3f} / {extreme:.3f}")
        print(f"| {name} | {len(images)} | {cells[0]} | {cells[1]} |", flush=True)
    if args.vae_round_trip:
        r = vae_round_trip(args.vae_round_trip)
        print(f"\ndefault model's VAE round trip of {len(r)} training patches of {args.vae_round_trip}: detail r "
              f"min {r.min():.3f}, median {np.median(r):.3f}, max {r.max():.3f}")


if __name__ == "__main__":
    main()
