"""histoaug distill: a tiny LCM student on the bundled sample, exact resume, and the student as a model.

The teacher is the tiny preset's pipeline dir (random weights: these tests check the machinery,
not quality). The student must load, generate with its own defaults (LCM, 4 steps, guidance 1)
and export to ONNX with no special flags.
"""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from synthesis_models import tiny_model_dir

from histoaug import load_synthesizer, sample_root
from histoaug.cli.main import main
from histoaug.errors import InvalidArgumentError
from histoaug.prompts import PromptBank
from histoaug.training.checkpoints import list_checkpoints
from histoaug.training.distillation import patch_prompt_ids

STEPS = 4
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def distill_args(teacher, out, *extra):
    return ["distill", str(teacher), "--out", str(out), "--steps", str(STEPS), "--batch-size", "4",
            "--lr", "1e-3", "--checkpoint-every", "2", "--device", "cpu", "--preview-per-label", "0",
            "--no-progress", *extra]


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    return tiny_model_dir(tmp_path_factory)


@pytest.fixture(scope="module")
def student(teacher, tmp_path_factory):
    out = tmp_path_factory.mktemp("student") / "model"
    assert main(distill_args(teacher, out, "--preview-per-label", "1")) == 0
    return out


def losses(out):
    return [json.loads(line)["loss"] for line in (out / "train_log.jsonl").read_text().splitlines()]


def test_student_is_a_model_dir_with_lcm_defaults(student, teacher):
    curve = losses(student)
    assert len(curve) == STEPS and all(np.isfinite(curve))
    scheduler = json.loads((student / "scheduler" / "scheduler_config.json").read_text())
    assert scheduler["_class_name"] == "LCMScheduler" and scheduler["original_inference_steps"] == 50
    assert "algorithm_type" not in scheduler  # a clean LCM config, not the teacher's DPM-Solver keys
    defaults = json.loads((student / "sampler_defaults.json").read_text())
    assert (defaults["scheduler"], defaults["steps"], defaults["guidance"]) == ("lcm", 4, 1.0)
    assert PromptBank.load(student).texts == PromptBank.load(teacher).texts
    # the saved UNet is the EMA target network of the last checkpoint, and it moved off the teacher
    final = load_file(student / "unet" / "diffusion_pytorch_model.safetensors")
    (_, last), = [c for c in list_checkpoints(student) if c[0] == STEPS]
    target = load_file(last / "target.safetensors")
    assert all(torch.equal(final[k], target[k]) for k in target)
    original = load_file(teacher / "unet" / "diffusion_pytorch_model.safetensors")
    assert any(not torch.equal(original[k], final[k]) for k in original)
    record = json.loads((student / "training_config.json").read_text())
    assert record["config"]["guidance"] == 2.0 and record["inputs"]["teacher_model_id"]
    assert (student / "preview.png").is_file() and list((student / "latent_cache").glob("*.safetensors"))
    assert not [p for p in student.rglob("*") if p.suffix in {".bin", ".pt", ".pth", ".pkl", ".ckpt"}]


def test_stop_and_resume_equals_the_straight_run(student, teacher, tmp_path):
    out = tmp_path / "resumed"
    assert main(distill_args(teacher, out, "--stop-at", "2")) == 0
    assert not (out / "model_index.json").exists()
    assert main(distill_args(teacher, out, "--resume")) == 0
    assert losses(out) == losses(student)
    straight = load_file(student / "unet" / "diffusion_pytorch_model.safetensors")
    resumed = load_file(out / "unet" / "diffusion_pytorch_model.safetensors")
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)


def test_generate_without_flags_uses_the_students_lcm_defaults(student, tmp_path):
    synthesizer = load_synthesizer(student, backend="torch", dtype="fp32", compile=False)
    assert (synthesizer.model.sampler.scheduler, synthesizer.model.sampler.steps) == ("lcm", 4)
    plain = synthesizer.generate([0, 1, 1], [1, 2, 3])
    explicit = synthesizer.generate([0, 1, 1], [1, 2, 3], steps=4, guidance=1.0, scheduler="lcm")
    assert np.array_equal(plain, explicit)
    assert np.array_equal(synthesizer.generate([1, 1], [2, 3]), plain[1:])  # a sample's own seed, not its batch
    assert not np.array_equal(synthesizer.generate([0, 1, 1], [1, 2, 3], steps=2), plain)  # explicit wins

    out = tmp_path / "student.h5"
    assert main(["generate", "--model", str(student), "--n", "4", "--out", str(out), "--backend", "torch",
                 "--quiet"]) == 0
    with h5py.File(out, "r") as handle:
        attrs = dict(handle.attrs)
    assert (attrs["sampler"], attrs["steps"], attrs["guidance"]) == ("lcm", 4, 1.0)


def test_synthetic_pcam_runs_the_student(student):
    from histoaug import SyntheticPCam

    dataset = SyntheticPCam(sample_root(), ratio=1.0, synthesizer=str(student), pool=False, backend="torch")
    image, label = dataset[0]
    assert image.shape == (96, 96, 3) and image.dtype == np.uint8 and label in (0, 1)


@pytest.mark.slow
def test_student_exports_to_onnx_and_runs_on_onnxruntime(student, tmp_path):
    artifact = tmp_path / "artifact"
    assert main(["export", str(student), str(artifact), "--format", "onnx", "--no-progress"]) == 0
    assert json.loads((artifact / "sampler_defaults.json").read_text())["scheduler"] == "lcm"
    onnx = load_synthesizer(artifact, backend="onnxruntime")
    assert onnx.model.sampler.steps == 4
    torch_patches = load_synthesizer(student, backend="torch", dtype="fp32", compile=False).generate([0, 1], [1, 2])
    onnx_patches = onnx.generate([0, 1], [1, 2])
    assert np.abs(torch_patches.astype(int) - onnx_patches).max() <= 2


def test_lcm_without_per_sample_step_noise_is_refused():
    from histoaug.synthesis.sampling import SamplerSettings, denoise

    with pytest.raises(InvalidArgumentError, match="step-noise generator"):
        denoise(None, {}, torch.zeros(2, 4, 2, 2), torch.zeros(2, 1, 1), torch.zeros(1, 1, 1),
                SamplerSettings(steps=2, guidance=1.0, scheduler="lcm"))


def test_the_teachers_own_default_guidance_is_folded_in(teacher, tmp_path):
    import shutil

    from histoaug.synthesis.artifact_format import write_sampler_defaults
    from histoaug.synthesis.defaults import ModelSamplerDefaults

    guided_teacher = tmp_path / "teacher"
    shutil.copytree(teacher, guided_teacher)
    write_sampler_defaults(guided_teacher, ModelSamplerDefaults(10, 5.0, "dpmsolver++"))
    for name, extra, folded in (("own", (), 5.0), ("explicit", ("--guidance", "3"), 3.0)):
        out = tmp_path / name
        assert main(distill_args(guided_teacher, out, "--stop-at", "1", *extra)) == 0
        assert json.loads((out / "training_config.json").read_text())["config"]["guidance"] == folded
    # resuming without --guidance resolves to the same scale, so the run's config still matches
    assert main(distill_args(guided_teacher, tmp_path / "own", "--stop-at", "2", "--resume")) == 0
    assert len(losses(tmp_path / "own")) == 2


def test_prompts_follow_the_patch_labels(teacher):
    bank = PromptBank.load(teacher)
    labels = np.array([0, 1] * 50, dtype=np.uint8)
    ids = patch_prompt_ids(bank, labels, seed=0)
    assert all(bank[int(i)].label == int(label) for i, label in zip(ids, labels, strict=True))
    assert np.array_equal(ids, patch_prompt_ids(bank, labels, seed=0)) and len(set(ids.tolist())) == 4


def test_bad_settings_are_one_line_errors(teacher, tmp_path, capsys):
    assert main(distill_args(teacher, tmp_path / "a", "--student-steps", "60")) == 2
    assert "student-steps" in capsys.readouterr().err
    assert main(distill_args(tmp_path / "missing", tmp_path / "b")) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "teacher model" in err
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "x").write_text("occupied")
    assert main(distill_args(teacher, tmp_path / "c")) == 2
    assert "--overwrite" in capsys.readouterr().err
