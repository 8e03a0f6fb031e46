"""Synthesizer on the torch backend with a tiny real model: output, determinism, diffusers parity, errors."""

from __future__ import annotations

import numpy as np
import pytest
from synthesis_models import psnr, tiny_model_dir

import histoaug
from histoaug.errors import ArtifactError, InvalidArgumentError
from histoaug.synthesis.requests import prompt_for_seed

STEPS = 4


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return tiny_model_dir(tmp_path_factory)


@pytest.fixture(scope="module")
def synth(model_dir):
    return histoaug.load_synthesizer(model_dir, backend="torch")


def test_generate_shape_dtype_and_metadata(synth) -> None:
    out = synth.generate([0, 1, 1], [5, 6, 7], steps=STEPS)
    assert out.shape == (3, 96, 96, 3) and out.dtype == np.uint8
    assert out.std() > 1  # not a constant image
    assert synth.backend == "torch" and synth.dtype == "fp32"
    assert len(synth.model_id) == 16
    assert [p.label for p in synth.prompts] == [0, 0, 1, 1]


def test_order_and_position_in_batch_are_bit_identical(synth) -> None:
    labels, seeds = [0, 1, 0, 1, 1, 0], [11, 12, 13, 14, 15, 16]
    base = synth.generate(labels, seeds, steps=STEPS, batch_size=6)
    order = [3, 0, 5, 1, 4, 2]
    shuffled = synth.generate([labels[i] for i in order], [seeds[i] for i in order], steps=STEPS, batch_size=6)
    np.testing.assert_array_equal(shuffled, base[order])
    # the same sample among different neighbours, at another position, same batch layout
    other = synth.generate([1, 1, 0, 0, 1, 1], [99, 98, 97, 96, 12, 95], steps=STEPS, batch_size=6)
    np.testing.assert_array_equal(other[4], base[1])


def test_other_batch_size_within_tolerance(synth) -> None:
    labels, seeds = [0, 1, 0, 1], [21, 22, 23, 24]
    whole = synth.generate(labels, seeds, steps=STEPS, batch_size=4)
    single = synth.generate(labels, seeds, steps=STEPS, batch_size=1)
    assert np.abs(whole.astype(int) - single).max() <= 2
    assert psnr(whole, single) >= 45


def test_prompt_choice_follows_seed_and_label(synth) -> None:
    bank = synth.prompts
    chosen = [prompt_for_seed(bank, label, seed) for label in (0, 1) for seed in range(40)]
    assert all(bank[p].label == (i >= 40) for i, p in enumerate(chosen))
    assert len(set(chosen[:40])) == 2 and len(set(chosen[40:])) == 2  # both prompts of each label used
    implicit = synth.generate([1], [7], steps=STEPS)
    explicit = synth.generate([1], [7], [prompt_for_seed(bank, 1, 7)], steps=STEPS)
    np.testing.assert_array_equal(implicit, explicit)
    other = synth.generate([1], [7], [5 - prompt_for_seed(bank, 1, 7)], steps=STEPS)  # the other label-1 prompt
    assert not np.array_equal(implicit, other)


@pytest.mark.parametrize("scheduler", ["ddim", "euler"])
def test_other_schedulers_run(synth, scheduler) -> None:
    out = synth.generate([0, 1], [1, 2], steps=STEPS, scheduler=scheduler)
    assert out.shape == (2, 96, 96, 3) and out.std() > 1


def test_guidance_one_skips_uncond(synth, monkeypatch) -> None:
    batches = []
    original = synth._backend.predict_noise

    def spy(latents, timesteps, embeddings):
        batches.append(latents.shape[0])
        return original(latents, timesteps, embeddings)

    monkeypatch.setattr(synth._backend, "predict_noise", spy)
    synth.generate([0, 1, 0], [1, 2, 3], steps=2, guidance=1.0)
    assert batches == [3, 3]
    batches.clear()
    synth.generate([0, 1, 0], [1, 2, 3], steps=2, guidance=2.0)
    assert batches == [6, 6]  # cond and uncond in one UNet call
    batches.clear()
    fast = synth.generate([0, 1, 0], [1, 2, 3], steps=4, guidance=2.0, guidance_until=0.5)
    assert batches == [6, 6, 3, 3]  # fast mode: CFG over the first half of the steps only
    monkeypatch.undo()
    exact = synth.generate([0, 1, 0], [1, 2, 3], steps=4, guidance=2.0)
    np.testing.assert_array_equal(synth.generate([0, 1, 0], [1, 2, 3], steps=4, guidance_until=1.0), exact)
    assert not np.array_equal(fast, exact)
    with pytest.raises(InvalidArgumentError, match="guidance_until"):
        synth.generate([0], [1], steps=2, guidance_until=0.0)


def test_deep_cache_passes_restate_the_unet_exactly(synth) -> None:
    import torch

    backend = synth._backend
    shape = (3, synth.model.latent_channels, synth.model.latent_size, synth.model.latent_size)
    latents, timesteps = torch.randn(shape, generator=torch.Generator().manual_seed(0)), torch.full((3,), 400.0)
    embeddings = synth.model.embeddings.cond[[0, 1, 0]]
    reference = backend.predict_noise(latents, timesteps, embeddings)
    eps, feature = backend.predict_noise_full(latents, timesteps, embeddings)
    assert torch.equal(eps, reference)  # the re-stated forward is diffusers' forward
    assert torch.equal(backend.predict_noise_shallow(latents, timesteps, embeddings, feature), reference)


def test_deep_cache_runs_the_whole_unet_every_k_steps(synth, monkeypatch) -> None:
    backend, calls = synth._backend, []
    full, shallow = backend.predict_noise_full, backend.predict_noise_shallow

    def spy_full(latents, timesteps, embeddings):
        calls.append(("full", latents.shape[0]))
        return full(latents, timesteps, embeddings)

    def spy_shallow(latents, timesteps, embeddings, feature):
        calls.append(("shallow", latents.shape[0]))
        assert feature.shape[0] == latents.shape[0]  # the cond half of a guided step's feature after guidance
        return shallow(latents, timesteps, embeddings, feature)

    monkeypatch.setattr(backend, "predict_noise_full", spy_full)
    monkeypatch.setattr(backend, "predict_noise_shallow", spy_shallow)
    fast = synth.generate([0, 1], [5, 6], steps=5, fast=True)  # guided throughout, whole UNet every 2nd step
    assert calls == [("full", 4), ("shallow", 4), ("full", 4), ("shallow", 4), ("full", 4)]
    np.testing.assert_array_equal(synth.generate([0, 1], [5, 6], steps=5, deep_cache=2), fast)
    calls.clear()
    synth.generate([0, 1], [5, 6], steps=5, guidance_until=0.5, deep_cache=2)  # guidance over 2 (of 5) steps
    assert calls == [("full", 4), ("shallow", 4), ("full", 2), ("shallow", 2), ("full", 2)]
    with pytest.raises(InvalidArgumentError, match="deep_cache"):
        synth.generate([0], [1], steps=2, deep_cache=0)


def test_matches_diffusers_pipeline(model_dir, synth) -> None:
    """Same weights, scheduler, seeds and prompts as StableDiffusionPipeline -> the same patches."""
    from histoaug.benchmarking import run_diffusers, run_histoaug

    reference, _ = run_diffusers(model_dir, 4, STEPS, 2.0, "dpmsolver++")
    ours, _ = run_histoaug(synth, model_dir, 4, STEPS, 2.0, "dpmsolver++")
    assert np.abs(reference.astype(int) - ours).max() <= 2
    assert psnr(reference, ours) >= 45


def test_bf16_close_to_fp32(model_dir, synth) -> None:
    bf16 = histoaug.load_synthesizer(model_dir, backend="torch", dtype="bf16")
    assert bf16.dtype == "bf16"
    a = synth.generate([0, 1], [3, 4], steps=STEPS)
    b = bf16.generate([0, 1], [3, 4], steps=STEPS)
    assert psnr(a, b) >= 25


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"labels": [0, 2], "seeds": [1, 2]}, "labels must be 0 or 1"),
        ({"labels": [0, 1], "seeds": [1]}, "2 labels but 1 seeds"),
        ({"labels": [0], "seeds": [-1]}, "seeds must be"),
        ({"labels": [], "seeds": []}, "nothing to generate"),
        ({"labels": [0], "seeds": [1.5]}, "seeds must be integers"),
        ({"labels": [0], "seeds": [1], "prompt_ids": [3]}, "prompt 3 has label 1"),
        ({"labels": [0], "seeds": [1], "prompt_ids": [9]}, "unknown prompt id 9"),
        ({"labels": [0], "seeds": [1], "steps": 0}, "steps must be"),
        ({"labels": [0], "seeds": [1], "guidance": 0.5}, "guidance must be"),
        ({"labels": [0], "seeds": [1], "guidance": float("nan")}, "guidance must be"),
        ({"labels": [0], "seeds": [1], "scheduler": "pndm"}, "unknown scheduler"),
        ({"labels": [0], "seeds": [1], "batch_size": 0}, "batch_size must be"),
    ],
)
def test_bad_requests(synth, kwargs, match) -> None:
    with pytest.raises(InvalidArgumentError, match=match):
        synth.generate(**kwargs)


def test_source_errors(tmp_path, model_dir, monkeypatch) -> None:
    from histoaug.synthesis import model_source

    monkeypatch.setattr(model_source, "DEFAULT_MODEL_DIR", tmp_path / "not-installed")
    with pytest.raises(ArtifactError, match="embedded default model is missing"):
        histoaug.load_synthesizer("default")
    with pytest.raises(ArtifactError, match="not found"):
        histoaug.load_synthesizer(tmp_path / "missing")
    with pytest.raises(ArtifactError, match="neither"):
        histoaug.load_synthesizer(tmp_path)
    import shutil

    copy = tmp_path / "no_prompts"
    shutil.copytree(model_dir, copy)
    (copy / "prompts.json").unlink()
    with pytest.raises(ArtifactError, match=r"without prompts\.json"):
        histoaug.load_synthesizer(copy)


def test_unavailable_backends_say_why(model_dir) -> None:
    with pytest.raises(InvalidArgumentError, match="export this model first"):
        histoaug.load_synthesizer(model_dir, backend="onnxruntime")
    with pytest.raises(InvalidArgumentError, match="unknown backend"):
        histoaug.load_synthesizer(model_dir, backend="jax")
    with pytest.raises(InvalidArgumentError, match="unavailable"):
        histoaug.load_synthesizer(model_dir, backend="tensorrt")
    with pytest.raises(InvalidArgumentError, match="dtype"):
        histoaug.load_synthesizer(model_dir, backend="torch", dtype="int8")


def test_auto_on_a_pipeline_dir_picks_torch(model_dir, caplog) -> None:
    import logging

    with caplog.at_level(logging.INFO, logger="histoaug.synthesis"):
        synth = histoaug.load_synthesizer(model_dir, backend="auto", device="cpu")
    assert synth.backend == "torch"
    assert "backend auto -> torch" in caplog.text


def test_nan_output_is_a_typed_error(synth, monkeypatch) -> None:
    import torch

    original = synth._backend.predict_noise
    monkeypatch.setattr(synth._backend, "predict_noise",
                        lambda *args: torch.full_like(original(*args), float("nan")))
    with pytest.raises(ArtifactError, match="NaN"):
        synth.generate([0], [1], steps=2)


def test_model_id_ignores_training_logs_and_checkpoints(model_dir, tmp_path) -> None:
    import shutil

    from histoaug.synthesis.artifact_format import model_id_of

    copy = tmp_path / "run"
    shutil.copytree(model_dir, copy)
    before = model_id_of(copy)
    (copy / "train_log.jsonl").write_text('{"step": 1}\n')
    (copy / "checkpoints").mkdir()
    (copy / "checkpoints" / "optimizer.safetensors").write_bytes(b"x" * 100)
    assert model_id_of(copy) == before
    (copy / "prompts.json").write_text((copy / "prompts.json").read_text().replace("type 0", "type 9"))
    assert model_id_of(copy) != before
