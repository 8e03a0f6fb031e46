"""The torch backend with a compiled UNet (AOTInductor, compile cache): numerics, determinism,
cache reuse by another process, errors. The one test that compiles is the only slow one."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from synthesis_models import psnr, tiny_artifact_dir, tiny_model_dir

import histoaug
from histoaug.benchmarking import BackendSpec
from histoaug.cli.main import main
from histoaug.errors import InvalidArgumentError
from histoaug.synthesis.backends.torch_backend import compile_unavailable_reason

STEPS = 3
LABELS, SEEDS = [0, 1, 0, 1], [31, 32, 33, 34]

NO_COMPILE = compile_unavailable_reason(torch.device("cpu"))
needs_compiler = pytest.mark.skipif(NO_COMPILE is not None, reason=f"torch.compile unavailable: {NO_COMPILE}")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return tiny_model_dir(tmp_path_factory)


SECOND_PROCESS = """
import json, sys
import numpy as np
import histoaug
from histoaug.synthesis import compile_cache
synth = histoaug.load_synthesizer(sys.argv[1], device="cpu", batch_size=4)  # auto, no flags, warm cache
images = synth.generate({labels}, {seeds}, steps={steps}, batch_size=4)
np.save(sys.argv[2], images)
print(json.dumps({{"events": dict(compile_cache.CACHE_EVENTS), "choice": synth.choice.as_dict(),
                   "runtime_id": synth.runtime_id}}))
"""


@needs_compiler
@pytest.mark.slow
def test_compiled_unet_matches_eager_and_a_second_process_reuses_the_compile(model_dir, tmp_path,
                                                                              monkeypatch) -> None:
    from histoaug.synthesis import compile_cache

    monkeypatch.setenv("HISTOAUG_CACHE", str(tmp_path / "cache"))
    eager = histoaug.load_synthesizer(model_dir, backend="torch", dtype="bf16")
    cold = histoaug.load_synthesizer(model_dir, device="cpu", batch_size=4)  # auto, job size unknown, cold cache
    assert not cold.compiled and "job size unknown" in cold.choice.reason
    compiled = histoaug.load_synthesizer(model_dir, device="cpu", batch_size=4, expected_patches=10**6)
    assert compiled.compiled and not eager.compiled and "compiled=True" in repr(compiled)
    assert json.loads(compiled.runtime_id)["compile"] == "aotinductor"
    misses = compile_cache.CACHE_EVENTS["miss"]
    first = compiled.generate(LABELS, SEEDS, steps=STEPS, batch_size=4)
    assert compile_cache.CACHE_EVENTS["miss"] == misses + 1
    reference = eager.generate(LABELS, SEEDS, steps=STEPS, batch_size=4)
    assert psnr(first, reference) >= 40  # fused kernels round differently
    order = [2, 0, 3, 1]
    shuffled = compiled.generate([LABELS[i] for i in order], [SEEDS[i] for i in order], steps=STEPS, batch_size=4)
    np.testing.assert_array_equal(shuffled, first[order])  # same layout -> bit-identical in any order
    assert compile_cache.CACHE_EVENTS["miss"] == misses + 1  # compiled once per shape
    # shorter calls are padded to the compiled shape: no new compile, and the same patches bit for bit
    np.testing.assert_array_equal(compiled.generate(LABELS[:3], SEEDS[:3], steps=STEPS), first[:3])
    np.testing.assert_array_equal(compiled.generate(LABELS[3:], SEEDS[3:], steps=STEPS), first[3:])
    assert compile_cache.CACHE_EVENTS["miss"] == misses + 1
    # now the cache holds the job's shape: auto compiles a job of unknown size too (a ~1 s load)
    warm = histoaug.load_synthesizer(model_dir, device="cpu", batch_size=4)
    assert warm.compiled and "holds 1 of the 1" in warm.choice.reason

    # a fresh process with the same cache loads the package instead of compiling, and rounds the same
    script = SECOND_PROCESS.format(labels=LABELS, seeds=SEEDS, steps=STEPS)
    result = subprocess.run([sys.executable, "-c", script, str(model_dir), str(tmp_path / "second.npy")],
                            capture_output=True, text=True, timeout=240, check=True)
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["events"] == {"hit": 1}, result.stderr[-2000:]
    assert report["runtime_id"] == compiled.runtime_id and report["choice"]["compile"]
    np.testing.assert_array_equal(np.load(tmp_path / "second.npy"), first)


def test_compile_is_refused_off_the_torch_backend(tmp_path_factory, model_dir) -> None:
    artifact = tiny_artifact_dir(tmp_path_factory)
    with pytest.raises(InvalidArgumentError, match="compile applies to the torch backend"):
        histoaug.load_synthesizer(artifact, backend="onnxruntime", compile=True)


def test_compile_without_a_cxx_compiler_says_why(model_dir) -> None:
    from torch._inductor import config as inductor_config

    with (inductor_config.patch({"cpp.cxx": (None, "no-such-compiler++")}),
          pytest.raises(InvalidArgumentError, match=r"no working C\+\+ compiler")):
        histoaug.load_synthesizer(model_dir, backend="torch", compile=True)


@needs_compiler
def test_a_failing_compile_is_one_typed_error(model_dir, monkeypatch) -> None:
    from torch._inductor.exc import InductorError

    from histoaug.synthesis import compile_cache

    synth = histoaug.load_synthesizer(model_dir, backend="torch", compile=True)

    def failing_compile(*args, **kwargs):
        raise InductorError(RuntimeError("C++ compile error: omp.h not found\nlong log"), "")

    monkeypatch.setattr(compile_cache, "load_or_compile", failing_compile)
    with pytest.raises(InvalidArgumentError, match=r"torch\.compile cannot compile this model here .*omp\.h"):
        synth.generate([0], [1], steps=1)


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
    ("auto", BackendSpec("auto", "", False)),
])
def test_bench_backend_specs(text, expected) -> None:
    assert BackendSpec.parse(text) == expected
    assert BackendSpec.parse(text).label.endswith("compiled") == expected.compile
    assert BackendSpec.parse(text).label.endswith("auto") == (text == "auto")


@pytest.mark.parametrize("text,match", [
    ("", "NAME\\[:DTYPE"), ("torch:bf16:fast", "NAME\\[:DTYPE"), ("a:b:c:d", "NAME\\[:DTYPE"),
    ("tourch:fp32", "unknown backend 'tourch'"), ("auto:bf16", "unknown backend 'auto'"),
    ("torch:int8", "unknown dtype 'int8'"),
    ("onnxruntime:fp32:compile", "compile applies to the torch backend"),
])
def test_bad_bench_backend_specs(text, match) -> None:
    with pytest.raises(InvalidArgumentError, match=match):
        BackendSpec.parse(text)


def test_bench_refuses_a_bad_spec_before_building_anything(tmp_path, capsys) -> None:
    code = main(["bench", "--preset", "tiny", "--workdir", str(tmp_path / "work"), "--backends", "torch:int8"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "unknown dtype 'int8'" in err[0]
    assert not (tmp_path / "work").exists()


@needs_compiler
def test_a_compiled_synthesizer_is_reloaded_compiled(model_dir) -> None:
    """What the mixing pool's producer process receives and loads (the compile is lazy: cheap)."""
    from histoaug.mixing.sources import ModelSource

    synth = histoaug.load_synthesizer(model_dir, backend="torch", dtype="bf16", compile=True)
    reloadable = ModelSource(synth).reloadable()
    assert (reloadable.backend, reloadable.dtype, reloadable.compile) == ("torch", "bf16", True)
    reloaded = reloadable.synthesizer
    assert reloaded is not synth and (reloaded.backend, reloaded.dtype, reloaded.compiled) == ("torch", "bf16", True)
