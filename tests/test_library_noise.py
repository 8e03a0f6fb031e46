"""Other libraries' notices that histoaug causes and the user cannot act on are not printed; the rest is."""

from __future__ import annotations

import logging
import subprocess
import sys

import pytest
from synthesis_models import tiny_model_dir

import histoaug  # noqa: F401  (installs the filters)
from histoaug.library_noise import QUIET


def _records(logger_name: str, message: str) -> list[str]:
    seen: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record.getMessage())

    logger = logging.getLogger(logger_name)
    handler = Keep()
    logger.addHandler(handler)
    try:
        logger.warning(message)
    finally:
        logger.removeHandler(handler)
    return seen


@pytest.mark.parametrize(("logger_name", "dropped", "kept"), [
    ("transformers.utils.import_utils",
     "`CLIPImageProcessor` requires torchvision (not installed); falling back to `CLIPImageProcessorPil` for "
     "backward compatibility.", "Could not import module 'CLIPModel'."),
    ("torch.onnx._internal.exporter._registration", "torchvision is not installed. Skipping torchvision::nms",
     "Failed to register an ONNX function"),
    ("diffusers.models.modeling_utils",
     "There are modules in UNet2DConditionModel that should be kept in float32: []. Casting directly",
     "There are modules in UNet2DConditionModel that should be kept in float32: ['conv_in']. Casting directly"),
])
def test_exactly_the_known_notices_are_dropped(logger_name, dropped, kept) -> None:
    assert logger_name in QUIET
    assert _records(logger_name, dropped) == []
    assert _records(logger_name, kept) == [kept]


@pytest.mark.slow
def test_export_and_model_loads_print_no_torchvision_notice(tmp_path_factory, tmp_path) -> None:
    """In a real process (as a user runs it): importing the pipeline classes (what train and eval
    load) and `histoaug export` print nothing about torchvision, which histoaug does not use."""
    model = tiny_model_dir(tmp_path_factory)
    script = ("import histoaug, transformers\n"
              "from diffusers import StableDiffusionPipeline\n"
              "transformers.CLIPImageProcessor, transformers.SiglipImageProcessor\n"
              "from histoaug.cli.main import main\n"
              f"raise SystemExit(main(['export', {str(model)!r}, {str(tmp_path / 'artifact')!r}, '--no-progress']))\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "torchvision" not in result.stderr, result.stderr[-3000:]
    assert "should be kept in float32: []" not in result.stderr
