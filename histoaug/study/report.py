"""``histoaug study score``'s report: report.md, metrics.json and PNG figures, written atomically.

Like ``histoaug eval``'s report (:mod:`histoaug.evaluation.report`): one directory, appearing
whole or not at all, kept unless ``overwrite``. With ``eval_report`` (a ``histoaug eval --out``
directory on the same synthetic sets), the report links to it and puts the machine's two-sample
test next to the readers' numbers.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from histoaug._version import __version__
from histoaug.atomic_files import atomic_directory
from histoaug.errors import OutputExistsError, StudyError
from histoaug.study.answers import AnswerFile, read_answer_file, stored_answer_files
from histoaug.study.layout import Study, load_study
from histoaug.study.scoring import ScoredPatch, most_agreed, patch_agreement, score_study

logger = logging.getLogger(__name__)

GRID_PATCHES = 6


def collect_answers(study: Study, paths: list[Path]) -> list[AnswerFile]:
    """The server's stored answers (``STUDY/answers/``) and the given files, each file once."""
    seen, files = set(), []
    for path in [*stored_answer_files(study), *paths]:
        resolved = Path(path).resolve()
        if resolved in seen:
            continue
        seen.add(resolved)
        files.append(read_answer_file(Path(path), study))
    return files


def _eval_link(eval_report: Path, out: Path) -> dict[str, Any]:
    metrics_path = eval_report / "metrics.json"
    try:
        metrics = json.loads(metrics_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise StudyError(f"--eval-report {eval_report}: no readable metrics.json of `histoaug eval` ({exc})") from None
    c2st = metrics.get("two_sample_test") or {}
    return {"path": str(eval_report), "report": os.path.relpath((eval_report / "report.md").resolve(), out.resolve()),
            "two_sample_auc": {name: entry.get("auc") for name, entry in c2st.items()},
            "two_sample_reference_auc": (metrics.get("two_sample_reference") or {}).get("auc")}


def write_study_report(study_root: str | Path, answer_paths: list[Path], out: str | Path, *, overwrite: bool = False,
                       eval_report: Path | None = None, command_line: str = "") -> dict[str, Any]:
    """Score the study's answers and write ``out/`` (report.md, metrics.json, figures/) atomically."""
    from histoaug.study import figures
    from histoaug.study.report_markdown import render_markdown

    out = Path(out)
    if out.exists() and not overwrite:
        raise OutputExistsError(f"{out} exists; pass --overwrite to replace it")
    study = load_study(study_root)
    files = collect_answers(study, list(answer_paths))
    metrics = score_study(study, files)
    metrics.update(histoaug_version=__version__, command_line=command_line, study=str(study.root),
                   manifest={key: study.manifest.get(key) for key in ("n", "seed", "display_size", "real",
                                                                       "synthetic", "counts")})
    if eval_report is not None:
        metrics["eval_report"] = _eval_link(Path(eval_report), out)
    scored = patch_agreement(study, files)
    grid_rows: list[tuple[str, list[ScoredPatch]]] = []
    for source in ("real", "synthetic"):
        for outcome, name in (("TP", "true positives"), ("FP", "false positives")):
            grid_rows.append((f"{source}: {name}", most_agreed(scored, source, outcome, GRID_PATCHES)))
    with atomic_directory(out, replace=overwrite) as staging:
        (staging / "figures").mkdir()
        figures.kappa_figure(metrics["kappa"], staging / "figures" / "kappa.png")
        figures.readers_figure(metrics["readers"], (metrics["median_sensitivity"], metrics["median_specificity"]),
                               staging / "figures" / "readers.png")
        figures.agreement_grid(grid_rows, study.patch_path, staging / "figures" / "agreed_patches.png",
                               per_row=GRID_PATCHES)
        metrics["figures"] = {"kappa": "figures/kappa.png", "readers": "figures/readers.png",
                              "agreed_patches": "figures/agreed_patches.png"}
        metrics["agreed_patches"] = {caption: [item.patch for item in items] for caption, items in grid_rows}
        (staging / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
        (staging / "report.md").write_text(render_markdown(metrics), encoding="utf-8")
    logger.info("study report: %s", out)
    return metrics
