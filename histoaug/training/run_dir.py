"""A training run's output dir: resume checks, the run record, the step log, the final pipeline.

Shared by the UNet fine-tuning and the autoencoder stage, so both refuse to mix runs the same
way: an existing dir needs ``--resume`` (same defining settings and inputs) or ``--overwrite``.
"""

from __future__ import annotations

import json
import logging
import shutil
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from histoaug.atomic_files import publish, temporary_sibling, write_text
from histoaug.errors import ArtifactError, InvalidArgumentError, OutputExistsError, OutputWriteError
from histoaug.training.checkpoints import list_checkpoints
from histoaug.training.run_config import TrainingRunConfig

logger = logging.getLogger(__name__)

CONFIG_FILE = "training_config.json"
LOG_FILE = "train_log.jsonl"


def prepare_out(config: TrainingRunConfig, is_main: bool, inputs: dict[str, str]) -> Path | None:
    """Check/clear the output dir; returns the checkpoint to resume from, if any."""
    out = Path(config.out).expanduser()
    occupied = out.exists() and (not out.is_dir() or any(out.iterdir()))
    if not occupied:
        return None
    if config.overwrite:
        if is_main:
            shutil.rmtree(out) if out.is_dir() else out.unlink()
        return None
    if not config.resume:
        raise OutputExistsError(f"{out} exists; pass --resume to continue its training or --overwrite to replace it")
    saved = out / CONFIG_FILE
    if not saved.is_file():
        raise ArtifactError(f"{out} is not a histoaug training dir ({CONFIG_FILE} missing); cannot --resume")
    record = json.loads(saved.read_text())
    previous = record["config"]
    differing = sorted(k for k, v in config.defining().items() if _normalise(previous.get(k)) != _normalise(v))
    if "steps" in differing and isinstance(previous.get("steps"), int) and config.steps > previous["steps"]:
        _extend(config, previous["steps"], out)
        differing.remove("steps")
    if differing:
        changes = ", ".join(f"{k}: {previous.get(k)!r} -> {getattr(config, k)!r}" for k in differing)
        raise InvalidArgumentError(f"--resume with settings that differ from the run in {out} ({changes})")
    changed = sorted(k for k, v in inputs.items() if record.get("inputs", {}).get(k) != v)
    if changed:
        raise InvalidArgumentError(
            f"--resume with other data or prompts than the run in {out} ({', '.join(changed)} differ)"
        )
    checkpoints = list_checkpoints(out)
    if not checkpoints:
        logger.warning("%s has no checkpoint yet; starting from step 0", out)
        return None
    return checkpoints[-1][1]


def _extend(config: TrainingRunConfig, previous_steps: int, out: Path) -> None:
    """``--resume --steps M`` on a run of N < M steps: continue it to M steps, what users resume for.

    The warm-up keeps its original length (it is over, or ends where it would have); the cosine decay
    from the resume point on is that of a run of M steps, so the learning rate rises at the resume
    point and the weights differ from a run trained with M steps from the start (said in the log and
    kept in the run record's ``resumes``)."""
    if config.warmup_steps is None:
        config.warmup_steps = min(500, previous_steps // 20)  # the original run's effective warm-up
    logger.warning("extending %s from %d to %d steps: the learning-rate decay continues as for a %d-step run "
                   "(not identical to training %d steps from the start)", out, previous_steps, config.steps,
                   config.steps, config.steps)


def _normalise(value: Any) -> Any:
    return json.loads(json.dumps(value))


def write_run_record(out: Path, config: Any, command: list[str] | None, start_step: int,
                     inputs: dict[str, str]) -> None:
    """training_config.json (config, argv, inputs, versions; resumes appended) and the step log
    truncated to the resume point."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        import diffusers
        import transformers

        record = {
            "argv": command if command is not None else sys.argv,
            "config": asdict(config),
            "inputs": inputs,
            "versions": {"torch": torch.__version__, "diffusers": diffusers.__version__,
                         "transformers": transformers.__version__},
        }
        if start_step == 0 or not (out / CONFIG_FILE).exists():
            write_text(out / CONFIG_FILE, json.dumps(record, indent=2, default=str) + "\n")
        else:  # keep the original record; note the resume
            previous = json.loads((out / CONFIG_FILE).read_text())
            previous.setdefault("resumes", []).append({"step": start_step, "argv": record["argv"]})
            write_text(out / CONFIG_FILE, json.dumps(previous, indent=2, default=str) + "\n")
        log_path = out / LOG_FILE
        kept = []
        if log_path.exists():
            kept = [line for line in log_path.read_text().splitlines()
                    if line.strip() and json.loads(line)["step"] <= start_step]
        write_text(log_path, "".join(line + "\n" for line in kept))
    except OSError as exc:
        raise OutputWriteError(f"cannot write to {out}: {exc}") from exc


def save_pipeline_into(pipe: Any, out: Path) -> None:
    """save_pretrained to a side dir, move the parts in, model_index.json last (completeness marker)."""
    try:
        staging = temporary_sibling(out / "pipeline", directory=True)
        try:
            pipe.to("cpu")
            pipe.save_pretrained(staging, safe_serialization=True)
            for entry in sorted(staging.iterdir(), key=lambda p: p.name == "model_index.json"):
                publish(entry, out / entry.name, replace=True, durable=True)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    except OSError as exc:
        raise OutputWriteError(f"cannot write the trained pipeline to {out}: {exc}") from exc
    logger.info("wrote trained pipeline to %s", out)
