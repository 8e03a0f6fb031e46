"""``report.md`` from the report's metrics: tables with one column per synthetic set, and the figures."""

from __future__ import annotations

from typing import Any


def _fmt(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(["---"] + ["---:"] * (len(header) - 1)) + " |"]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def _distance_section(metrics: dict[str, Any], names: list[str]) -> list[str]:
    lines = ["## Distribution distances and coverage", ""]
    test_split = metrics["real"]["test_split"]
    for space in metrics["distances"]:
        lines += [f"### {space['distance_name']}", "",
                  f"Features: {space['description']}. Reference: real {space['reference_split']} split "
                  f"({space['real_items']} patches, {space['dims']}-d). The real {test_split} column is real vs real: "
                  "the floor that finite samples allow (Frechet distances are biased upwards for small sets, so "
                  "compare columns of similar size). Precision / recall / density / coverage use "
                  f"k = {metrics['settings']['prdc_k']} nearest-neighbour balls.", ""]
        columns = [f"real {test_split} (reference)", *names]
        keys = [test_split, *names]
        rows = [[space["distance_name"], *(_fmt(space["columns"][key]["frechet"], 2) for key in keys)]]
        for measure in ("precision", "recall", "density", "coverage"):
            rows.append([measure, *(_fmt(space["columns"][key][measure]) for key in keys)])
        rows.append(["patches", *(str(space["columns"][key]["items"]) for key in keys)])
        lines += [*_table(["", *columns], rows), ""]
        projection = space["projection"]
        method = projection["method"] + (f" ({projection['note']})" if projection["method"] != "UMAP" else "")
        lines += [f"Coverage map, {method}:", "", f"![projection]({projection['figure']})", ""]
    return lines


def _downstream_section(metrics: dict[str, Any], names: list[str]) -> list[str]:
    settings = metrics["settings"]["downstream"]
    confidence = round(100 * settings["confidence"])
    lines = ["## Downstream utility (probe ROC AUC on the real test split)", "",
             f"The same probe CNN trained on each arm, seeds {settings['seeds']}; mean AUC and {confidence}% "
             "Student-t interval over seeds (clipped to [0, 1]; it measures the spread of probe training, and of the "
             "real subset in small-real arms, not of the test set). Arms without synthetic data are the same in every "
             "column.", ""]
    arms = list(dict.fromkeys(row["arm"] for row in metrics["downstream"]))
    rows = []
    for arm in arms:
        cells = []
        for name in names:
            match = [row for row in metrics["downstream"] if row["arm"] == arm and row["synthetic_set"] in (None, name)]
            row = match[0]
            interval = "" if row["ci_low"] is None else f" [{row['ci_low']:.3f}, {row['ci_high']:.3f}]"
            cells.append(f"{row['mean_auc']:.3f}{interval}")
        items = next(row["train_items"] for row in metrics["downstream"] if row["arm"] == arm)
        rows.append([arm, str(items), *cells])
    lines += [*_table(["arm", "train items / epoch", *names], rows), "",
              f"![ROC curves]({metrics['figures']['roc']})", ""]
    return lines


def _fidelity_section(metrics: dict[str, Any], names: list[str]) -> list[str]:
    fidelity, c2st = metrics["label_fidelity"], metrics["two_sample_test"]
    synthetic_only = {row["synthetic_set"]: row for row in metrics["downstream"] if row["arm"] == "synthetic only"}
    lines = ["## Label fidelity and two-sample test", "",
             f"Label fidelity: probes trained on the real train split (real test AUC "
             f"{fidelity['real_probe_test_auc']:.3f}, accuracy {fidelity['real_probe_test_accuracy']:.3f} with "
             f"focus-blur augmentation sigma <= {fidelity['blur_sigma']}; plain probe accuracy "
             f"{fidelity['plain_probe_test_accuracy']:.3f}) label the synthetic patches. Two-sample test: a probe "
             "tells real test patches from as many synthetic ones (same label mix), k-fold; AUC 0.5 = "
             "indistinguishable, 1.0 = always told apart.", ""]
    check = fidelity.get("probe_check")
    if check and not check["passed"]:
        lines += [f"**Label fidelity is not reliable here and is withheld from the summary**: "
                  f"{check['withheld_because']}. The figures below are shown for completeness only.", ""]
    rows = [
        ["label fidelity, blur-augmented probe", *(_fmt(fidelity["sets"][n]["blur_probe"]["overall"]) for n in names)],
        ["label fidelity, plain probe", *(_fmt(fidelity["sets"][n]["plain_probe"]["overall"]) for n in names)],
        ["train on synthetic, test on real: AUC (mean over seeds)",
         *(_fmt(synthetic_only[n]["mean_auc"]) if n in synthetic_only else "-" for n in names)],
        ["two-sample test AUC", *(_fmt(c2st[n]["auc"]) for n in names)],
        ["two-sample test patches per side / folds", *(f"{c2st[n]['items_per_side']} / {c2st[n]['folds']}"
                                                     for n in names)],
    ]
    reference = metrics["two_sample_reference"]
    if reference["auc"] is None:
        note = [f"Reference (real train vs real test): not measured, {reference['why_not']}.", ""]
    else:
        note = [f"Reference: the same two-sample test between real **train** patches and the real test patches "
                f"(same label mix) scores AUC {reference['auc']:.3f}; a generator that reproduced the train split "
                "exactly would score about that, so read each set's two-sample AUC against it (a test split from "
                "other slides or tissues makes it high).", ""]
    return [*lines, *_table(["", *names], rows), "", *note]


def _grids_section(metrics: dict[str, Any], names: list[str]) -> list[str]:
    lines = ["## Patches: real vs synthetic", ""]
    for name in names:
        grids = metrics["figures"]["grids"][name]
        lines += [f"### {name}", "", f"![{name} per label]({grids['labels']})", ""]
        if "prompts" in grids:
            shown = (f" (the {grids['prompts_shown']} most used of {grids['prompts_total']})"
                     if grids["prompts_shown"] < grids["prompts_total"] else "")
            lines += [f"Per prompt{shown}:", "", f"![{name} per prompt]({grids['prompts']})", ""]
    return lines


def render_markdown(metrics: dict[str, Any]) -> str:
    """The whole report as Markdown (figures referenced relative to the report directory)."""
    real = metrics["real"]
    names = [entry["name"] for entry in metrics["synthetic_sets"]]
    probe = metrics["settings"]["probe"]
    bundled = " (the bundled sample, histoaug.sample_root())" if real["root"] == "sample" else ""
    lines = ["# histoaug evaluation report", "",
             f"histoaug {metrics['histoaug_version']}. Real data: `{real['root']}`{bundled} ({real['train_split']}: "
             f"{real['train_items']} patches, {real['test_split']}: {real['test_items']}). Synthetic sets (one column "
             "each):", ""]
    for entry in metrics["synthetic_sets"]:
        provenance = entry["provenance"]
        keys = ("model", "prompts", "steps", "guidance", "guidance_rescale", "seed")
        source = ", ".join(f"{key.replace('_', ' ')} {provenance[key]}" for key in keys if key in provenance
                           and not (key == "guidance_rescale" and float(provenance[key]) == 0.0))
        lines.append(f"- **{entry['name']}**: `{entry['path']}`, {entry['items']} patches "
                     f"(label 0: {entry['labels']['0']}, label 1: {entry['labels']['1']})"
                     + (f"; {source}" if source else ""))
    lines += ["", f"Probe: small CNN, {probe['epochs']} epochs (at least {probe['min_steps']} steps), batch "
              f"{probe['batch_size']}, lr {probe['lr']}. Command: `{metrics['command_line'] or '(API call)'}`", ""]
    if metrics["settings"].get("preset") == "quick":
        settings = metrics["settings"]
        lines += [f"**Quick look (`--quick`)**: reduced settings, for a first reading, not for a paper: features "
                  f"{', '.join(settings['features'])}, coverage map {settings['projection']}, probes "
                  f"{probe['epochs']} epochs (>= {probe['min_steps']} steps, batch {probe['batch_size']}), "
                  f"{settings['folds']} two-sample folds, downstream seeds {settings['downstream']['seeds']}. "
                  "Short probes are weak probes: rerun without --quick before quoting a number.", ""]
    lines += _distance_section(metrics, names)
    lines += _downstream_section(metrics, names)
    lines += _fidelity_section(metrics, names)
    lines += _grids_section(metrics, names)
    timings = ", ".join(f"{stage} {seconds:.0f} s" for stage, seconds in metrics["seconds"].items())
    lines += ["## Run time", "", timings, ""]
    return "\n".join(lines)
