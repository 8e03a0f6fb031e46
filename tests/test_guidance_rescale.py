"""Guidance rescale (diffusers' ``guidance_rescale``): the math against diffusers, the model's own default,
the generate CLI and its provenance, and parity with StableDiffusionPipeline on a tiny real model."""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import asdict

import h5py
import numpy as np
import pytest
import torch
from synthesis_models import psnr, tiny_model_dir

import histoaug
from histoaug.cli.main import main
from histoaug.errors import ArtifactError, InvalidArgumentError
from histoaug.synthesis.artifact_format import read_sampler_defaults, write_sampler_defaults
from histoaug.synthesis.defaults import ModelSamplerDefaults
from histoaug.synthesis.sampling import SamplerSettings, guided_noise

STEPS = 4


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return tiny_model_dir(tmp_path_factory)


@pytest.fixture(scope="module")
def rescaled_model(model_dir, tmp_path_factory):
    """The tiny model carrying its own sampler defaults with a guidance rescale."""
    root = tmp_path_factory.mktemp("rescaled") / "model"
    shutil.copytree(model_dir, root)
    write_sampler_defaults(root, ModelSamplerDefaults(STEPS, 5.0, "dpmsolver++", 0.7))
    return root


@pytest.mark.parametrize("rescale", [0.3, 0.5, 1.0])
def test_guided_noise_is_diffusers_rescale_noise_cfg(rescale) -> None:
    from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion import rescale_noise_cfg

    generator = torch.Generator().manual_seed(0)
    uncond, cond = torch.randn(2, 3, 4, 6, 6, generator=generator)
    ours = guided_noise(uncond, cond, 6.0, rescale)
    reference = rescale_noise_cfg(uncond + 6.0 * (cond - uncond), cond, guidance_rescale=rescale)
    torch.testing.assert_close(ours, reference, rtol=0, atol=1e-6)
    plain = guided_noise(uncond, cond, 6.0, 0.0)
    assert torch.equal(plain, uncond + 6.0 * (cond - uncond))  # 0: plain CFG, bit for bit
    per_sample_std = ours.flatten(1).std(dim=1)
    target = rescale * cond.flatten(1).std(dim=1) + (1 - rescale) * plain.flatten(1).std(dim=1)
    assert torch.allclose(per_sample_std, target, rtol=1e-4)  # pulled towards the cond prediction's scale


@pytest.mark.parametrize("bad", [-0.1, 1.5, float("nan")])
def test_out_of_range_rescale_is_refused(bad, model_dir) -> None:
    with pytest.raises(InvalidArgumentError, match="guidance_rescale"):
        SamplerSettings(guidance_rescale=bad)
    synth = histoaug.load_synthesizer(model_dir, backend="torch")
    with pytest.raises(InvalidArgumentError, match="guidance_rescale"):
        synth.generate([0], [1], steps=2, guidance_rescale=bad)


def test_sampler_defaults_file_round_trip(tmp_path) -> None:
    write_sampler_defaults(tmp_path, ModelSamplerDefaults(10, 6.0, "dpmsolver++", 0.5))
    assert json.loads((tmp_path / "sampler_defaults.json").read_text())["guidance_rescale"] == 0.5
    assert read_sampler_defaults(tmp_path) == ModelSamplerDefaults(10, 6.0, "dpmsolver++", 0.5)
    write_sampler_defaults(tmp_path, ModelSamplerDefaults(10, 2.0, "dpmsolver++"))
    assert "guidance_rescale" not in json.loads((tmp_path / "sampler_defaults.json").read_text())  # files as before
    assert read_sampler_defaults(tmp_path).guidance_rescale == 0.0
    data = json.loads((tmp_path / "sampler_defaults.json").read_text())
    (tmp_path / "sampler_defaults.json").write_text(json.dumps({**data, "guidance_rescale": 3}))
    with pytest.raises(ArtifactError, match="guidance_rescale"):
        read_sampler_defaults(tmp_path)


def test_the_models_own_rescale_is_the_default_and_explicit_values_win(rescaled_model) -> None:
    synth = histoaug.load_synthesizer(rescaled_model, backend="torch")
    assert synth.model.sampler.guidance_rescale == 0.7
    own = synth.generate([0, 1], [3, 4])
    assert np.array_equal(own, synth.generate([0, 1], [3, 4], guidance_rescale=0.7))
    assert not np.array_equal(own, synth.generate([0, 1], [3, 4], guidance_rescale=0.0))
    # guidance 1 runs no CFG, so there is nothing to rescale
    assert np.array_equal(synth.generate([0], [5], guidance=1.0), synth.generate([0], [5], guidance=1.0,
                                                                                 guidance_rescale=0.0))


@pytest.mark.parametrize("rescale", [0.0, 0.7])
def test_matches_diffusers_pipeline_with_guidance_rescale(model_dir, rescale) -> None:
    """Same weights, scheduler, seeds, prompts, guidance and rescale as StableDiffusionPipeline."""
    from histoaug.benchmarking import run_diffusers, run_histoaug

    synth = histoaug.load_synthesizer(model_dir, backend="torch")
    reference, _ = run_diffusers(model_dir, 4, STEPS, 5.0, "dpmsolver++", guidance_rescale=rescale)
    ours, _ = run_histoaug(synth, model_dir, 4, STEPS, 5.0, "dpmsolver++", guidance_rescale=rescale)
    assert np.abs(reference.astype(int) - ours).max() <= 2
    assert psnr(reference, ours) >= 45


def test_generate_cli_records_and_resumes_under_the_rescale(rescaled_model, tmp_path, capsys) -> None:
    out = tmp_path / "own.h5"
    assert main(["generate", "--model", str(rescaled_model), "--n", "4", "--batch-size", "2", "--out", str(out),
                 "--backend", "torch", "--quiet"]) == 0
    explicit = tmp_path / "explicit.h5"
    assert main(["generate", "--model", str(rescaled_model), "--n", "4", "--batch-size", "2", "--out",
                 str(explicit), "--backend", "torch", "--guidance-rescale", "0", "--quiet"]) == 0
    with h5py.File(out) as a, h5py.File(explicit) as b:
        assert float(a.attrs["guidance_rescale"]) == 0.7 and float(b.attrs["guidance_rescale"]) == 0.0
        assert not np.array_equal(a["x"][:], b["x"][:])
    capsys.readouterr()
    assert main(["generate", "--model", str(rescaled_model), "--n", "4", "--out", str(tmp_path / "bad.h5"),
                 "--guidance-rescale", "1.5"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--guidance-rescale" in err and "Traceback" not in err
    assert not (tmp_path / "bad.h5").exists()


def test_the_fingerprint_of_runs_without_rescale_is_unchanged() -> None:
    from histoaug.generation.settings import GenerationSettings

    plain = GenerationSettings(n=8)
    fields = {k: v for k, v in asdict(plain).items() if k not in ("guidance_until", "deep_cache", "guidance_rescale")}
    before = hashlib.sha256(json.dumps({"model": "m", "runtime": "", **fields}, sort_keys=True).encode()).hexdigest()
    assert plain.fingerprint("m") == before  # work files written before these settings still resume
    assert plain.fingerprint("m") != GenerationSettings(n=8, guidance_rescale=0.5).fingerprint("m")
