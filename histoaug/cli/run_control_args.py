"""Flags that control how a training run executes (shared by ``train`` and ``train-vae``)."""

from __future__ import annotations

import argparse


def add_run_control_arguments(parser: argparse.ArgumentParser) -> None:
    """--num-workers, --stop-at, --resume, --overwrite, --no-progress."""
    parser.add_argument("--num-workers", type=int, default=0, help="DataLoader workers (default: %(default)s)")
    parser.add_argument("--stop-at", type=int, default=None,
                        help="stop after this step (with a checkpoint); continue later with --resume")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
