"""The example training script runs at ratio 0, 0.5 and 1 and reports a validation AUC."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from synthesis_models import tiny_model_dir

from histoaug.cli.main import main

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "train_classifier.py"


@pytest.fixture(scope="module")
def synthetic_file(tmp_path_factory):
    model = tiny_model_dir(tmp_path_factory)
    out = tmp_path_factory.mktemp("generated") / "synthetic.h5"
    assert main(["generate", "--n", "16", "--out", str(out), "--model", str(model), "--batch-size", "8",
                 "--steps", "2", "--quiet"]) == 0
    return out


@pytest.mark.slow
@pytest.mark.parametrize("ratio", ["0", "0.5", "1"])
def test_example_reports_valid_and_test_auc(synthetic_file, ratio):
    result = subprocess.run(
        [sys.executable, str(EXAMPLE), "--ratio", ratio, "--synthesizer", str(synthetic_file), "--epochs", "1",
         "--workers", "2"],
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr
    for split in ("validation", "test"):  # both held-out splits, with the caveat that tells them apart
        match = re.search(rf"final {split} ROC AUC: (\d\.\d+)", result.stdout)
        assert match and 0.0 <= float(match.group(1)) <= 1.0, result.stdout
    assert "valid shares its source images with train" in result.stdout
    assert f"{float(ratio):.0%} synthetic" in result.stdout
