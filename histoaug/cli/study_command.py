"""``histoaug study build|serve|score``: the paper's blinded reader study (a visual Turing test) and its scoring."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from histoaug.errors import InvalidArgumentError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "study",
        help="a blinded reader study (real or synthetic? healthy or tumour?) in the browser, and its scoring",
        description="The paper's reader study: `build` cuts a seeded, balanced, shuffled set of real and synthetic "
        "patches into a study folder (answer key kept apart), `serve` runs its reader page on 127.0.0.1 and stores "
        "each answer as it is given (the page in STUDY/reader/ also works opened from disk), `score` writes a "
        "report (sensitivity / specificity per reader, label accuracy, pairwise Cohen's kappa, agreed patches).",
    )
    commands = parser.add_subparsers(dest="study_command", metavar="STEP", parser_class=type(parser))
    parser.set_defaults(handler=lambda args: _missing_step(parser))

    build = commands.add_parser("build", help="make a study folder from real and synthetic PCam files")
    build.add_argument("--real", default="sample", metavar="ROOT[:SPLIT]",
                       help="real PCam root, or 'sample' (the bundled sample), with an optional split "
                       "(default: %(default)s, split test)")
    build.add_argument("--synthetic", action="append", default=[], metavar="[NAME=]FILE.h5", required=True,
                       help="synthetic PCam file from `histoaug generate` (repeatable; NAME defaults to the stem)")
    build.add_argument("--n", type=int, default=100, help="patches in all, a multiple of 4: half real, half "
                       "synthetic, each half half healthy, half tumour (default: %(default)s)")
    build.add_argument("--seed", type=int, default=0, help="seed of the choice, order and names (default: %(default)s)")
    build.add_argument("--display-size", type=int, default=384, help="patch size on screen in px, nearest-neighbour "
                       "upscaled from 96 (default: %(default)s)")
    build.add_argument("--title", default="Real or synthetic?", help="title of the reader's page")
    build.add_argument("--out", type=Path, required=True, metavar="STUDY", help="study folder to write")
    build.add_argument("--overwrite", action="store_true", help="replace an existing study folder (never one "
                       "holding answers)")
    build.set_defaults(handler=run_build)

    serve = commands.add_parser("serve", help="serve a study's reader page and store the answers")
    serve.add_argument("study", type=Path, metavar="STUDY")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s; "
                       "0.0.0.0 lets other machines in)")
    serve.add_argument("--port", type=int, default=8000, help="port (default: %(default)s; 0 = any free one)")
    serve.set_defaults(handler=run_serve)

    score = commands.add_parser("score", help="score the answers into a report")
    score.add_argument("study", type=Path, metavar="STUDY")
    score.add_argument("answers", nargs="*", type=Path, metavar="ANSWERS.json",
                       help="answer files exported from the page; the server's, in STUDY/answers/, are always read")
    score.add_argument("--out", type=Path, required=True, metavar="REPORT", help="report directory to write")
    score.add_argument("--overwrite", action="store_true", help="replace an existing report directory")
    score.add_argument("--eval-report", type=Path, metavar="DIR",
                       help="a `histoaug eval --out` report of the same synthetic sets, to link to")
    score.set_defaults(handler=run_score)


def _missing_step(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return 2


def _real_spec(text: str) -> tuple[str, str]:
    root, sep, split = text.rpartition(":")
    if sep and split in ("train", "valid", "test") and root:
        return root, split
    return text, "test"


def _sources(specs: list[str]) -> list:
    from histoaug.study.build import StudySource

    sources = []
    for spec in specs:
        name, sep, path = spec.partition("=")
        if sep and name and "/" not in name and not Path(spec).exists():
            entry = StudySource(name, Path(path))
        else:
            entry = StudySource(Path(spec).stem, Path(spec))
        if not entry.path.is_file():
            raise InvalidArgumentError(f"synthetic set {str(entry.path)!r}: no such file")
        sources.append(entry)
    return sources


def run_build(args: argparse.Namespace) -> int:
    from histoaug.sample import resolve_data_root
    from histoaug.study.build import BuildConfig, build_study

    root, split = _real_spec(args.real)
    config = BuildConfig(real_root=resolve_data_root(root), real_split=split, real_name=root, n=args.n,
                         seed=args.seed, display_size=args.display_size, title=args.title,
                         command_line=shlex.join(args.command_line))
    manifest = build_study(config, _sources(args.synthetic), args.out, overwrite=args.overwrite)
    counts = "; ".join(f"{name}: {c['healthy']} healthy, {c['tumour']} tumour"
                       for name, c in manifest["counts"].items())
    print(f"study {manifest['study_id']}: {manifest['n']} patches ({counts}) in {args.out}")
    print(f"readers: `histoaug study serve {shlex.quote(str(args.out))}`, or give them the folder "
          f"{args.out / 'reader'} (open index.html); never {args.out / 'key.json'}")
    return 0


def run_serve(args: argparse.Namespace) -> int:
    from histoaug.study.server import make_server

    server = make_server(args.study, args.host, args.port)
    print(f"serving study {server.study.study_id} at {server.url} (answers in {server.study.answers_dir}; "
          "Ctrl-C stops)", flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()
    return 0


def run_score(args: argparse.Namespace) -> int:
    from histoaug.study.report import write_study_report

    metrics = write_study_report(args.study, args.answers, args.out, overwrite=args.overwrite,
                                 eval_report=args.eval_report, command_line=shlex.join(args.command_line))
    for row in metrics["readers"]:
        if not row["complete"]:
            print(f"histoaug: warning: {row['reader']!r} answered {row['answered']} of {metrics['patches']} patches "
                  "(scored on those)", file=sys.stderr)

    def fmt(value: float | None) -> str:
        return "-" if value is None else f"{value:.3f}"

    kappa = metrics["kappa"]
    print(f"{len(metrics['readers'])} readers: median sensitivity {fmt(metrics['median_sensitivity'])}, "
          f"specificity {fmt(metrics['median_specificity'])}; label accuracy real "
          f"{fmt(metrics['label_accuracy']['real'])}, synthetic {fmt(metrics['label_accuracy']['synthetic'])}; "
          f"kappa real {fmt(kappa['real']['mean'])}, synthetic {fmt(kappa['synthetic']['mean'])}")
    print(f"report: {args.out / 'report.md'}")
    return 0
