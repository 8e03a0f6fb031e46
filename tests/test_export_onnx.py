"""histoaug export: artifact structure (fused Attention), numerics vs torch, manifest checks, CLI errors."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from synthesis_models import psnr, tiny_artifact_dir, tiny_model_dir

import histoaug
from histoaug.cli.main import main as cli_main
from histoaug.errors import ArtifactError, InvalidArgumentError, OutputExistsError
from histoaug.export.artifact import ExportSettings, export_model
from histoaug.export.graph_checks import attention_blocks, check_fused_attention, op_counts, opset_of

pytestmark = pytest.mark.slow  # one ~15 s export shared by the module

STEPS = 4


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return tiny_model_dir(tmp_path_factory)


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    return tiny_artifact_dir(tmp_path_factory)


def test_unet_has_one_fused_attention_node_per_block(artifact) -> None:
    from diffusers import AutoencoderKL, UNet2DConditionModel

    unet = UNet2DConditionModel.from_pretrained(artifact, subfolder="unet")
    vae = AutoencoderKL.from_pretrained(artifact, subfolder="vae")
    blocks = attention_blocks(unet)
    assert blocks == 8  # tiny preset: self + cross attention in 4 transformer blocks
    counts = op_counts(artifact / "onnx" / "unet.onnx")
    assert counts["Attention"] == blocks and counts.get("Softmax", 0) == 0
    vae_counts = op_counts(artifact / "onnx" / "vae_decoder.onnx")
    assert vae_counts["Attention"] == attention_blocks(vae.decoder) == 1 and vae_counts.get("Softmax", 0) == 0
    assert opset_of(artifact / "onnx" / "unet.onnx") >= 23
    with pytest.raises(ArtifactError, match="not fused"):
        check_fused_attention(artifact / "onnx" / "unet.onnx", blocks + 1)


def test_manifest_records_source_shapes_and_checks(artifact, model_dir) -> None:
    from histoaug.synthesis.artifact_format import model_id_of

    manifest = json.loads((artifact / "manifest.json").read_text())
    assert manifest["model_id"] == model_id_of(model_dir)
    assert manifest["onnx"]["opset"] >= 23 and manifest["onnx"]["dtype"] == "fp32"
    assert manifest["latent_shape"] == [4, 16, 16]
    for name in ("onnx/unet.onnx", "onnx/vae_decoder.onnx", "prompt_embeddings.safetensors", "prompts.json",
                 "scheduler/scheduler_config.json", "unet/diffusion_pytorch_model.safetensors"):
        assert len(manifest["files"][name]["sha256"]) == 64
    for graph in ("unet", "vae_decoder"):
        check = manifest["onnx"]["verification"][graph]
        assert check["relative_error"] <= check["tolerance"]
    assert [p.name for p in artifact.parent.iterdir()] == ["artifact"]  # no staging dir left


def test_onnxruntime_matches_torch_and_is_deterministic(artifact, model_dir) -> None:
    ort_synth = histoaug.load_synthesizer(artifact, backend="onnxruntime", device="cpu")
    torch_synth = histoaug.load_synthesizer(model_dir, backend="torch")
    assert ort_synth.model_id == torch_synth.model_id
    labels, seeds = [0, 1, 0, 1, 1, 0], [31, 32, 33, 34, 35, 36]
    ours = ort_synth.generate(labels, seeds, steps=STEPS, batch_size=6)
    reference = torch_synth.generate(labels, seeds, steps=STEPS, batch_size=6)
    assert psnr(ours, reference) >= 30
    order = [5, 3, 1, 0, 2, 4]
    shuffled = ort_synth.generate([labels[i] for i in order], [seeds[i] for i in order], steps=STEPS, batch_size=6)
    np.testing.assert_array_equal(shuffled, ours[order])
    smaller = ort_synth.generate(labels, seeds, steps=STEPS, batch_size=4)
    assert np.abs(smaller.astype(int) - ours).max() <= 2


def test_auto_prefers_onnxruntime_for_short_jobs_on_cpu(artifact) -> None:
    short = histoaug.load_synthesizer(artifact, device="cpu", expected_patches=100)
    assert (short.backend, short.compiled) == ("onnxruntime", False) and "100-patch job saves" in short.choice.reason
    assert histoaug.load_synthesizer(artifact, device="cpu", compile=False).backend == "onnxruntime"
    with pytest.raises(InvalidArgumentError, match="exported as fp32"):
        histoaug.load_synthesizer(artifact, backend="onnxruntime", dtype="fp16")
    assert not short.supports_deep_cache
    with pytest.raises(InvalidArgumentError, match="deep_cache runs on the torch backend, not 'onnxruntime'"):
        short.generate([0], [1], steps=2, deep_cache=2)


def test_auto_honours_an_asked_dtype(artifact, caplog) -> None:
    assert histoaug.load_synthesizer(artifact, device="cpu", dtype="fp32").backend == "onnxruntime"
    with caplog.at_level("INFO", logger="histoaug"):
        synth = histoaug.load_synthesizer(artifact, device="cpu", dtype="bf16", compile=False)
    assert (synth.backend, synth.dtype) == ("torch", "bf16")
    assert "onnxruntime: runs the artifact's export dtype fp32, not bf16" in caplog.text


@pytest.mark.parametrize("damage", ["tamper", "truncate", "delete", "manifest"])
def test_damaged_artifact_is_refused(artifact, tmp_path, damage) -> None:
    copy = tmp_path / "artifact"
    shutil.copytree(artifact, copy)
    target = copy / "onnx" / "unet.onnx"
    data = bytearray(target.read_bytes())
    if damage == "tamper":
        data[len(data) // 2] ^= 0xFF
        target.write_bytes(bytes(data))
        match = "does not match its sha256"
    elif damage == "truncate":
        target.write_bytes(bytes(data[: len(data) // 2]))
        match = "truncated"
    elif damage == "delete":
        (copy / "prompt_embeddings.safetensors").unlink()
        match = "missing"
    else:
        (copy / "manifest.json").write_text("{not json")
        match = "unreadable manifest"
    with pytest.raises(ArtifactError, match=match):
        histoaug.load_synthesizer(copy, backend="onnxruntime")


def test_existing_output_refused_then_replaced(model_dir, tmp_path) -> None:
    out = tmp_path / "plain"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    with pytest.raises(OutputExistsError):
        export_model(model_dir, out, ExportSettings(format="diffusers"))
    assert (out / "keep.txt").exists()
    export_model(model_dir, out, ExportSettings(format="diffusers", overwrite=True))
    assert not (out / "keep.txt").exists()
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(out)
    assert pipe.unet is not None and (out / "prompts.json").exists()
    assert not list(tmp_path.glob(".plain.*"))


def test_bf16_export_without_a_gpu_provider_is_refused_up_front(model_dir, tmp_path) -> None:
    with pytest.raises(InvalidArgumentError, match="no bf16 kernels"):
        export_model(model_dir, tmp_path / "bf16", ExportSettings(dtype="bf16"))
    assert not list(tmp_path.iterdir())


def test_export_settings_validation() -> None:
    with pytest.raises(InvalidArgumentError, match="--batch"):
        ExportSettings(batch=0)
    with pytest.raises(InvalidArgumentError, match="--format"):
        ExportSettings(format="tflite")
    with pytest.raises(InvalidArgumentError, match="--dtype applies to onnx"):
        ExportSettings(format="diffusers", dtype="fp16")


def test_cli_user_errors_are_one_line_exit_2(model_dir, artifact, tmp_path, capsys) -> None:
    assert cli_main(["export", str(tmp_path / "nope"), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not found" in err
    assert cli_main(["export", str(model_dir), str(artifact)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--overwrite" in err
    assert cli_main(["export", str(artifact), str(tmp_path / "out2")]) == 2  # an artifact is not a source
    assert "diffusers pipeline dir" in capsys.readouterr().err
    assert not (tmp_path / "out2").exists()


def test_the_embedded_model_is_re_exported_in_fp16(tmp_path, capsys) -> None:
    """The default model is an artifact and a pipeline dir at once: export takes it as a source
    (issue 13, item 6), keeps its identity, and the fp16 graphs run close to the shipped fp32 ones."""
    from histoaug.synthesis.artifact_format import MANIFEST_FILE
    from histoaug.synthesis.model_source import DEFAULT_MODEL_DIR

    out = tmp_path / "default-fp16"
    assert cli_main(["export", "default", str(out), "--format", "onnx", "--dtype", "fp16", "--batch", "1"]) == 0
    assert "fp16" in capsys.readouterr().out
    manifest = json.loads((out / MANIFEST_FILE).read_text())
    shipped = json.loads((DEFAULT_MODEL_DIR / MANIFEST_FILE).read_text())
    assert manifest["onnx"]["dtype"] == "fp16" and manifest["model_id"] == shipped["model_id"]
    assert manifest["source_model_sha256"] == shipped["source_model_sha256"]
    assert all(c["relative_error"] <= c["tolerance"] for c in manifest["onnx"]["verification"].values())
    fp16 = histoaug.load_synthesizer(out, backend="onnxruntime", device="cpu")
    fp32 = histoaug.load_synthesizer("default", backend="onnxruntime", device="cpu")
    assert (fp16.dtype, fp16.model_id) == ("fp16", fp32.model_id)
    labels, seeds = [0, 1], [5, 6]
    assert psnr(fp16.generate(labels, seeds, steps=4), fp32.generate(labels, seeds, steps=4)) >= 30
