"""Training checkpoints in safetensors + JSON (no pickle), complete enough to resume exactly.

A checkpoint is a directory ``checkpoints/step-NNNNNNN/``:

``model.safetensors``      the trained model's weights (the UNet, or the VAE for the autoencoder stage)
``ema.safetensors``        EMA shadow weights (when EMA is on), keyed by parameter name
``optimizer.safetensors``  optimizer state tensors, keyed ``state/<param index>/<name>``
``rng.safetensors``        torch CPU (and CUDA) RNG states
``NAME.safetensors``       further modules the run updates (distillation's EMA target network)
``state.json``             step, optimizer param groups and scalar state, LR-scheduler state,
                           EMA counters, grad-scaler state
``preview.png``            samples of the model at this step (written by the trainer)

It is written atomically (:func:`histoaug.atomic_files.atomic_directory`, fsynced), so a
directory named ``step-*`` is complete.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from histoaug.atomic_files import atomic_directory
from histoaug.errors import ArtifactError

logger = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoints"
_NAME = re.compile(r"^step-(\d{7})$")


def checkpoint_name(step: int) -> str:
    return f"step-{step:07d}"


def list_checkpoints(out: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints under ``out/checkpoints``, oldest first."""
    folder = Path(out) / CHECKPOINT_DIR
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if p.is_dir() and (m := _NAME.match(p.name))]
    return sorted(found)


def _json_ready(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.item() if value.numel() == 1 else value.tolist()
    if isinstance(value, dict):
        return {str(k): _json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(v) for v in value]
    return value


def _clone(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}


@dataclass
class TrainingState:
    """Everything that changes during training and is needed to continue it."""

    step: int
    model: torch.nn.Module  # the module being trained (UNet or VAE)
    optimizer: torch.optim.Optimizer
    lr_scheduler: Any
    ema: Any | None = None  # diffusers.training_utils.EMAModel
    scaler: Any | None = None  # torch GradScaler (fp16)
    modules: dict[str, torch.nn.Module] | None = None  # further updated modules, saved as NAME.safetensors


def save_checkpoint(out: Path, state: TrainingState, *, keep: int | None = None) -> Path:
    """Write checkpoint ``state.step`` atomically; keep only the newest ``keep`` checkpoints."""
    final = Path(out) / CHECKPOINT_DIR / checkpoint_name(state.step)
    with atomic_directory(final, replace=True, durable=True) as staging:
        _write_checkpoint(staging, state)
    logger.info("checkpoint %s", final)
    if keep is not None and keep > 0:
        for _, old in list_checkpoints(out)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    return final


def _write_checkpoint(folder: Path, state: TrainingState) -> None:
    save_file(_clone(state.model.state_dict()), folder / "model.safetensors")
    for name, module in (state.modules or {}).items():
        save_file(_clone(module.state_dict()), folder / f"{name}.safetensors")

    names = [name for name, _ in state.model.named_parameters()]
    meta: dict[str, Any] = {"step": state.step, "format": "histoaug.checkpoint/1"}
    if state.ema is not None:
        ema_state = state.ema.state_dict()
        shadow = ema_state.pop("shadow_params")
        save_file(_clone(dict(zip(names, shadow, strict=True))), folder / "ema.safetensors")
        meta["ema"] = _json_ready(ema_state)

    opt = state.optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for index, entry in opt["state"].items():
        for key, value in entry.items():
            if isinstance(value, torch.Tensor):
                tensors[f"state/{index}/{key}"] = value
            else:
                scalars.setdefault(str(index), {})[key] = value
    save_file(_clone(tensors), folder / "optimizer.safetensors")
    meta["optimizer"] = {"param_groups": _json_ready(opt["param_groups"]), "scalars": _json_ready(scalars)}
    meta["lr_scheduler"] = _json_ready(state.lr_scheduler.state_dict())
    if state.scaler is not None:
        meta["scaler"] = _json_ready(state.scaler.state_dict())

    rng = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            rng[f"torch_cuda_{i}"] = s
    save_file(_clone(rng), folder / "rng.safetensors")
    (folder / "state.json").write_text(json.dumps(meta, indent=1) + "\n")


def load_checkpoint(path: Path, state: TrainingState) -> int:
    """Restore weights, optimizer, scheduler, EMA, scaler and RNG from ``path``; returns its step."""
    path = Path(path)
    try:
        meta = json.loads((path / "state.json").read_text())
        weights = load_file(path / "model.safetensors")
        opt_tensors = load_file(path / "optimizer.safetensors")
        rng = load_file(path / "rng.safetensors")
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"checkpoint {path} is incomplete or corrupt ({exc})") from exc
    model_device = next(state.model.parameters()).device
    missing, unexpected = state.model.load_state_dict(weights, strict=False)
    if missing or unexpected:
        raise ArtifactError(f"checkpoint {path} does not fit this model (missing {len(missing)}, "
                            f"unexpected {len(unexpected)} tensors)")
    for name, module in (state.modules or {}).items():
        try:
            tensors = load_file(path / f"{name}.safetensors")
        except (OSError, ValueError) as exc:
            raise ArtifactError(f"checkpoint {path} lacks its {name} weights ({exc})") from exc
        missing, unexpected = module.load_state_dict(tensors, strict=False)
        if missing or unexpected:
            raise ArtifactError(f"checkpoint {path}: {name} weights do not fit this model")
    opt_state: dict[int, dict[str, Any]] = {}
    for key, value in opt_tensors.items():
        _, index, name = key.split("/", 2)
        opt_state.setdefault(int(index), {})[name] = value
    for index, entries in meta["optimizer"]["scalars"].items():
        opt_state.setdefault(int(index), {}).update(entries)
    state.optimizer.load_state_dict({"state": opt_state, "param_groups": meta["optimizer"]["param_groups"]})
    state.lr_scheduler.load_state_dict(meta["lr_scheduler"])
    if state.ema is not None:
        if "ema" not in meta:
            raise ArtifactError(f"checkpoint {path} has no EMA weights but EMA is on")
        shadow = load_file(path / "ema.safetensors")
        names = [name for name, _ in state.model.named_parameters()]
        state.ema.load_state_dict({**meta["ema"], "shadow_params": [shadow[n] for n in names]})
        state.ema.to(model_device)
    if state.scaler is not None and "scaler" in meta:
        state.scaler.load_state_dict(meta["scaler"])
    torch.set_rng_state(rng["torch_cpu"])
    if torch.cuda.is_available():
        states = [rng[f"torch_cuda_{i}"] for i in range(torch.cuda.device_count()) if f"torch_cuda_{i}" in rng]
        if states:
            torch.cuda.set_rng_state_all(states)
    return int(meta["step"])
