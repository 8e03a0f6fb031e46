"""Entry point of the ``histoaug`` command: argument parsing and error handling.

Each subcommand lives in its own module exposing ``register(subparsers)``, which adds its
parser and sets ``handler`` (a function taking the parsed namespace and returning an exit
code). User errors (:class:`histoaug.errors.HistoaugError`) become one line on stderr and exit
code 2; anything else keeps its traceback because it is a bug.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence
from typing import NoReturn

from histoaug._version import __version__
from histoaug.errors import HistoaugError

# Subcommand modules in help order; each defines register(subparsers).
COMMAND_MODULES = (
    "histoaug.cli.info_command",
    "histoaug.cli.pcam_command",
    "histoaug.cli.generate_command",
    "histoaug.cli.prompts_command",
    "histoaug.cli.train_command",
    "histoaug.cli.train_vae_command",
    "histoaug.cli.distill_command",
    "histoaug.cli.eval_command",
    "histoaug.cli.study_command",
    "histoaug.cli.audit_command",
    "histoaug.cli.export_command",
    "histoaug.cli.bench_command",
)

USAGE_ERROR = 2


class OneLineParser(argparse.ArgumentParser):
    """ArgumentParser whose usage errors are a single line and exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(USAGE_ERROR, f"{self.prog}: error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="histoaug",
        description="Synthetic histopathology patches from latent diffusion models.",
    )
    parser.add_argument("--version", action="version", version=f"histoaug {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
    subparsers = parser.add_subparsers(
        dest="command", metavar="COMMAND", parser_class=OneLineParser
    )
    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.command_line = ["histoaug", *(sys.argv[1:] if argv is None else argv)]  # for provenance
    logging.basicConfig(
        level=logging.DEBUG if args.verbose > 1 else logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help(sys.stderr)
        return USAGE_ERROR
    try:
        return int(handler(args) or 0)
    except HistoaugError as exc:
        _clear_progress_bars()
        print(f"histoaug: error: {exc}", file=sys.stderr)
        return USAGE_ERROR
    except KeyboardInterrupt:
        print("histoaug: interrupted", file=sys.stderr)
        return 130


def _clear_progress_bars() -> None:
    """Erase progress bars still on screen, so an error is one line of its own, not glued to a bar."""
    from tqdm import tqdm

    for bar in list(getattr(tqdm, "_instances", ())):
        bar.leave = False
        bar.close()


if __name__ == "__main__":
    sys.exit(main())
