"""Fine-tuning a tiny SD pipeline on the bundled sample: loss, outputs, exact resume, errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from training_models import save_tiny_vit

from histoaug import PCam, sample_root
from histoaug.cli.main import main
from histoaug.prompts import PromptBank
from histoaug.training import PromptBuildConfig, build_prompts
from histoaug.training.batches import BatchPlan, StepBatches, augment
from histoaug.training.checkpoints import list_checkpoints

STEPS = 32


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def prompts_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("train_prompts")
    vit = save_tiny_vit(root / "vit")
    build_prompts(PromptBuildConfig(data="sample", out=str(root / "prompts"), embedder=str(vit), clusters=4,
                                    cache_dir=str(root / "cache"), progress=False))
    return root / "prompts"


def train_args(prompts_dir, out, *extra):
    return ["train", "sample", "--prompts", str(prompts_dir), "--base", "tiny", "--out", str(out),
            "--steps", str(STEPS), "--batch-size", "4", "--lr", "2e-3", "--warmup-steps", "2",
            "--ema-decay", "0.9", "--checkpoint-every", "16", "--preview-per-label", "2", "--preview-steps", "2",
            "--no-progress", *extra]


@pytest.fixture(scope="module")
def straight(prompts_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("straight") / "model"
    assert main(train_args(prompts_dir, out)) == 0
    return out


def losses(out):
    return [json.loads(line)["loss"] for line in (out / "train_log.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_training_decreases_the_loss(straight):
    curve = losses(straight)
    assert len(curve) == STEPS and all(np.isfinite(curve))
    assert np.mean(curve[-4:]) < 0.8 * np.mean(curve[:4]), curve


@pytest.mark.slow
def test_output_is_a_diffusers_pipeline_with_prompts(straight, prompts_dir):
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(straight, safety_checker=None, requires_safety_checker=False)
    assert pipe.unet.config.sample_size == 16
    assert PromptBank.load(straight).texts == PromptBank.load(prompts_dir).texts
    # the final UNet holds the EMA weights of the last checkpoint
    final = load_file(straight / "unet" / "diffusion_pytorch_model.safetensors")
    (_, last), = [c for c in list_checkpoints(straight) if c[0] == STEPS]
    ema = load_file(last / "ema.safetensors")
    assert set(ema) <= set(final) and all((final[k] == ema[k]).all() for k in ema)
    raw = load_file(last / "model.safetensors")
    assert any(not (raw[k] == ema[k]).all() for k in ema)
    record = json.loads((straight / "training_config.json").read_text())
    assert record["argv"] and record["config"]["steps"] == STEPS and record["config"]["base"] == "tiny"
    assert (straight / "preview.png").is_file() and (last / "preview.png").is_file()
    weights = [p.name for p in straight.rglob("*") if p.suffix in {".bin", ".pt", ".pth", ".pkl", ".ckpt"}]
    assert weights == []  # safetensors only


@pytest.mark.slow
def test_resume_reproduces_the_uninterrupted_run(straight, prompts_dir, tmp_path, capsys):
    out = tmp_path / "model"
    assert main(train_args(prompts_dir, out, "--stop-at", str(STEPS // 2))) == 0
    assert "continue with --resume" in capsys.readouterr().out
    assert not (out / "model_index.json").exists()
    assert main(train_args(prompts_dir, out)) == 2  # exists, no --resume
    assert "--resume" in capsys.readouterr().err
    # resumed with DataLoader workers: the worker count does not change the batches
    assert main(train_args(prompts_dir, out, "--resume", "--num-workers", "2")) == 0
    assert losses(out) == losses(straight)
    for part in ("unet/diffusion_pytorch_model.safetensors",
                 f"checkpoints/step-{STEPS:07d}/model.safetensors",
                 f"checkpoints/step-{STEPS:07d}/optimizer.safetensors"):
        a, b = load_file(out / part), load_file(straight / part)
        assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a), part


@pytest.mark.slow
def test_trained_model_loads_in_the_synthesizer(straight):
    import histoaug

    synthesizer = histoaug.load_synthesizer(straight, backend="torch", device="cpu")
    assert len(synthesizer.prompts) == 8
    images = synthesizer.generate(labels=[0, 1], seeds=[0, 1], steps=2)
    assert images.shape == (2, 96, 96, 3) and images.dtype == np.uint8


@pytest.mark.slow
def test_trained_model_is_accepted_by_export(straight, tmp_path):
    assert main(["export", "--format", "diffusers", str(straight), str(tmp_path / "exported")]) == 0
    assert PromptBank.load(tmp_path / "exported").texts == PromptBank.load(straight).texts


def test_resume_refuses_changed_settings(straight, prompts_dir, capsys):
    args = train_args(prompts_dir, straight, "--resume")
    args[args.index("--lr") + 1] = "1e-3"
    assert main(args) == 2
    assert "differ" in capsys.readouterr().err


def test_resume_extends_a_finished_run_to_more_steps(prompts_dir, tmp_path, capsys):
    """What users resume for: a finished run continued to more steps (fewer are refused)."""
    out = tmp_path / "model"
    short = train_args(prompts_dir, out, "--preview-per-label", "0")
    short[short.index("--steps") + 1] = "4"
    assert main(short) == 0
    longer = [*short, "--resume"]
    longer[longer.index("--steps") + 1] = "6"
    assert main(longer) == 0
    assert len(losses(out)) == 6
    record = json.loads((out / "training_config.json").read_text())
    assert record["resumes"][-1]["step"] == 4
    fewer = [*short, "--resume"]
    fewer[fewer.index("--steps") + 1] = "3"
    capsys.readouterr()
    assert main(fewer) == 2
    assert "differ" in capsys.readouterr().err


# --- batches --------------------------------------------------------------------------------------
def test_batches_depend_only_on_seed_and_step():
    data = PCam(sample_root(), "train")
    ids = np.arange(len(data)) % 3
    epoch = 128  # plan over the first 128 patches: 4 steps x 2 ranks x 16 is one epoch
    plans = [BatchPlan(n=epoch, batch_size=16, seed=5, world=2, rank=r) for r in (0, 1)]
    batches = StepBatches(data, ids, plans[0])
    later, first = batches[3], batches[0]
    again = StepBatches(data, ids, plans[0])[3]  # fresh object, other access order
    assert all((later[k] == again[k]).all() for k in later)
    assert not (first["positions"] == later["positions"]).any()
    # one epoch over both ranks visits every patch once
    seen = np.concatenate([p.indices(p.positions(k)) for k in range(4) for p in plans])
    assert sorted(seen.tolist()) == list(range(epoch))
    image = data.read_images([0])[0]
    assert {augment(image, 5, g).tobytes() for g in range(64)} >= {image.tobytes()}


# --- errors ---------------------------------------------------------------------------------------
def test_base_dir_without_unet(prompts_dir, tmp_path, capsys):
    (tmp_path / "base").mkdir()
    (tmp_path / "base" / "model_index.json").write_text("{}")
    args = train_args(prompts_dir, tmp_path / "out")
    args[args.index("--base") + 1] = str(tmp_path / "base")
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "has no unet/config.json" in err and err.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_missing_data_files(prompts_dir, tmp_path, capsys):
    args = train_args(prompts_dir, tmp_path / "out")
    args[1] = str(tmp_path / "nowhere")
    assert main(args) == 2
    assert "does not exist" in capsys.readouterr().err


def test_prompts_built_for_other_data(tmp_path, capsys):
    other = tmp_path / "valid_prompts"
    assert main(["prompts", "build", "sample", "--kind", "baseline", "--split", "valid", "--out", str(other)]) == 0
    assert main(train_args(other, tmp_path / "out")) == 2
    assert "rebuild it" in capsys.readouterr().err


def test_mixed_precision_needs_a_gpu(prompts_dir, tmp_path, capsys):
    assert main([*train_args(prompts_dir, tmp_path / "out"), "--mixed-precision", "fp16", "--device", "cpu"]) == 2
    assert "needs a GPU" in capsys.readouterr().err


def test_resume_refuses_other_prompts(straight, tmp_path, capsys):
    other = tmp_path / "baseline"
    assert main(["prompts", "build", "sample", "--kind", "baseline", "--out", str(other)]) == 0
    assert main(train_args(other, straight, "--resume")) == 2
    assert "other data or prompts" in capsys.readouterr().err


def test_gradient_checkpointing_and_accumulation_give_the_same_training(prompts_dir, tmp_path):
    extra = ["--grad-accum", "2", "--preview-per-label", "0", "--checkpoint-every", "3"]
    runs = {}
    for name, flags in {"plain": [], "checkpointed": ["--gradient-checkpointing"]}.items():
        args = train_args(prompts_dir, tmp_path / name, *extra, *flags)
        args[args.index("--steps") + 1] = "3"
        assert main(args) == 0
        runs[name] = tmp_path / name
    assert losses(runs["plain"]) == losses(runs["checkpointed"])
    a, b = (load_file(runs[n] / "unet" / "diffusion_pytorch_model.safetensors") for n in runs)
    assert all(np.allclose(a[k].numpy(), b[k].numpy(), atol=1e-6) for k in a)
    record = json.loads((runs["checkpointed"] / "training_config.json").read_text())
    assert record["config"]["gradient_checkpointing"] and record["config"]["grad_accum"] == 2


def test_bf16_mixed_precision_keeps_frozen_parts_exact(prompts_dir, tmp_path):
    from histoaug.models import build_pipeline

    args = train_args(prompts_dir, tmp_path / "bf16", "--mixed-precision", "bf16", "--device", "cpu",
                      "--preview-per-label", "1")
    args[args.index("--steps") + 1] = "3"
    assert main(args) == 0
    assert all(np.isfinite(losses(tmp_path / "bf16")))
    vae = load_file(tmp_path / "bf16" / "vae" / "diffusion_pytorch_model.safetensors")
    reference = build_pipeline("tiny", seed=0).vae.state_dict()
    assert all((vae[k] == reference[k]).all() for k in reference)  # frozen, saved in float32, not rounded
    unet = load_file(tmp_path / "bf16" / "unet" / "diffusion_pytorch_model.safetensors")
    assert {v.dtype for v in unet.values()} == {torch.float32}


def test_batches_are_the_same_through_dataloader_workers():
    data = PCam(sample_root(), "train")
    batches = StepBatches(data, np.zeros(len(data), dtype=np.int64), BatchPlan(n=len(data), batch_size=8, seed=1))
    loader = torch.utils.data.DataLoader(batches, batch_size=None, sampler=range(2, 8), num_workers=2)
    for k, item in zip(range(2, 8), loader, strict=True):
        direct = batches[k]
        assert all((item[key] == direct[key]).all() for key in direct)


def test_resolution_must_fit_the_model(prompts_dir, tmp_path, capsys):
    assert main([*train_args(prompts_dir, tmp_path / "out"), "--resolution", "36"]) == 2
    assert "multiple of 8" in capsys.readouterr().err


@pytest.mark.slow
def test_two_processes_match_one_process(prompts_dir, tmp_path):
    """torchrun DDP on 2 CPU processes with batch 4 == 1 process with batch 8 (same samples and noise)."""
    import os
    import subprocess
    import sys

    def args(out, batch):
        a = train_args(prompts_dir, out, "--device", "cpu", "--preview-per-label", "0")
        a[a.index("--steps") + 1] = "4"
        a[a.index("--batch-size") + 1] = str(batch)
        return a

    # Each rank reports whether DDP's wrapper is still alive when the process group is destroyed:
    # freed later, its reducer ended the gloo group with the GIL held and a rank hung at exit.
    entry = tmp_path / "train_entry.py"
    entry.write_text(
        "import gc, sys, accelerate, torch\n"
        "end = accelerate.Accelerator.end_training\n"
        "def spy(self):\n"
        "    alive = sum(isinstance(o, torch.nn.parallel.DistributedDataParallel) for o in gc.get_objects())\n"
        "    print('DDP wrappers alive at end_training:', alive, flush=True)\n"
        "    return end(self)\n"
        "accelerate.Accelerator.end_training = spy\n"
        "from histoaug.cli.main import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    # started at the repository root with the root on every rank's sys.path, as `python -m` there
    # does: no top-level folder of the repository may shadow what the ranks import
    repository_root = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONPATH": repository_root}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               str(entry), *args(tmp_path / "ddp", 4)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=540, cwd=repository_root)
    assert done.returncode == 0, f"torchrun exit {done.returncode}\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}"
    assert done.stdout.count("DDP wrappers alive at end_training: 0") == 2, done.stdout[-2000:]
    assert main(args(tmp_path / "single", 8)) == 0
    np.testing.assert_allclose(losses(tmp_path / "ddp"), losses(tmp_path / "single"), rtol=1e-6)
    a, b = (load_file(tmp_path / n / "unet" / "diffusion_pytorch_model.safetensors") for n in ("ddp", "single"))
    assert all(np.allclose(a[k].numpy(), b[k].numpy(), atol=1e-6) for k in a)


def test_default_warmup_leaves_room_for_the_cosine_decay():
    from histoaug.errors import InvalidArgumentError
    from histoaug.training.finetune import TrainConfig

    assert TrainConfig(data="sample", prompts="p", out="o", steps=120).effective_warmup_steps == 6
    assert TrainConfig(data="sample", prompts="p", out="o", steps=100_000).effective_warmup_steps == 500
    assert TrainConfig(data="sample", prompts="p", out="o", steps=120, warmup_steps=0).effective_warmup_steps == 0
    with pytest.raises(InvalidArgumentError, match="below --steps"):
        TrainConfig(data="sample", prompts="p", out="o", steps=120, warmup_steps=120).validate()


def test_train_and_train_vae_flags_map_onto_their_configs():
    """One definition of the shared flags, defaults read from the configs: parsing the defaults
    gives the config's defaults, and each flag lands on the field of its name."""
    from histoaug.cli.main import build_parser
    from histoaug.cli.run_control_args import training_config_from_args
    from histoaug.training.run_config import AutoencoderTrainConfig, TrainConfig

    parser = build_parser()
    args = parser.parse_args(["train", "sample", "--prompts", "p", "--out", "o"])
    assert training_config_from_args(TrainConfig, args) == TrainConfig(data="sample", prompts="p", out="o")
    args = parser.parse_args(["train", "sample", "--prompts", "p", "--out", "o", "--no-ema", "--no-augment",
                              "--keep-checkpoints", "5", "--steps", "7", "--resume", "--mixed-precision", "bf16"])
    assert training_config_from_args(TrainConfig, args) == TrainConfig(
        data="sample", prompts="p", out="o", ema=False, augment=False, checkpoints_total_limit=5, steps=7,
        resume=True, mixed_precision="bf16")
    args = parser.parse_args(["train-vae", "sample", "--out", "o"])
    assert training_config_from_args(AutoencoderTrainConfig, args) == AutoencoderTrainConfig(data="sample", out="o")
    args = parser.parse_args(["train-vae", "sample", "--out", "o", "--decoder-only", "--device", "cpu",
                              "--no-progress", "--kl-weight", "0.5"])
    assert training_config_from_args(AutoencoderTrainConfig, args) == AutoencoderTrainConfig(
        data="sample", out="o", decoder_only=True, device="cpu", progress=False, kl_weight=0.5)


# --- --train-text-encoder -------------------------------------------------------------------------
def _prompt_embeddings(model_dir):
    from transformers import CLIPTextModel, CLIPTokenizer

    tokenizer = CLIPTokenizer.from_pretrained(model_dir / "tokenizer")
    encoder = CLIPTextModel.from_pretrained(model_dir / "text_encoder")
    tokens = tokenizer(PromptBank.load(model_dir).texts, padding="max_length",
                       max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt").input_ids
    with torch.no_grad():
        return encoder(tokens)[0].flatten(1)


@pytest.mark.slow
def test_train_text_encoder_trains_it_and_resumes_exactly(straight, prompts_dir, tmp_path):
    joint = tmp_path / "joint"
    assert main(train_args(prompts_dir, joint, "--train-text-encoder")) == 0
    record = json.loads((joint / "training_config.json").read_text())
    assert record["config"]["train_text_encoder"] is True
    frozen = load_file(straight / "text_encoder" / "model.safetensors")
    trained = load_file(joint / "text_encoder" / "model.safetensors")
    assert frozen.keys() == trained.keys() and any(not torch.equal(frozen[k], trained[k]) for k in frozen)
    # the checkpoint covers both parts (EMA included), so a resume continues exactly
    (_, last), = [c for c in list_checkpoints(joint) if c[0] == STEPS]
    ema = load_file(last / "ema.safetensors")
    assert any(k.startswith("text_encoder.") for k in ema) and any(k.startswith("unet.") for k in ema)
    final_te = {f"text_encoder.{k}": v for k, v in trained.items()}
    assert all(torch.equal(final_te[k], ema[k]) for k in ema if k in final_te)  # the saved encoder is the EMA one
    resumed = tmp_path / "resumed"
    assert main(train_args(prompts_dir, resumed, "--train-text-encoder", "--stop-at", str(STEPS // 2))) == 0
    assert main(train_args(prompts_dir, resumed, "--train-text-encoder", "--resume")) == 0
    assert losses(resumed) == losses(joint)
    for part in ("unet/diffusion_pytorch_model.safetensors", "text_encoder/model.safetensors"):
        a, b = load_file(resumed / part), load_file(joint / part)
        assert all(torch.equal(a[k], b[k]) for k in a), part
    # the prompt embeddings (computed on load from the saved encoder) are the trained encoder's
    assert not torch.allclose(_prompt_embeddings(joint), _prompt_embeddings(straight))
    # and the model loads and generates
    import histoaug

    images = histoaug.load_synthesizer(joint, backend="torch", device="cpu").generate(labels=[0, 1], seeds=[0, 1],
                                                                                      steps=2)
    assert images.shape == (2, 96, 96, 3)


def test_train_text_encoder_refuses_a_changed_setting_on_resume(straight, prompts_dir, capsys):
    assert main(train_args(prompts_dir, straight, "--resume", "--train-text-encoder")) == 2
    assert "differ" in capsys.readouterr().err
