"""``report.md`` of ``histoaug audit`` from its metrics: the verdict, the calibration, the breakdowns, the figures."""

from __future__ import annotations

from typing import Any

from histoaug.evaluation.report_markdown import _fmt, _table

MAX_PROMPT_ROWS = 24


def _interval(rate: dict[str, Any], digits: int = 4) -> str:
    return f"{rate['rate']:.{digits}f} [{rate['low']:.{digits}f}, {rate['high']:.{digits}f}]"


def _verdict(entry: dict[str, Any], thresholds: dict[str, Any], confidence: int) -> str:
    copies = entry["copies"]
    if copies["copies"] == 0:
        return (f"**No near-copies**: none of the {copies['items']} patches has an aligned detail correlation above "
                f"{thresholds['correlation']:.3f} with any training patch (copy rate 0, {confidence}% upper bound "
                f"{copies['high']:.4f}).")
    return (f"**{copies['copies']} near-copies** of {copies['items']} patches: copy rate "
            f"{_interval(copies)} ({confidence}% Clopper-Pearson interval).")


def _set_section(entry: dict[str, Any], metrics: dict[str, Any], confidence: int) -> list[str]:
    thresholds = metrics["thresholds"]
    reference = metrics["reference"]
    lines = [f"## {entry['name']}", "", f"`{entry['path']}`, {entry['items']} patches (label 0: "
             f"{entry['labels']['0']}, label 1: {entry['labels']['1']}).", "", _verdict(entry, thresholds, confidence),
             ""]
    dist, ref = entry["distributions"], reference["distributions"]
    rows = [
        ["best aligned detail correlation r: median / p99 / max",
         *(f"{d['correlation']['median']:.3f} / {d['correlation']['p99']:.3f} / {d['correlation']['max']:.3f}"
           for d in (dist, ref))],
        ["second-best training patch: median correlation",
         *(_fmt(d["second_correlation"]["median"]) for d in (dist, ref))],
        ["nearest / second-nearest pixel distance (1 - r): median / min",
         *(f"{d['pixel_ratio']['median']:.3f} / {d['pixel_ratio']['min']:.3f}" for d in (dist, ref))],
        ["nearest feature distance: min / median",
         *(f"{d['feature_distance']['min']:.3f} / {d['feature_distance']['median']:.3f}" for d in (dist, ref))],
        ["nearest / second-nearest feature distance: median",
         *(_fmt(d["feature_ratio"]["median"]) for d in (dist, ref))],
        ["near-copies (pixel rule)", _interval(entry["copies"]), _interval(reference["copies_at_threshold"])],
        [f"feature-only rule: closer than the reference's {thresholds['quantile']:g} quantile (look-alikes, not a "
         "verdict)", _interval(entry["feature_only"]), "-"],
    ]
    lines += [*_table(["", entry["name"], f"reference ({reference['root']})"], rows), ""]
    lines += ["Per label:", ""]
    lines += [*_table(["label", "patches", "near-copies", f"rate [{confidence}% interval]"],
                      [[str(row["label"]), str(row["items"]), str(row["copies"]), _interval(row)]
                       for row in entry["by_label"]]), ""]
    if entry["by_prompt"] is not None:
        shown = entry["by_prompt"][:MAX_PROMPT_ROWS]
        more = len(entry["by_prompt"]) - len(shown)
        lines += [f"Per prompt (highest copy rate first{f'; {more} more in metrics.json' if more else ''}):", ""]
        lines += [*_table(["prompt id", "label", "patches", "near-copies", f"rate [{confidence}% interval]"],
                          [[str(row["prompt_id"]), str(row["label"]), str(row["items"]), str(row["copies"]),
                            _interval(row)] for row in shown]), ""]
    else:
        lines += ["Per prompt: the file has no `prompt_id` dataset.", ""]
    lines += [f"Closest pairs (synthetic left, its best-matching training patch right; r = aligned correlation, "
              f"the transform that aligns the synthetic patch; every patch's match is in `{entry['matches_csv']}`):",
              "", f"![closest pairs]({entry['figures']['pairs']})", "",
              f"![distance histograms]({entry['figures']['histograms']})", ""]
    return lines


def render_audit_markdown(metrics: dict[str, Any]) -> str:
    """The whole audit report as Markdown (figures referenced relative to the report directory)."""
    thresholds, search, features = metrics["thresholds"], metrics["search"], metrics["features"]
    train, reference = metrics["train"], metrics["reference"]
    confidence = round(100 * thresholds["confidence"])
    lines = ["# histoaug memorization audit", "",
             f"histoaug {metrics['histoaug_version']}. Does any synthetic patch copy a training patch? Training "
             f"split: `{train['root']}` ({train['items']} patches); reference (held-out real patches, what a "
             f"generator that copies nothing should look like): `{reference['root']}` ({reference['items']} "
             f"patches). Command: `{metrics['command_line'] or '(API call)'}`", ""]
    lines += ["## Verdict", ""]
    rows = [[entry["name"], str(entry["items"]), str(entry["copies"]["copies"]), _interval(entry["copies"]),
             _interval(entry["feature_only"])] for entry in metrics["sets"]]
    rows.append([f"reference ({reference['root']})", str(reference["items"]),
                 str(reference["copies_at_threshold"]["copies"]), _interval(reference["copies_at_threshold"]), "-"])
    lines += [*_table(["set", "patches", "near-copies", f"copy rate [{confidence}% interval]",
                       "feature-only look-alike rate"], rows), ""]
    gate = metrics["gate"]
    if gate["fail_above"] is not None:
        outcome = (f"FAILED for {', '.join(gate['failed'])}" if gate["failed"] else "passed")
        lines += [f"Release gate `--fail-above {gate['fail_above']:g}` (copy rate above it: exit 1): **{outcome}**.",
                  ""]
    binding = ("the floor binds (held-out real patches stay below it)" if thresholds["binding"] == "floor" else
               "the reference binds: held-out real patches reach the floor, so the threshold is raised to their tail "
               "and copies below it cannot be told from real look-alikes")
    lines += ["## The rule and its calibration", "",
              "A synthetic patch is a **near-copy** when the normalised (Pearson) correlation r of its band-pass "
              "pixel detail (grey image, Gaussian blur sigma 1 px minus sigma 4 px) with a training patch's, under "
              f"the best of the 8 flips/rotations, exceeds **{thresholds['correlation']:.3f}**"
              f" = max(near-duplicate floor {thresholds['floor']:.3f}, the reference's {1 - thresholds['quantile']:g}"
              f" quantile {thresholds['reference_quantile_value']:.3f}); {binding}. A near-copy survives JPEG, "
              "noise, flips and rotations with r of about 0.94-1.0; patches cut from the same slides without a shared "
              "pixel stay near 0.1-0.25 (docs/audit.md). Copy rates carry "
              f"{confidence}% Clopper-Pearson intervals.", "",
              f"Candidates: the {search['feature_neighbours']} nearest training patches in {features['space']} "
              f"features ({features['dims']}-d, {features['standardised']}: {features['description']}) and the "
              f"{search['pixel_neighbours']} nearest by pixel thumbnails ({search['thumbnail']}); exact search with "
              f"**{search['engine']}**. The feature-only column flags patches closer in features than the "
              f"reference's {thresholds['quantile']:g} quantile ({thresholds['feature_distance']:.3g}): the rate a "
              "feature-space audit alone would report, which counts same-tissue look-alikes too.", "",
              "Closest reference pairs (held-out real patch left, training patch right):", "",
              f"![closest reference pairs]({reference['figure']})", ""]
    for entry in metrics["sets"]:
        lines += _set_section(entry, metrics, confidence)
    timings = ", ".join(f"{stage} {seconds:.1f} s" for stage, seconds in metrics["seconds"].items())
    lines += ["## Run time", "", timings, ""]
    return "\n".join(lines)
