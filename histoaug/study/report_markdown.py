"""``report.md`` of a scored study. Names typed by readers are escaped (no HTML, no Markdown markup)."""

from __future__ import annotations

import html
import re
from typing import Any
from urllib.parse import quote

_MARKDOWN = re.compile(r"([\\`*_{}\[\]()#+\-.!|~>])")


def escape(text: str) -> str:
    """Plain text for Markdown: HTML entities for <, >, &, backslashes before Markdown punctuation."""
    return _MARKDOWN.sub(r"\\\1", html.escape(str(text), quote=False)).replace("\n", " ")


def code(text: str) -> str:
    """A code span: shown literally by Markdown (backticks inside become quotes, so it cannot be closed early)."""
    return "`" + str(text).replace("`", "'").replace("\n", " ") + "`"


def _fmt(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(["---"] + ["---:"] * (len(header) - 1)) + " |"]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def render_markdown(metrics: dict[str, Any]) -> str:
    """The whole report as Markdown (figures referenced relative to the report directory)."""
    manifest = metrics["manifest"]
    real = manifest["real"]
    sets = ", ".join(f"{escape(entry['name'])} ({code(entry['path'])})" for entry in manifest["synthetic"])
    by_source = metrics["patches_by_source"]
    lines = ["# histoaug reader study report", "",
             f"histoaug {metrics['histoaug_version']}. Study `{metrics['study_id']}` ({code(metrics['study'])}): "
             f"{metrics['patches']} patches, {by_source['real']} real ({code(real['root'])}, split "
             f"{escape(real['split'])}) and {by_source['synthetic']} synthetic ({sets}), labels balanced within each, "
             f"seed {manifest['seed']}, shown at {manifest['display_size']} px (nearest neighbour). "
             f"{len(metrics['readers'])} readers. Command: {code(metrics['command_line'] or '(API call)')}", ""]
    if metrics["incomplete_readers"]:
        rows = [row for row in metrics["readers"] if not row["complete"]]
        lines += ["**Incomplete answer files** (scored on the patches they answer): " + "; ".join(
            f"{escape(row['reader'])}: {row['answered']} of {metrics['patches']}" for row in rows) + ".", ""]
    lines += ["## Telling real from synthetic", "",
              "Sensitivity: synthetic patches called synthetic; specificity: real patches called real. Chance is "
              "0.5 / 0.5 (the paper's pathologists: median 0.55 / 0.55). Label accuracy: healthy / tumour decisions "
              "against the patch's label (for synthetic patches, the label it was generated for).", ""]
    rows = [[escape(row["reader"]), f"{row['answered']}/{metrics['patches']}", _fmt(row["sensitivity"]),
             _fmt(row["specificity"]), _fmt(row["label_accuracy_real"]), _fmt(row["label_accuracy_synthetic"]),
             _fmt(row["mean_confidence"], 2)] for row in metrics["readers"]]
    label = metrics["label_accuracy"]
    rows.append(["**median over readers**", "", _fmt(metrics["median_sensitivity"]),
                 _fmt(metrics["median_specificity"]), _fmt(label["median_real"]), _fmt(label["median_synthetic"]), ""])
    rows.append(["all answers pooled", "", "", "", _fmt(label["real"]), _fmt(label["synthetic"]), ""])
    lines += [*_table(["reader", "answered", "sensitivity", "specificity", "label accuracy (real)",
                       "label accuracy (synthetic)", "mean confidence (1-3)"], rows), "",
              f"![readers]({metrics['figures']['readers']})", ""]
    set_rows = [[escape(name), str(entry["patches"]), str(entry["answers"]), _fmt(entry["called_synthetic"]),
                 _fmt(entry["label_accuracy"])] for name, entry in metrics["per_set"].items()]
    lines += ["Per set (all readers' answers pooled):", "",
              *_table(["set", "patches", "answers", "called synthetic", "label accuracy"], set_rows), ""]
    if "eval_report" in metrics:
        link = metrics["eval_report"]
        aucs = ", ".join(f"{escape(name)} {_fmt(auc)}" for name, auc in link["two_sample_auc"].items())
        target = quote(link["report"])
        target = quote(link["report"])
        lines += [f"The machine's view, from the `histoaug eval` report [{escape(link['path'])}]({target}): "
                  f"classifier two-sample test AUC {aucs or '-'} (real train vs real test reference "
                  f"{_fmt(link['two_sample_reference_auc'])}); 0.5 = indistinguishable, as for the readers.", ""]
    lines += ["## Agreement between readers", "",
              "Pairwise Cohen's kappa (scikit-learn's `cohen_kappa_score`) of the healthy / tumour decisions, on the "
              "real and on the synthetic patches separately, over the patches both readers answered; mean and sample "
              "standard deviation over reader pairs. '-': undefined (fewer than two shared patches, or both readers "
              "gave one label only).", ""]
    krows = []
    for source in ("real", "synthetic"):
        entry = metrics["kappa"][source]
        krows.append([source, _fmt(entry["mean"]), _fmt(entry["std"]), f"{entry['defined_pairs']} of {entry['pairs']}"])
    lines += [*_table(["patches", "mean kappa", "SD", "pairs"], krows), "",
              f"![kappa heatmaps]({metrics['figures']['kappa']})", "",
              "## The most agreed patches", "",
              "True positives: tumour patches the majority called tumour; false positives: healthy patches the "
              "majority called tumour; each row sorted by agreement (share of readers behind the majority label). "
              "Per-patch agreement of every patch is in `metrics.json` (`per_patch`).", "",
              f"![most agreed true and false positives]({metrics['figures']['agreed_patches']})", ""]
    return "\n".join(lines)
