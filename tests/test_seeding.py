"""Sample i's (label, prompt, seed) depends only on (run seed, options, i)."""

from __future__ import annotations

import numpy as np
import pytest

from histoaug import InvalidArgumentError
from histoaug.generation.settings import GenerationSettings
from histoaug.prompts import Prompt, PromptBank
from histoaug.seeding import SampleAssigner, labels_for, parse_label_spec


def morphology_bank(types: int = 3) -> PromptBank:
    prompts = [
        Prompt(label * types + k, label, k, f"{'healthy' if label == 0 else 'tumour'} tissue, type {k}")
        for label in (0, 1)
        for k in range(types)
    ]
    return PromptBank(prompts, kind="morphology")


def test_any_block_agrees_with_the_whole_run():
    assigner = SampleAssigner(morphology_bank(), run_seed=7, fraction_tumour=0.3)
    whole = assigner.assign(np.arange(1000))
    for start, stop in [(0, 1), (999, 1000), (123, 517)]:
        part = assigner.assign(np.arange(start, stop))
        np.testing.assert_array_equal(part.labels, whole.labels[start:stop])
        np.testing.assert_array_equal(part.prompt_ids, whole.prompt_ids[start:stop])
        np.testing.assert_array_equal(part.seeds, whole.seeds[start:stop])
    shuffled = np.random.default_rng(0).permutation(1000)
    np.testing.assert_array_equal(assigner.assign(shuffled).seeds, whole.seeds[shuffled])


def test_seeds_are_distinct_and_depend_on_the_run_seed():
    bank = morphology_bank()
    a = SampleAssigner(bank, run_seed=0).assign(np.arange(10000))
    b = SampleAssigner(bank, run_seed=1).assign(np.arange(10000))
    assert len(np.unique(a.seeds)) == 10000
    assert (a.seeds >= 0).all() and (a.seeds < 2**63).all()
    assert not np.array_equal(a.seeds, b.seeds)


@pytest.mark.parametrize("fraction", [0.0, 0.25, 0.5, 0.9, 1.0])
def test_label_fraction_is_exact_on_every_prefix(fraction):
    labels = labels_for(np.arange(2000), fraction)
    assert set(np.unique(labels)) <= {0, 1}
    prefix_counts = np.cumsum(labels)
    expected = np.floor((np.arange(2000) + 1) * fraction)
    np.testing.assert_array_equal(prefix_counts, expected)


def test_prompts_match_labels_and_cover_all_types():
    bank = morphology_bank(types=4)
    assignment = SampleAssigner(bank, run_seed=3).assign(np.arange(4000))
    for label, prompt_id in zip(assignment.labels, assignment.prompt_ids, strict=True):
        assert bank[int(prompt_id)].label == label
    counts = np.bincount(assignment.prompt_ids, minlength=8)
    assert counts.min() > 350  # every prompt used, roughly uniformly (500 expected)


def test_prompt_restriction_and_errors():
    bank = morphology_bank()
    only = SampleAssigner(bank, run_seed=0, fraction_tumour=1.0, prompt_ids=[4]).assign(np.arange(50))
    assert set(only.prompt_ids.tolist()) == {4}
    with pytest.raises(InvalidArgumentError, match="unknown prompt id 99"):
        SampleAssigner(bank, run_seed=0, prompt_ids=[99])
    with pytest.raises(InvalidArgumentError, match="no selected prompt has label 0"):
        SampleAssigner(bank, run_seed=0, fraction_tumour=0.5, prompt_ids=[4])


def test_label_spec_parsing():
    assert parse_label_spec("balanced") == 0.5
    assert parse_label_spec("1") == 1.0
    assert parse_label_spec("0.3") == 0.3
    for bad in ("half", "1.5", "-0.1", "nan"):
        with pytest.raises(InvalidArgumentError):
            parse_label_spec(bad)


def test_settings_layout_and_fingerprint():
    settings = GenerationSettings(n=70, batch_size=32)
    assert settings.blocks() == [(0, 32), (32, 64), (64, 70)]
    assert settings.fingerprint("m") == GenerationSettings(n=70, batch_size=32).fingerprint("m")
    assert settings.fingerprint("m") != GenerationSettings(n=70, batch_size=16).fingerprint("m")
    assert settings.fingerprint("m") != settings.fingerprint("other-model")
    for bad in ({"n": 0}, {"n": 5, "batch_size": 0}, {"n": 5, "steps": 0}, {"n": 5, "guidance": 0.5}):
        with pytest.raises(InvalidArgumentError):
            GenerationSettings(**bad)
