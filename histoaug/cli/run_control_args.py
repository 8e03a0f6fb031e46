"""The flags ``train`` and ``train-vae`` share, defined once, with defaults read from each stage's config.

Flag destinations are the config's field names (``--no-X`` sets ``X`` to False), so
:func:`training_config_from_args` maps a parsed command line onto the config 1:1 and a
default lives only in the config dataclass.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
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


@dataclass(frozen=True)
class ConfigFlag:
    """A flag whose destination is a config field of the same name; its default is the config's."""

    flag: str
    help: str
    type: Callable[[str], Any] | None = None  # None: a store_true switch (``--no-X`` negates X)
    choices: tuple[str, ...] | None = None
    dest: str | None = None  # when the field is named otherwise than the flag
    metavar: str | None = None
    required: bool = False


def add_config_flags(parser: argparse.ArgumentParser, config: type, flags: tuple[ConfigFlag, ...]) -> None:
    """Add ``flags``; a default that is not None is the field's default in ``config`` and shown in the help."""
    defaults = {f.name: f.default for f in dataclasses.fields(config) if f.default is not dataclasses.MISSING}
    for item in flags:
        dest = item.dest or item.flag.lstrip("-").replace("-", "_")
        if item.type is None:
            parser.add_argument(item.flag, action="store_true", dest=dest, help=item.help)
            continue
        default = defaults.get(dest)
        parser.add_argument(item.flag, type=item.type, choices=item.choices, default=default, dest=dest,
                            metavar=item.metavar, required=item.required,
                            help=item.help if default is None else f"{item.help} (default: %(default)s)")


def add_training_arguments(parser: argparse.ArgumentParser, config: type, *, base_help: str, out_help: str,
                           batch_help: str, devices: tuple[str, ...], device_help: str) -> None:
    """DATA, --base, --out, --split, --steps, --batch-size, --lr, --lr-schedule, --warmup-steps,
    --no-augment, --device, --seed, --checkpoint-every and the run controls; defaults from ``config``."""
    parser.add_argument("data", help="PCam root, or 'sample' for the bundled sample")
    add_config_flags(parser, config, (
        ConfigFlag("--base", base_help, str),
        ConfigFlag("--out", out_help, str, required=True),
        ConfigFlag("--split", "split to train on", str),
        ConfigFlag("--steps", "optimizer steps", int),
        ConfigFlag("--batch-size", batch_help, int),
        ConfigFlag("--lr", "peak learning rate", float),
        ConfigFlag("--lr-schedule", "diffusers schedule name", str),
        ConfigFlag("--warmup-steps", "linear warm-up steps (default: 5%% of --steps, at most 500)", int),
        ConfigFlag("--no-augment", "no random flips / 90-degree rotations"),
        ConfigFlag("--device", device_help, str, choices=devices),
        ConfigFlag("--seed", "seed of data order, noise and preset weights", int),
        ConfigFlag("--checkpoint-every", "steps between checkpoints", int),
    ))
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
