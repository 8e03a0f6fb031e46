"""The report's measurements: Frechet distance, PRDC, two-sample test, downstream arms, feature spaces, CLI."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from evaluation_data import real_split, write_small_real, write_synthetic_file
from PIL import Image
from scipy import linalg
from training_models import save_tiny_vit

from histoaug.cli.main import main
from histoaug.errors import ArtifactError
from histoaug.evaluation import ClassifierConfig, two_sample_auc
from histoaug.evaluation.downstream import DownstreamConfig, run_downstream, stratified_subset, t_interval
from histoaug.evaluation.features import (
    InceptionUnavailableError,
    load_feature_space,
    locate_inception,
    split_features,
)
from histoaug.evaluation.frechet import GaussianStatistics, frechet_distance, frechet_distance_of
from histoaug.evaluation.prdc import compute_prdc
from histoaug.evaluation.projection import project

pytestmark = pytest.mark.usefixtures("one_torch_thread")

FAST = ClassifierConfig(epochs=1, min_steps=40, batch_size=8, seed=0)


@pytest.fixture(scope="module")
def small_real(tmp_path_factory):
    return write_small_real(tmp_path_factory.mktemp("real"))


@pytest.fixture(scope="module")
def synthetic_files(small_real, tmp_path_factory):
    """Real valid patches posing as a generated file (with prompt ids), and a file of noise."""
    folder = tmp_path_factory.mktemp("synthetic")
    x, y = real_split("valid", small_real)
    good = write_synthetic_file(folder / "real_valid.h5", x, y, prompt_ids=y * 2 + np.arange(len(y)) % 2,
                                attrs={"model": "none (real valid patches)", "seed": 0})
    rng = np.random.default_rng(1)
    noise = write_synthetic_file(folder / "noise.h5", rng.integers(0, 256, x.shape, dtype=np.uint8), y)
    return good, noise


# --- Frechet distance ------------------------------------------------------------------------------


def _closed_form(mu1, s1, mu2, s2):
    root = linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * root))


def test_frechet_distance_matches_the_closed_form_on_known_gaussians():
    rng = np.random.default_rng(0)
    # diagonal covariances: |mu1 - mu2|^2 + sum (sqrt(a) - sqrt(b))^2
    a, b = np.array([1.0, 4.0, 0.25]), np.array([9.0, 1.0, 0.25])
    mu1, mu2 = np.zeros(3), np.array([1.0, -2.0, 0.5])
    exact = float(((mu1 - mu2) ** 2).sum() + ((np.sqrt(a) - np.sqrt(b)) ** 2).sum())
    value = frechet_distance(GaussianStatistics(mu1, np.diag(a), 0), GaussianStatistics(mu2, np.diag(b), 0))
    assert value == pytest.approx(exact, rel=1e-10)
    # full, non-commuting covariances against scipy's matrix square root
    m1, m2 = rng.normal(size=(5, 5)), rng.normal(size=(5, 5))
    s1, s2 = m1 @ m1.T + 0.1 * np.eye(5), m2 @ m2.T + 0.1 * np.eye(5)
    mu1, mu2 = rng.normal(size=5), rng.normal(size=5)
    value = frechet_distance(GaussianStatistics(mu1, s1, 0), GaussianStatistics(mu2, s2, 0))
    assert value == pytest.approx(_closed_form(mu1, s1, mu2, s2), rel=1e-8)
    same = GaussianStatistics(mu1, s1, 0)
    assert frechet_distance(same, same) == pytest.approx(0, abs=1e-9)
    # from samples: the estimate converges to the population value
    x = rng.multivariate_normal(mu1, s1, size=40000)
    y = rng.multivariate_normal(mu2, s2, size=40000)
    assert frechet_distance_of(x, y) == pytest.approx(_closed_form(mu1, s1, mu2, s2), rel=0.03)


def test_frechet_distance_stays_finite_for_singular_covariances():
    """Fewer samples than dimensions (small sets): real-valued and non-negative, no epsilon tricks."""
    rng = np.random.default_rng(0)
    value = frechet_distance_of(rng.normal(size=(6, 20)), rng.normal(size=(6, 20)) + 1)
    assert np.isfinite(value) and value > 0


# --- precision / recall / density / coverage -------------------------------------------------------


def _brute_force_prdc(real, fake, k):
    d_rr = np.linalg.norm(real[:, None] - real[None], axis=2)
    d_ff = np.linalg.norm(fake[:, None] - fake[None], axis=2)
    d_rf = np.linalg.norm(real[:, None] - fake[None], axis=2)
    r_real, r_fake = np.sort(d_rr, axis=1)[:, k], np.sort(d_ff, axis=1)[:, k]
    inside = d_rf < r_real[:, None]
    return {"precision": inside.any(axis=0).mean(), "recall": (d_rf < r_fake[None]).any(axis=1).mean(),
            "density": inside.sum(axis=0).mean() / k, "coverage": inside.any(axis=1).mean()}


def test_prdc_matches_the_reference_implementations(capsys):
    rng = np.random.default_rng(0)
    real = rng.normal(size=(120, 6))
    fake = np.concatenate([rng.normal(size=(70, 6)) + 0.4, rng.normal(size=(20, 6)) * 3])  # shifted + outliers
    ours = compute_prdc(real, fake, k=5).to_dict()
    for name, value in _brute_force_prdc(real, fake, 5).items():
        assert ours[name] == pytest.approx(value, abs=1e-12), name
    prdc = pytest.importorskip("prdc")  # the published implementation (dev extra)
    reference = prdc.compute_prdc(real, fake, nearest_k=5)
    capsys.readouterr()  # it prints the set sizes
    for name, value in reference.items():
        assert ours[name] == pytest.approx(float(value), abs=1e-12), name
    same = compute_prdc(real, real[::-1].copy(), k=5)
    assert same.precision == same.recall == same.coverage == 1.0


# --- two-sample test and downstream ----------------------------------------------------------------


def test_two_sample_auc_is_chance_for_one_split_and_high_against_noise():
    x, _ = real_split("train")
    rng = np.random.default_rng(0)
    order = rng.permutation(len(x))
    halves = two_sample_auc(x[order[:64]], x[order[64:128]], folds=2, config=FAST)
    noise = rng.integers(0, 256, (64, 96, 96, 3), dtype=np.uint8)
    apart = two_sample_auc(x[order[:64]], noise, folds=2, config=FAST)
    assert abs(halves - 0.5) < 0.2, halves
    assert apart > 0.95, apart


def test_t_interval_and_stratified_subset():
    interval = t_interval([0.7, 0.8, 0.9], 0.95)
    assert interval.mean == pytest.approx(0.8)
    assert interval.high - interval.mean == pytest.approx(4.302653 * 0.1 / np.sqrt(3), rel=1e-5)
    assert t_interval([0.9, 0.95, 1.0], 0.95, (0.0, 1.0)).high == 1.0
    assert np.isnan(t_interval([0.8]).low)
    labels = np.array([0] * 40 + [1] * 20)
    subset = stratified_subset(labels, 0.1, seed=3)
    assert (labels[subset] == 0).sum() == 4 and (labels[subset] == 1).sum() == 2
    assert not np.array_equal(subset, stratified_subset(labels, 0.1, seed=4))


@pytest.mark.slow
def test_downstream_arms_train_on_what_they_say(small_real, synthetic_files):
    good, noise = synthetic_files
    config = DownstreamConfig(ratios=(0.5,), real_fractions=(0.25,), seeds=(0, 1), probe=replace(FAST, min_steps=80))
    results = run_downstream(small_real, {"good": good, "noise": noise}, config)
    by = {(r.arm, r.synthetic_set): r for r in results}
    assert set(by) == {("real", None), ("25% real", None),
                       *((arm, name) for arm in ("synthetic only", "real + synthetic (ratio 0.5)",
                                                 "25% real + synthetic") for name in ("good", "noise"))}
    for result in results:
        assert len(result.aucs) == 2 and all(0 <= auc <= 1 for auc in result.aucs)
        assert result.interval.low <= result.interval.mean <= result.interval.high
    train_items = len(real_split("train", small_real)[1])
    assert by["real", None].train_items == train_items and by["25% real", None].train_items == train_items // 4
    assert by["25% real + synthetic", "good"].train_items == train_items
    assert by["real", None].interval.mean > 0.8
    assert by["synthetic only", "good"].interval.mean > 0.8  # real patches posing as synthetic teach
    assert by["synthetic only", "noise"].interval.mean < 0.8  # noise does not


# --- feature spaces --------------------------------------------------------------------------------


class _TinyInception(torch.nn.Module):
    """Stands in for the TorchScript FID network: same call, (B, 3, H, W) in [0, 255] -> (B, D)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 5, stride=4)

    def forward(self, img: torch.Tensor, return_features: bool = False) -> torch.Tensor:
        x = torch.nn.functional.interpolate(img, size=(64, 64), mode="bilinear", align_corners=False)
        return self.conv(x / 128 - 1).mean(dim=(2, 3))


def test_inception_feature_space_loads_torchscript_and_caches_features(small_real, tmp_path):
    from histoaug import PCam

    torch.manual_seed(0)
    weights = tmp_path / "inception-2015-12-05.pt"
    torch.jit.save(torch.jit.script(_TinyInception()), str(weights))
    space = load_feature_space("inception", inception_weights=weights)
    assert space.distance_name == "FID"
    test = PCam(small_real, "test")
    cache = tmp_path / "cache"
    first = split_features(test, space, cache_dir=cache)
    assert first.shape == (16, 8) and len(list(cache.glob("*.safetensors"))) == 1
    np.testing.assert_array_equal(first, split_features(test, space, cache_dir=cache))
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"not a torchscript archive")
    with pytest.raises(ArtifactError, match="TorchScript"):
        load_feature_space("inception", inception_weights=broken)


def test_inception_offline_without_weights_names_the_option(small_real, synthetic_files, tmp_path, monkeypatch,
                                                             capsys):
    import histoaug.evaluation.features as features

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(features, "INCEPTION_URL", "http://127.0.0.1:9/inception-2015-12-05.pt")  # refused
    with pytest.raises(InceptionUnavailableError, match="--inception-weights"):
        locate_inception()
    assert main(["eval", str(synthetic_files[0]), "--real", str(small_real), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--inception-weights PATH" in err and "cannot be downloaded" in err


def test_transformers_feature_space_is_a_frechet_distance_not_a_fid(small_real, tmp_path):
    from histoaug import PCam

    model_dir = save_tiny_vit(tmp_path / "vit")
    space = load_feature_space(str(model_dir))
    assert space.distance_name.startswith("FD (") and "not a FID" in space.description
    assert split_features(PCam(small_real, "test"), space, use_cache=False).shape == (16, 32)


def test_projection_states_its_method():
    rng = np.random.default_rng(0)
    sets = {"real": rng.normal(size=(30, 5)), "a": rng.normal(size=(20, 5)) + 1}
    pca = project(sets, method="pca")
    assert pca.method == "PCA" and "asked" in pca.note and pca.coordinates["a"].shape == (20, 2)
    tiny = project({"real": sets["real"][:5], "a": sets["a"][:5]})
    assert tiny.method == "PCA" and "UMAP needs more" in tiny.note


@pytest.mark.slow
def test_umap_projection_shares_coordinates():
    pytest.importorskip("umap")
    rng = np.random.default_rng(0)
    sets = {"real": rng.normal(size=(60, 5)), "far": rng.normal(size=(40, 5)) + 6}
    projection = project(sets, method="umap")
    assert projection.method == "UMAP" and projection.note == ""
    real, far = projection.coordinates["real"], projection.coordinates["far"]
    spread = real.std(axis=0).mean()
    assert np.linalg.norm(real.mean(axis=0) - far.mean(axis=0)) > 2 * spread  # separated clusters stay apart


# --- the report ------------------------------------------------------------------------------------


@pytest.mark.slow
def test_eval_cli_writes_the_report_directory(small_real, synthetic_files, tmp_path, capsys):
    good, noise = synthetic_files
    vit = save_tiny_vit(tmp_path / "vit")
    out = tmp_path / "report"
    argv = ["eval", "--synthetic", f"real-valid={good}", "--synthetic", str(noise), "--real", str(small_real),
            "--features", f"stain-texture,{vit}", "--projection", "pca", "--epochs", "1", "--min-steps", "10",
            "--batch-size", "8", "--folds", "2", "--seeds", "1", "--cache-dir", str(tmp_path / "cache"),
            "--out", str(out), "--no-progress"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("real-valid: Frechet stain-texture distance") and "noise: " in printed
    metrics = json.loads((out / "metrics.json").read_text())
    check = metrics["label_fidelity"]["probe_check"]  # a 1-epoch probe: its fidelity is flagged if weak
    assert check["passed"] == (metrics["label_fidelity"]["real_probe_test_accuracy"] >= check["min_real_accuracy"])
    assert ("label fidelity withheld" in printed) == (not check["passed"])
    assert [s["name"] for s in metrics["synthetic_sets"]] == ["real-valid", "noise"]
    stain, vit_space = metrics["distances"]
    assert stain["space"] == "stain-texture" and vit_space["distance_name"] == f"FD ({vit})"
    for space in (stain, vit_space):
        assert set(space["columns"]) == {"test", "real-valid", "noise"}
        assert space["columns"]["noise"]["frechet"] > space["columns"]["real-valid"]["frechet"]
    # precision alone is fooled by one outlying real patch whose k-NN ball covers the noise (the sample
    # holds fat and vessel patches far from the rest); density and coverage are the robust pair
    for space in (stain, vit_space):
        real_valid, noise = space["columns"]["real-valid"], space["columns"]["noise"]
        assert noise["coverage"] < 0.2 < real_valid["coverage"] and noise["recall"] < 0.2 < real_valid["recall"]
        assert noise["density"] < 0.5 < real_valid["density"]
    assert metrics["two_sample_test"]["noise"]["auc"] > 0.9
    reference = metrics["two_sample_reference"]["auc"]  # real train vs real test: below noise vs real
    assert 0.0 <= reference < metrics["two_sample_test"]["noise"]["auc"]
    assert f"scores AUC {reference:.3f}" in (out / "report.md").read_text()
    assert metrics["synthetic_sets"][0]["prompts"] == {"0": 4, "1": 4, "2": 4, "3": 4}
    report = (out / "report.md").read_text()
    for heading in ("Distribution distances", "Downstream utility", "Label fidelity", "Patches: real vs synthetic"):
        assert heading in report
    pngs = sorted(path.name for path in (out / "figures").iterdir())
    projections = [name for name in pngs if name.startswith("projection_")]
    assert "projection_stain-texture.png" in projections and len(projections) == 2
    assert sorted(set(pngs) - set(projections)) == ["grid_labels_noise.png", "grid_labels_real-valid.png",
                                                    "grid_prompts_real-valid.png", "roc.png"]
    for name in pngs:
        with Image.open(out / "figures" / name) as image:
            assert image.format == "PNG" and image.size[0] > 100
            image.verify()
        assert f"(figures/{name})" in report
    # an existing report is kept unless --overwrite
    assert main(argv) == 2
    assert capsys.readouterr().err.count("\n") == 1
    assert (out / "report.md").read_text() == report


@pytest.mark.parametrize(("extra", "message"), [
    (["--synthetic", "same={good}", "--synthetic", "same={noise}"], "must differ"),
    (["--synthetic", "{good}", "--features", "stain-texture", "--inception-weights", "{good}"], "does not include"),
    (["--synthetic", "{good}", "--ratios", "1.5"], "strictly between 0 and 1"),
    (["--synthetic", "missing.h5"], "no such file"),
])
def test_eval_argument_errors_are_one_line_before_any_work(small_real, synthetic_files, tmp_path, capsys, extra,
                                                           message):
    good, noise = synthetic_files
    argv = ["eval", *(part.format(good=good, noise=noise) for part in extra), "--real", str(small_real),
            "--out", str(tmp_path / "report"), "--no-progress"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err
    assert not (tmp_path / "report").exists()


def _input_error_cases(small_real, good, tmp_path):
    import shutil

    import h5py

    train_only = tmp_path / "train_only"
    train_only.mkdir()
    for path in small_real.glob("*_train_*.h5"):
        shutil.copy(path, train_only / path.name)
    not_pcam = tmp_path / "not_pcam.h5"
    with h5py.File(not_pcam, "w") as handle:
        handle["something"] = np.zeros(3)
    wrong_shape = tmp_path / "wrong_shape.h5"
    with h5py.File(wrong_shape, "w") as handle:
        handle["x"] = np.zeros((4, 32, 32, 3), np.uint8)
        handle["y"] = np.zeros((4, 1, 1, 1), np.uint8)
    stain = ["--features", "stain-texture"]
    return {
        "offline_without_flags": [str(good), "--real", str(small_real)],  # inception by default, no weights
        "real_with_only_train_files": [str(good), "--real", str(train_only), *stain],
        "a_non_pcam_h5": [str(not_pcam), "--real", str(small_real), *stain],
        "a_wrong_shape_h5": [str(wrong_shape), "--real", str(small_real), *stain],
        "a_missing_root": [str(good), "--real", str(tmp_path / "nowhere"), *stain],
    }


def test_eval_input_errors_are_one_line_with_no_progress_bar(small_real, synthetic_files, tmp_path, capsys,
                                                             monkeypatch):
    """With progress bars on (the default), a bad input is still exactly one line on stderr: every
    input is opened before the first bar is drawn."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    for name, args in _input_error_cases(small_real, synthetic_files[0], tmp_path).items():
        assert main(["eval", *args, "--out", str(tmp_path / "report")]) == 2, name
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("histoaug: error: "), f"{name}: {err!r}"
        assert "\r" not in err and "stage" not in err, f"{name}: a progress bar was drawn: {err!r}"
        assert not (tmp_path / "report").exists()


def test_label_fidelity_from_a_probe_near_chance_is_withheld():
    from histoaug.evaluation.report import MIN_FIDELITY_PROBE_ACCURACY, fidelity_probe_check
    from histoaug.evaluation.report_markdown import _fidelity_section

    weak = fidelity_probe_check(0.476, "test")
    assert not weak["passed"] and "0.476" in weak["withheld_because"]
    assert "--test-split valid" in weak["withheld_because"]
    good = fidelity_probe_check(MIN_FIDELITY_PROBE_ACCURACY + 0.1, "valid")
    assert good["passed"] and good["withheld_because"] is None

    agreement = {"overall": 0.863, "by_label": {}}
    metrics = {"label_fidelity": {"real_probe_test_auc": 0.664, "real_probe_test_accuracy": 0.476,
                                  "plain_probe_test_accuracy": 0.5, "blur_sigma": 1.5, "probe_check": weak,
                                  "sets": {"s": {"blur_probe": agreement, "plain_probe": agreement}}},
               "two_sample_test": {"s": {"auc": 0.9, "items_per_side": 10, "folds": 2}},
               "two_sample_reference": {"auc": 0.8, "items_per_side": 10, "folds": 2}, "downstream": [],
               "real": {"test_split": "test"}}
    assert "not reliable here and is withheld" in "\n".join(_fidelity_section(metrics, ["s"]))


def test_eval_quick_runs_its_reduced_settings_and_says_so(small_real, synthetic_files, tmp_path, capsys):
    out = tmp_path / "quick"
    argv = ["eval", str(synthetic_files[0]), "--real", str(small_real), "--quick", "--min-steps", "10",
            "--cache-dir", str(tmp_path / "cache"), "--out", str(out), "--no-progress"]
    assert main(argv) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    settings = metrics["settings"]
    assert settings["preset"] == "quick" and settings["features"] == ["stain-texture"]
    assert settings["projection"] == "pca" and settings["folds"] == 2 and settings["downstream"]["seeds"] == [0]
    assert settings["probe"]["epochs"] == 1 and settings["probe"]["min_steps"] == 10  # an explicit option wins
    assert "Quick look (`--quick`)" in (out / "report.md").read_text()
