"""Synthetic patches next to real patches of the same prompt (label x morphology type), for model cards.

One row per prompt that has training patches: 4 real training patches of that prompt (seeded
choice, from the prompts dir's ``prompt_ids.h5``), then 4 synthetic patches generated with that
prompt (seeds 4 x prompt id + 0..3, default sampler settings). Written as a JPEG (quality 85) to stay small:

    python scripts/preview_vs_real.py MODEL_DIR PROMPTS_DIR OUT.jpg [--data sample]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import h5py
import numpy as np
from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from histoaug import PCam, load_synthesizer
from histoaug.training.data_source import resolve_data_root

PER_SIDE = 4
GAP = 16
LABEL_WIDTH = 150


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="model dir or 'default'")
    parser.add_argument("prompts", type=Path, help="prompts dir the model was trained with")
    parser.add_argument("out", type=Path)
    parser.add_argument("--data", default="sample", help="PCam root the prompts were built on")
    args = parser.parse_args()

    with h5py.File(args.prompts / "prompt_ids.h5") as handle:
        prompt_ids = handle["prompt_id"][:]
    data = PCam(resolve_data_root(args.data), "train")
    synthesizer = load_synthesizer(args.model)
    rng = np.random.default_rng(0)
    rows = []
    for prompt in synthesizer.prompts:
        members = np.flatnonzero(prompt_ids == prompt.id)
        if len(members) == 0:
            continue
        real = data.read_images(np.sort(rng.choice(members, size=min(PER_SIDE, len(members)), replace=False)))
        seeds = [prompt.id * PER_SIDE + k for k in range(PER_SIDE)]
        fake = synthesizer.generate([prompt.label] * PER_SIDE, seeds, [prompt.id] * PER_SIDE)
        row = np.full((96, LABEL_WIDTH + 8 * 96 + GAP, 3), 255, np.uint8)
        row[:, LABEL_WIDTH : LABEL_WIDTH + 96 * len(real)] = np.concatenate(list(real), axis=1)
        row[:, LABEL_WIDTH + 4 * 96 + GAP :] = np.concatenate(list(fake), axis=1)
        image = Image.fromarray(row)
        ImageDraw.Draw(image).text((4, 40), f"label {prompt.label}, type {prompt.morphology}\n{len(members)} patches",
                                   fill=(0, 0, 0))
        rows.append(np.asarray(image))
    header = Image.new("RGB", (rows[0].shape[1], 20), "white")
    draw = ImageDraw.Draw(header)
    draw.text((LABEL_WIDTH, 4), "real (train split)", fill=(0, 0, 0))
    draw.text((LABEL_WIDTH + 4 * 96 + GAP, 4), "synthetic (same prompt)", fill=(0, 0, 0))
    sheet = np.concatenate([np.asarray(header), *rows], axis=0)
    Image.fromarray(sheet).save(args.out, quality=85)
    print(f"wrote {args.out} ({len(rows)} prompts)")


if __name__ == "__main__":
    main()
