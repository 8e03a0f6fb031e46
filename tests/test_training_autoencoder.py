"""The VAE stage (histoaug train-vae) on the bundled sample: loss, output pipeline, exact resume, errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from histoaug.cli.main import main
from histoaug.training.base_model import load_base_pipeline

STEPS = 12

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def vae_args(out, *extra):
    return ["train-vae", "sample", "--base", "tiny", "--out", str(out), "--steps", str(STEPS), "--batch-size", "4",
            "--lr", "2e-3", "--warmup-steps", "1", "--checkpoint-every", "6", "--no-progress", *extra]


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    out = tmp_path_factory.mktemp("vae") / "run"
    assert main(vae_args(out)) == 0
    return out


def test_vae_training_writes_a_loadable_pipeline_with_its_scaling_and_report(straight):
    log = [json.loads(line) for line in (straight / "train_log.jsonl").read_text().splitlines()]
    assert [entry["step"] for entry in log] == list(range(1, STEPS + 1))
    assert np.mean([e["l1"] for e in log[-3:]]) < np.mean([e["l1"] for e in log[:3]])
    report = json.loads((straight / "autoencoder_report.json").read_text())
    assert set(report["splits"]) == {"train", "valid", "test"}
    assert all(0 < s["psnr_db"] < 60 for s in report["splits"].values())
    pipe = load_base_pipeline(str(straight))
    assert pipe.vae.config.scaling_factor == pytest.approx(report["scaling_factor"])
    assert report["scaling_factor"] != 0.18215  # measured, not SD's constant
    assert (straight / "reconstructions.png").stat().st_size > 0


def test_vae_resume_continues_exactly(straight, tmp_path):
    out = tmp_path / "run"
    assert main(vae_args(out, "--stop-at", "6")) == 0
    assert not (out / "model_index.json").exists()  # stopped early: no final pipeline yet
    assert main(vae_args(out, "--resume")) == 0
    a = load_file(straight / "vae" / "diffusion_pytorch_model.safetensors")
    b = load_file(out / "vae" / "diffusion_pytorch_model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    loss = [json.loads(line)["loss"] for line in (out / "train_log.jsonl").read_text().splitlines()]
    straight_loss = [json.loads(line)["loss"] for line in (straight / "train_log.jsonl").read_text().splitlines()]
    assert loss == straight_loss


def test_vae_output_loads_as_a_base_with_the_trained_vae(straight):
    """The pipeline dir train-vae writes is what `histoaug train --base` takes (the VAE is kept)."""
    pipe = load_base_pipeline(str(straight))
    weights = load_file(straight / "vae" / "diffusion_pytorch_model.safetensors")
    assert all(torch.equal(pipe.vae.state_dict()[k], v) for k, v in weights.items())


@pytest.mark.parametrize("extra, message", [
    (["--steps", "0"], "steps must be >= 1"),
    (["--kl-weight", "-1"], "kl-weight must be a number >= 0"),
    (["--stop-at", "99"], "stop-at must be in"),
])
def test_vae_bad_arguments_are_one_line_errors(tmp_path, capsys, extra, message):
    assert main(vae_args(tmp_path / "out", *extra)) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_vae_existing_output_needs_resume_or_overwrite(straight, capsys):
    assert main(vae_args(straight)) == 2
    assert "pass --resume" in capsys.readouterr().err


def test_decoder_only_gan_fine_tune_keeps_the_latent_space_and_the_model(straight, tmp_path):
    """Fine-tuning the decoder of a trained model: encoder (latents) and UNet unchanged, prompts kept."""
    import shutil

    from histoaug.prompts import PromptBank

    base = tmp_path / "model"
    shutil.copytree(straight, base)
    PromptBank.baseline().save(base)
    out = tmp_path / "gan"
    assert main(["train-vae", "sample", "--base", str(base), "--out", str(out), "--steps", "4", "--batch-size", "4",
                 "--decoder-only", "--adversarial-weight", "0.1", "--warmup-steps", "1", "--no-progress"]) == 0
    before = load_file(base / "vae" / "diffusion_pytorch_model.safetensors")
    after = load_file(out / "vae" / "diffusion_pytorch_model.safetensors")
    encoder = [k for k in before if k.startswith(("encoder.", "quant_conv."))]
    decoder = [k for k in before if k.startswith("decoder.")]
    assert encoder and all(torch.equal(before[k], after[k]) for k in encoder)
    assert any(not torch.equal(before[k], after[k]) for k in decoder)
    unet_before = load_file(base / "unet" / "diffusion_pytorch_model.safetensors")
    unet_after = load_file(out / "unet" / "diffusion_pytorch_model.safetensors")
    assert all(torch.equal(unet_before[k], unet_after[k]) for k in unet_before)
    assert (out / "prompts.json").read_text() == (base / "prompts.json").read_text()
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert all(np.isfinite(e["discriminator"]) and np.isfinite(e["adversarial"]) for e in log)
    report = json.loads((out / "autoencoder_report.json").read_text())
    assert report["scaling_factor"] == pytest.approx(json.loads((base / "autoencoder_report.json").read_text())
                                                     ["scaling_factor"])
