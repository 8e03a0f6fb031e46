"""The backend registry, ``auto``'s runtime choice and its reason, and the lifecycle seam
(prepare / close / runtime_id) on real backends. Nothing here compiles (compiles are lazy)."""

from __future__ import annotations

import json

import pytest
import torch
from synthesis_models import tiny_model_dir

import histoaug
from histoaug.errors import InvalidArgumentError
from histoaug.synthesis import compile_cache
from histoaug.synthesis.backends.registry import BACKEND_NAMES, BACKENDS
from histoaug.synthesis.backends.selection import choose_runtime, compile_pays, cpu_has_native_bf16
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


def _warm(model, unet_batch: int) -> None:
    """Puts a (dummy) package where the compile cache keeps the UNet of this shape: what ``auto`` checks."""
    path = compile_cache.package_path(compile_cache_key(model, unet_batch))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")


def compile_cache_key(model, unet_batch: int) -> str:
    from histoaug.synthesis.backends.torch_backend import SHORT_SEQUENCE_ATTENTION, unet_package_key

    shapes = ((unet_batch, model.latent_channels, model.latent_size, model.latent_size), (unet_batch,),
              (unet_batch, *model.embeddings.cond.shape[1:]))
    return unet_package_key(model.model_id, "bf16", shapes, CPU, SHORT_SEQUENCE_ATTENTION, True)


@pytest.mark.skipif(not COMPILES_HERE, reason="Inductor cannot compile bf16 on this CPU")
def test_the_compile_decision_against_a_cold_and_a_warm_cache(model, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("HISTOAUG_CACHE", str(tmp_path))
    # cold cache: a job of unknown size is not made to wait ~40 s; a long one is
    cold = choose_runtime(model, CPU)
    assert (cold.backend, cold.dtype, cold.compile) == ("torch", "fp32", False)
    assert "job size unknown" in cold.reason and "expected_patches" in cold.reason
    assert not choose_runtime(model, CPU, expected_patches=1024).compile  # saves ~17 s < a ~40 s compile
    assert choose_runtime(model, CPU, expected_patches=10**5).compile
    # warm cache (guidance 2: UNet batch 64 for blocks of 32): compiling pays at 1024 patches, and for
    # a job of unknown size; a tiny job still does not pay even the ~1 s load
    _warm(model, 64)
    for expected in (None, 1024, 10**6):
        warm = choose_runtime(model, CPU, expected_patches=expected)
        assert (warm.backend, warm.dtype, warm.compile) == ("torch", "bf16", True), warm.reason
        assert "holds 1 of the 1" in warm.reason
    assert not choose_runtime(model, CPU, expected_patches=20).compile
    # the job's own shape decides: blocks of 8, or unguided (batch 32), are still cold
    assert not choose_runtime(model, CPU, batch_size=8).compile
    assert not choose_runtime(model, CPU, guidance=1.0).compile
    _warm(model, 32)
    assert choose_runtime(model, CPU, guidance=1.0).compile
    assert choose_runtime(model, CPU, dtype="bf16").compile


def test_compile_pays_is_one_rule() -> None:
    assert compile_pays(None, cached=1, missing=0)[0]
    assert not compile_pays(None, cached=0, missing=1)[0]
    assert compile_pays(10**4, cached=0, missing=1)[0]  # 165 s saved > 40 s
    assert not compile_pays(2000, cached=0, missing=1)[0]  # 33 s saved < 40 s
    assert compile_pays(100, cached=1, missing=0)[0] and not compile_pays(50, cached=1, missing=0)[0]


def test_auto_keeps_short_jobs_and_other_asks_uncompiled(model) -> None:
    short = choose_runtime(model, CPU, expected_patches=10)
    assert (short.backend, short.dtype, short.compile) == ("torch", "fp32", False)
    assert "a 10-patch job saves" in short.reason
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
