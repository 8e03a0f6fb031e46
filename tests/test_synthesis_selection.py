"""The backend registry, ``auto``'s runtime choice and its reason, and the lifecycle seam
(prepare / close / runtime_id) on real backends. Nothing here compiles (compiles are lazy)."""

from __future__ import annotations

import json

import pytest
import torch
from synthesis_models import tiny_model_dir

import histoaug
from histoaug.errors import InvalidArgumentError
from histoaug.synthesis.backends.registry import BACKEND_NAMES, BACKENDS
from histoaug.synthesis.backends.selection import COMPILE_PAYS_FROM_PATCHES, choose_runtime, cpu_has_native_bf16
from histoaug.synthesis.backends.torch_backend import compile_unavailable_reason
from histoaug.synthesis.model_source import open_model

CPU = torch.device("cpu")
COMPILES_HERE = compile_unavailable_reason(CPU) is None and cpu_has_native_bf16()


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return open_model(tiny_model_dir(tmp_path_factory))


def test_registry_is_the_one_table() -> None:
    assert BACKEND_NAMES == ("torch", "onnxruntime", "tensorrt") == tuple(BACKENDS)
    assert [name for name, entry in BACKENDS.items() if entry.compiles] == ["torch"]
    with pytest.raises(InvalidArgumentError, match="unknown backend 'jax'"):
        histoaug.load_synthesizer("default", backend="jax")


@pytest.mark.skipif(not COMPILES_HERE, reason="Inductor cannot compile bf16 on this CPU")
def test_auto_compiles_long_or_open_ended_jobs_on_cpu(model) -> None:
    for expected in (None, COMPILE_PAYS_FROM_PATCHES, 10**6):
        choice = choose_runtime(model, CPU, expected_patches=expected)
        assert (choice.backend, choice.dtype, choice.compile) == ("torch", "bf16", True)
        assert "fastest measured" in choice.reason
    assert choose_runtime(model, CPU, dtype="bf16").compile


def test_auto_keeps_short_jobs_and_other_asks_uncompiled(model) -> None:
    short = choose_runtime(model, CPU, expected_patches=COMPILE_PAYS_FROM_PATCHES - 1)
    assert (short.backend, short.dtype, short.compile) == ("torch", "fp32", False)
    assert f"shorter than the {COMPILE_PAYS_FROM_PATCHES} patches" in short.reason
    assert not choose_runtime(model, CPU, compile=False).compile
    fp32 = choose_runtime(model, CPU, dtype="fp32")
    assert (fp32.dtype, fp32.compile) == ("fp32", False) and "dtype fp32 asked for" in fp32.reason
    explicit = choose_runtime(model, CPU, "torch", "bf16")
    assert (explicit.backend, explicit.compile, explicit.reason) == ("torch", False, "asked for")


def test_auto_without_a_cxx_compiler_says_why_and_stays_uncompiled(model) -> None:
    from torch._inductor import config as inductor_config

    with inductor_config.patch({"cpp.cxx": (None, "no-such-compiler++")}):
        choice = choose_runtime(model, CPU)
    assert not choice.compile and "no working C++ compiler" in choice.reason


def test_runtime_id_names_what_decides_the_rounding(model) -> None:
    fp32 = histoaug.load_synthesizer(model.root, backend="torch", dtype="fp32")
    bf16 = histoaug.load_synthesizer(model.root, backend="torch", dtype="bf16")
    info = json.loads(fp32.runtime_id)
    assert fp32.runtime_id == json.dumps(info, sort_keys=True) and info == fp32.runtime
    assert {"backend", "device", "dtype", "attention", "compile", "libraries"} <= set(info)
    assert info["device"].startswith("cpu ") and "torch==" in info["libraries"] and info["compile"] == "eager"
    assert fp32.runtime_id != bf16.runtime_id
    assert fp32.choice.reason == "asked for"


def test_prepare_and_close_are_idempotent(model) -> None:
    synth = histoaug.load_synthesizer(model.root, backend="torch")
    synth.prepare([4, 4, 2])  # eager: nothing to build
    before = synth.generate([0, 1], [1, 2], steps=2)
    with synth:
        assert synth.generate([0, 1], [1, 2], steps=2).tobytes() == before.tobytes()
    synth.close()
    assert synth._backend.unet is None
