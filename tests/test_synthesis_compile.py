"""The torch backend with a compiled UNet (torch.compile, Inductor): numerics, determinism, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import histoaug
from histoaug.cli.main import main
from histoaug.errors import InvalidArgumentError
from histoaug.synthesis.backends.torch_backend import compile_unavailable_reason
from histoaug.synthesis.benchmarking import BackendSpec
from tests.synthesis_models import psnr, tiny_artifact_dir, tiny_model_dir

STEPS = 3
LABELS, SEEDS = [0, 1, 0, 1], [31, 32, 33, 34]

NO_COMPILE = compile_unavailable_reason(torch.device("cpu"))
needs_compiler = pytest.mark.skipif(NO_COMPILE is not None, reason=f"torch.compile unavailable: {NO_COMPILE}")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return tiny_model_dir(tmp_path_factory)


@needs_compiler
def test_compiled_unet_matches_eager_and_keeps_the_determinism_contract(model_dir) -> None:
    eager = histoaug.load_synthesizer(model_dir, backend="torch", dtype="fp32")
    compiled = histoaug.load_synthesizer(model_dir, backend="torch", dtype="fp32", compile=True)
    assert compiled.compiled and not eager.compiled and "compiled=True" in repr(compiled)
    reference = eager.generate(LABELS, SEEDS, steps=STEPS, batch_size=4)
    first = compiled.generate(LABELS, SEEDS, steps=STEPS, batch_size=4)
    assert psnr(first, reference) >= 40  # fused kernels round differently, within the fp32 tolerance
    order = [2, 0, 3, 1]
    shuffled = compiled.generate([LABELS[i] for i in order], [SEEDS[i] for i in order], steps=STEPS, batch_size=4)
    np.testing.assert_array_equal(shuffled, first[order])  # same layout -> bit-identical in any order
    np.testing.assert_array_equal(compiled.generate(LABELS, SEEDS, steps=STEPS, batch_size=4), first)


def test_compile_is_refused_off_the_torch_backend(tmp_path_factory, model_dir) -> None:
    artifact = tiny_artifact_dir(tmp_path_factory)
    with pytest.raises(InvalidArgumentError, match="compile applies to the torch backend"):
        histoaug.load_synthesizer(artifact, backend="onnxruntime", compile=True)


def test_compile_without_a_cxx_compiler_says_why(model_dir, monkeypatch) -> None:
    monkeypatch.setenv("PATH", "")
    from torch._inductor import config as inductor_config

    monkeypatch.setattr(inductor_config.cpp, "cxx", (None, "g++"))
    with pytest.raises(InvalidArgumentError, match="C\\+\\+ compiler"):
        histoaug.load_synthesizer(model_dir, backend="torch", compile=True)


def test_generate_cli_refuses_compile_on_onnxruntime(tmp_path_factory, tmp_path, capsys) -> None:
    artifact = tiny_artifact_dir(tmp_path_factory)
    out = tmp_path / "s.h5"
    code = main(["generate", "--n", "2", "--out", str(out), "--model", str(artifact),
                 "--backend", "onnxruntime", "--compile"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "compile applies to the torch backend" in err[0]
    assert not out.exists()


@pytest.mark.parametrize("text,expected", [
    ("onnxruntime", BackendSpec("onnxruntime", "fp32", False)),
    ("torch:bf16", BackendSpec("torch", "bf16", False)),
    ("torch:bf16:compile", BackendSpec("torch", "bf16", True)),
])
def test_bench_backend_specs(text, expected) -> None:
    assert BackendSpec.parse(text) == expected
    assert BackendSpec.parse(text).label.endswith("compiled") == expected.compile


@pytest.mark.parametrize("text", ["", "torch:bf16:fast", "a:b:c:d"])
def test_bad_bench_backend_specs(text) -> None:
    with pytest.raises(InvalidArgumentError, match="NAME\\[:DTYPE"):
        BackendSpec.parse(text)


def test_a_compiled_synthesizer_reloads_compiled_in_other_processes(model_dir) -> None:
    from histoaug.mixing.sources import ModelSource

    synth = histoaug.load_synthesizer(model_dir, backend="torch", dtype="bf16", compile=True)  # compiles lazily
    reloadable = ModelSource(synth).reloadable()
    assert (reloadable.backend, reloadable.dtype, reloadable.compile) == ("torch", "bf16", True)
