"""The handcrafted stain-texture embedder, and prompt banks that know which prompts were trained."""

from __future__ import annotations

import json

import numpy as np
import pytest

from histoaug import PCam, sample_root
from histoaug.errors import InvalidArgumentError
from histoaug.prompts import Prompt, PromptBank
from histoaug.seeding import SampleAssigner
from histoaug.synthesis.requests import build_request
from histoaug.training import PromptBuildConfig, build_prompts
from histoaug.training.embedding import load_embedder
from histoaug.training.stain_embedding import stain_texture_features


def test_features_are_deterministic_and_separate_the_sample_labels():
    data = PCam(sample_root(), "train")
    head = np.arange(min(len(data), 300))  # a shuffled slice of the sample keeps this quick
    images = data.read_images(head)
    features = stain_texture_features(images)
    assert features.shape == (len(head), 34) and features.dtype == np.float32
    assert np.isfinite(features).all()
    np.testing.assert_array_equal(features, stain_texture_features(images))
    np.testing.assert_array_equal(features[:5], stain_texture_features(images[:5]))  # per patch, batch-free
    labels = data.labels[head]
    # nearest class mean (on the real sample) is far better than chance: the features carry stain/texture
    centres = [features[labels == k].mean(axis=0) for k in (0, 1)]
    nearest = np.argmin([np.linalg.norm(features - c, axis=1) for c in centres], axis=0)
    assert (nearest == labels).mean() > 0.8


def test_stain_texture_prompts_build_end_to_end_and_record_patch_counts(tmp_path):
    result = build_prompts(PromptBuildConfig(data="sample", out=str(tmp_path / "p"), embedder="stain-texture",
                                             clusters=4, cache_dir=str(tmp_path / "cache"), progress=False))
    stored = json.loads((tmp_path / "p" / "prompts.json").read_text())
    counts = [p["patches"] for p in stored["prompts"]]
    assert sum(counts) == len(PCam(sample_root(), "train")) and counts == result.report["patches_per_prompt"]
    bank = PromptBank.load(tmp_path / "p")
    for label in (0, 1):
        assert all(bank[i].patches > 0 and bank[i].label == label for i in bank.ids_for_label(label))
    assert load_embedder("stain-texture").fingerprint == result.assignment.attrs["embedder_hash"]


def _bank_with_an_untrained_prompt() -> PromptBank:
    return PromptBank([Prompt(0, 0, 0, "healthy a", 5), Prompt(1, 0, 1, "healthy b", 0),
                       Prompt(2, 1, 0, "tumour a", 3), Prompt(3, 1, 1, "tumour b", None)])


def test_untrained_prompts_are_never_picked_by_default_but_can_be_asked_for():
    bank = _bank_with_an_untrained_prompt()
    assert bank.ids_for_label(0) == [0] and bank.ids_for_label(1) == [2, 3]  # None = unknown: usable
    picked = build_request(bank, [0] * 50, list(range(50))).prompt_ids
    assert set(picked.tolist()) == {0}
    assert build_request(bank, [0], [7], [1]).prompt_ids.tolist() == [1]
    assigned = SampleAssigner(bank, run_seed=0, fraction_tumour=0.5).assign(np.arange(200))
    assert 1 not in set(assigned.prompt_ids.tolist())
    assert "PromptBank(kind='custom', prompts=4" in repr(bank)


def test_a_label_with_only_untrained_prompts_is_a_clear_error():
    bank = PromptBank([Prompt(0, 0, None, "healthy", 0), Prompt(1, 1, None, "tumour", 4)])
    with pytest.raises(InvalidArgumentError, match="no trained prompt for label 0"):
        bank.ids_for_label(0)


def test_patch_counts_must_match_the_bank():
    with pytest.raises(InvalidArgumentError, match="3 patch counts for 4 prompts"):
        _bank_with_an_untrained_prompt().with_patch_counts([1, 2, 3])
