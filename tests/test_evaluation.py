"""histoaug.evaluation and `histoaug eval`: probes on real files, the three measures, errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from evaluation_data import real_split, write_small_real, write_synthetic_file

from histoaug import sample_root
from histoaug.cli.main import main
from histoaug.errors import InvalidArgumentError
from histoaug.evaluation import ClassifierConfig, evaluate_synthetic, fit_classifier, predict_scores

pytestmark = pytest.mark.usefixtures("one_torch_thread")

FAST = ClassifierConfig(epochs=1, min_steps=80, batch_size=8, seed=0)


@pytest.fixture(scope="module")
def small_real(tmp_path_factory):
    return write_small_real(tmp_path_factory.mktemp("real"))


def test_probe_is_deterministic_and_learns_the_sample(small_real):
    x, y = real_split("train", small_real)
    a, b = fit_classifier(x, y, FAST), fit_classifier(x, y, FAST)
    test_x, test_y = real_split("test", small_real)
    scores = predict_scores(a, test_x)
    np.testing.assert_array_equal(scores, predict_scores(b, test_x))
    assert ((scores >= 0.5) == test_y).mean() > 0.7


def test_real_patches_posing_as_synthetic_score_as_real_data_should(small_real):
    """Real valid patches stand in for a perfect generator: high fidelity and TSTR AUC."""
    x, y = real_split("valid", small_real)
    report = evaluate_synthetic(small_real, x, y, config=FAST, folds=2)
    assert report.synthetic_items == 16 and report.real_test_items == 16 and report.c2st_items_per_side == 16
    assert report.label_fidelity > 0.8 and report.tstr_auc > 0.8
    assert 0.0 <= report.c2st_auc <= 1.0
    assert set(report.label_fidelity_per_label) == {"0", "1"}
    assert report.plain_probe_label_fidelity > 0.8 and report.fidelity_blur_sigma == 1.5


def test_noise_posing_as_synthetic_is_told_apart_and_mislabelled(small_real):
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, (16, 96, 96, 3), dtype=np.uint8)
    report = evaluate_synthetic(small_real, noise, np.arange(16) % 2, config=FAST, folds=2)
    assert report.c2st_auc > 0.9
    assert report.tstr_auc < 0.8  # noise teaches nothing about real tissue


def test_eval_cli_positional_form_prints_and_writes_json(small_real, tmp_path, capsys):
    """The pre-report form (a positional file, --json) still works: a summary line per set and the metrics."""
    x, y = real_split("valid", small_real)
    path = write_synthetic_file(tmp_path / "synthetic.h5", x, y)
    out = tmp_path / "report.json"
    assert main(["eval", str(path), "--real", str(small_real), "--features", "stain-texture", "--projection", "pca",
                 "--epochs", "1", "--min-steps", "20", "--folds", "2", "--seeds", "1", "--no-cache",
                 "--json", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("synthetic: ") and "label fidelity" in printed and "two-sample AUC" in printed
    report = json.loads(out.read_text())
    assert report["synthetic_sets"][0]["items"] == len(x)
    tstr = next(row for row in report["downstream"] if row["arm"] == "synthetic only")
    assert 0 <= tstr["mean_auc"] <= 1 and tstr["ci_low"] is None  # one seed: no interval


def test_focus_blur_augmentation_is_seeded_and_blurs():
    from histoaug.evaluation.classifier import gaussian_blur

    x = torch.zeros(1, 3, 9, 9)
    x[0, :, 4, 4] = 1.0
    blurred = gaussian_blur(x, 1.0)
    assert blurred.shape == x.shape and blurred.sum().item() == pytest.approx(3.0, rel=1e-5)
    assert 0 < blurred[0, 0, 4, 4] < 1 and blurred[0, 0, 4, 5] > 0
    config = ClassifierConfig(epochs=1, min_steps=4, batch_size=8, blur_sigma_max=1.5)
    images, labels = real_split("valid")
    a, b = fit_classifier(images, labels, config), fit_classifier(images, labels, config)
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values(), strict=True))


def test_eval_errors_are_one_line(tmp_path, capsys):
    assert main(["eval", str(tmp_path / "missing.h5"), "--no-progress"]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    with pytest.raises(InvalidArgumentError, match="uint8"):
        evaluate_synthetic(sample_root(), np.zeros((4, 32, 32, 3), np.uint8), np.zeros(4), config=FAST)
    with pytest.raises(InvalidArgumentError, match="both labels"):
        fit_classifier(real_split("valid")[0][:32], np.zeros(32), FAST)
