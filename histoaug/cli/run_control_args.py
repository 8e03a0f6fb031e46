"""The flags ``train`` and ``train-vae`` share, defined once, with defaults read from each stage's config.

Flag destinations are the config's field names (``--no-X`` sets ``X`` to False), so
:func:`training_config_from_args` maps a parsed command line onto the config 1:1 and a
default lives only in the config dataclass.
"""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any, TypeVar

ConfigT = TypeVar("ConfigT")


def add_run_control_arguments(parser: argparse.ArgumentParser) -> None:
    """--num-workers, --stop-at, --resume, --overwrite, --no-progress."""
    parser.add_argument("--num-workers", type=int, default=0, help="DataLoader workers (default: %(default)s)")
    parser.add_argument("--stop-at", type=int, default=None,
                        help="stop after this step (with a checkpoint); continue later with --resume")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def _defaults(config: type) -> dict[str, Any]:
    return {f.name: f.default for f in dataclasses.fields(config) if f.default is not dataclasses.MISSING}


def add_training_arguments(parser: argparse.ArgumentParser, config: type, *, base_help: str, out_help: str,
                           batch_help: str, devices: tuple[str, ...], device_help: str) -> None:
    """DATA, --base, --out, --split, --steps, --batch-size, --lr, --lr-schedule, --warmup-steps,
    --no-augment, --device, --seed, --checkpoint-every and the run controls; defaults from ``config``."""
    defaults = _defaults(config)
    parser.add_argument("data", help="PCam root, or 'sample' for the bundled sample")
    parser.add_argument("--base", default=defaults["base"], help=f"{base_help} (default: %(default)s)")
    parser.add_argument("--out", required=True, help=out_help)
    parser.add_argument("--split", default=defaults["split"], help="split to train on (default: %(default)s)")
    parser.add_argument("--steps", type=int, default=defaults["steps"], help="optimizer steps (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=defaults["batch_size"],
                        help=f"{batch_help} (default: %(default)s)")
    parser.add_argument("--lr", type=float, default=defaults["lr"], help="peak learning rate (default: %(default)s)")
    parser.add_argument("--lr-schedule", default=defaults["lr_schedule"],
                        help="diffusers schedule name (default: %(default)s)")
    parser.add_argument("--warmup-steps", type=int, default=None,
                        help="linear warm-up steps (default: 5%% of --steps, at most 500)")
    parser.add_argument("--no-augment", action="store_true", help="no random flips / 90-degree rotations")
    parser.add_argument("--device", choices=devices, default=defaults["device"],
                        help=f"{device_help} (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=defaults["seed"],
                        help="seed of data order, noise and preset weights (default: %(default)s)")
    parser.add_argument("--checkpoint-every", type=int, default=defaults["checkpoint_every"],
                        help="steps between checkpoints (default: %(default)s)")
    add_run_control_arguments(parser)


def training_config_from_args(config: type[ConfigT], args: argparse.Namespace) -> ConfigT:
    """The ``config`` dataclass from parsed flags: each field from the flag of its name (``--no-X``
    negated); fields without a flag keep their defaults."""
    values = {}
    for field in dataclasses.fields(config):
        if hasattr(args, field.name):
            values[field.name] = getattr(args, field.name)
        elif hasattr(args, f"no_{field.name}"):
            values[field.name] = not getattr(args, f"no_{field.name}")
    return config(**values)
