"""The embedded default model: shipped, verified, loads offline on every CPU backend, is the default."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from synthesis_models import psnr

import histoaug
from histoaug import PCam
from histoaug.cli.main import main
from histoaug.errors import ArtifactError
from histoaug.synthesis.artifact_format import MANIFEST_FILE, verify_manifest
from histoaug.synthesis.model_source import DEFAULT_MODEL_DIR, open_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_shipped_files_are_complete_small_and_match_the_manifest():
    manifest = verify_manifest(DEFAULT_MODEL_DIR)
    total = sum(p.stat().st_size for p in DEFAULT_MODEL_DIR.rglob("*") if p.is_file())
    assert total <= 30 * 2**20
    assert (DEFAULT_MODEL_DIR / "MODEL_CARD.md").is_file()
    assert not [p for p in DEFAULT_MODEL_DIR.rglob("*") if p.suffix in (".bin", ".pt", ".pkl", ".ckpt")]
    for part in ("unet", "vae", "text_encoder", "tokenizer", "onnx", "scheduler"):
        assert any(name.startswith(part + "/") for name in manifest["files"]), part
    model = open_model("default")
    assert model.kind == "artifact" and model.image_size == 96
    assert model.prompts.kind == "morphology" and len(model.prompts) >= 4


@pytest.mark.parametrize("backend", ["torch", "onnxruntime"])
def test_default_model_generates_label_conditioned_tissue_deterministically(backend):
    synth = histoaug.load_synthesizer(backend=backend)  # "default" is the default source
    labels, seeds = [0, 1, 0, 1], [1, 2, 3, 4]
    out = synth.generate(labels, seeds, steps=6)
    assert out.shape == (4, 96, 96, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, synth.generate(labels, seeds, steps=6))
    assert all(patch.std() > 5 for patch in out)  # texture, not flat colour
    # H&E: red and blue above green on average (pink/purple), for both labels
    mean = out.reshape(4, -1, 3).mean(axis=1)
    assert (mean[:, 0] > mean[:, 1]).all() and (mean[:, 2] > mean[:, 1]).all()


def test_torch_and_onnxruntime_agree_on_the_default_model():
    a = histoaug.load_synthesizer("default", backend="torch").generate([0, 1], [5, 6], steps=6)
    b = histoaug.load_synthesizer("default", backend="onnxruntime").generate([0, 1], [5, 6], steps=6)
    assert psnr(a, b) >= 30


def test_a_tampered_copy_of_the_default_model_is_refused(tmp_path):
    copy = tmp_path / "model"
    shutil.copytree(DEFAULT_MODEL_DIR, copy)
    weights = next(copy.glob("unet/*.safetensors"))
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="does not match its sha256"):
        histoaug.load_synthesizer(copy)
    (copy / MANIFEST_FILE).write_text("{not json")
    with pytest.raises(ArtifactError):
        histoaug.load_synthesizer(copy)


def test_generate_with_no_model_argument_uses_the_default(tmp_path, capsys):
    out, preview = tmp_path / "synthetic.h5", tmp_path / "grid.png"
    assert main(["generate", "--n", "6", "--out", str(out), "--steps", "4", "--preview", str(preview),
                 "--quiet"]) == 0
    data = PCam(out)
    assert len(data) == 6 and set(data.labels.tolist()) == {0, 1}
    assert preview.stat().st_size > 0
    import h5py

    with h5py.File(out) as handle:
        assert handle.attrs["model"] == "default"
        assert handle.attrs["model_id"] == json.loads((DEFAULT_MODEL_DIR / MANIFEST_FILE).read_text())["model_id"]


def test_the_embedded_models_own_sampler_defaults_are_used_and_documented(capsys):
    from histoaug.synthesis.model_source import sampler_defaults_of

    own = sampler_defaults_of("default")
    assert (own.steps, own.guidance, own.scheduler, own.guidance_rescale) == (10, 6.0, "dpmsolver++", 0.5)  # model card
    synth = histoaug.load_synthesizer("default", backend="torch", compile=False)
    assert synth.model.sampler.guidance == 6.0
    with pytest.raises(SystemExit):
        main(["generate", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "6 for the embedded model" in help_text and "0.5 for the embedded model" in help_text
