"""The TensorRT backend's parts that run without TensorRT: profiles, cache keys, atomic cache writes,
the version gate, and the build sequence (against a recording stand-in for the ``tensorrt`` module)."""

from __future__ import annotations

import threading
from pathlib import Path
from types import SimpleNamespace

import onnx
import pytest
from onnx import TensorProto, helper

from histoaug.errors import ArtifactError, InvalidArgumentError
from histoaug.synthesis.backends import tensorrt_backend as trtb
from histoaug.synthesis.backends.tensorrt_backend import BatchProfile, GpuIdentity

H100 = GpuIdentity("NVIDIA H100 80GB HBM3", (9, 0), "10.14.1")


def test_profiles_cover_every_batch_up_to_the_largest_once() -> None:
    profiles = trtb.plan_profiles([64, 13, 64])
    assert profiles == (BatchProfile(1, 13, 13), BatchProfile(14, 64, 64))
    for batch in range(1, 65):  # the smaller last batch never needs its own engine
        assert sum(p.covers(batch) for p in profiles) == 1
        assert profiles[trtb.profile_index(profiles, batch)].covers(batch)
    assert trtb.profile_index(profiles, 65) is None


def test_profiles_are_bounded_and_keep_the_largest_sizes() -> None:
    profiles = trtb.plan_profiles([1, 2, 4, 8, 16, 32], max_profiles=3)
    assert [p.opt for p in profiles] == [8, 16, 32] and profiles[0].min == 1
    with pytest.raises(InvalidArgumentError):
        trtb.plan_profiles([0, 4])
    with pytest.raises(InvalidArgumentError):
        trtb.plan_profiles([])


def test_input_shapes_vary_only_the_batch() -> None:
    shapes = trtb.input_shapes("unet", BatchProfile(3, 8, 8), (4, 12, 12), (77, 768))
    assert shapes == {"sample": ((3, 4, 12, 12), (8, 4, 12, 12), (8, 4, 12, 12)),
                      "timestep": ((3,), (8,), (8,)),
                      "encoder_hidden_states": ((3, 77, 768), (8, 77, 768), (8, 77, 768))}
    assert trtb.input_shapes("vae", BatchProfile(1, 2, 4), (4, 12, 12), (77, 768)) == {
        "latent": ((1, 4, 12, 12), (2, 4, 12, 12), (4, 4, 12, 12))}


def test_engine_key_changes_with_everything_that_makes_an_engine(tmp_path) -> None:
    profiles = trtb.plan_profiles([8])
    shapes = {"latent": [4, 12, 12], "text": [77, 768]}
    base = trtb.engine_key("graph-a", H100, "fp16", profiles, shapes)
    assert base == trtb.engine_key("graph-a", H100, "fp16", profiles, shapes)  # stable
    variants = [
        trtb.engine_key("graph-b", H100, "fp16", profiles, shapes),
        trtb.engine_key("graph-a", GpuIdentity("NVIDIA A100-SXM4-80GB", (8, 0), "10.14.1"), "fp16", profiles, shapes),
        trtb.engine_key("graph-a", GpuIdentity(H100.name, H100.capability, "10.15.0"), "fp16", profiles, shapes),
        trtb.engine_key("graph-a", H100, "bf16", profiles, shapes),
        trtb.engine_key("graph-a", H100, "fp16", trtb.plan_profiles([8, 16]), shapes),
        trtb.engine_key("graph-a", H100, "fp16", profiles, {"latent": [4, 64, 64], "text": [77, 768]}),
    ]
    assert len({base, *variants}) == len(variants) + 1
    # the timing cache is per GPU and TensorRT version, not per graph
    other_trt = GpuIdentity(H100.name, H100.capability, "10.15.0")
    assert trtb.timing_cache_path(H100, tmp_path) != trtb.timing_cache_path(other_trt, tmp_path)
    assert trtb.timing_cache_path(H100, tmp_path).parent == tmp_path


def test_cache_dir_follows_histoaug_cache(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("HISTOAUG_CACHE", str(tmp_path))
    assert trtb.cache_dir() == tmp_path / "tensorrt"
    assert trtb.engine_path("unet", "abc") == tmp_path / "tensorrt" / "unet-abc.plan"


def test_store_build_is_atomic_under_concurrent_writers(tmp_path) -> None:
    """Two builders of the same engine: each file ends whole (one writer's bytes), no temporaries left."""
    engine, timing = tmp_path / "unet-k.plan", tmp_path / "timing-g.cache"
    payloads = [bytes([i]) * 2_000_000 for i in (1, 2)]
    threads = [threading.Thread(target=trtb.store_build, args=(engine, p, timing, p[:1000])) for p in payloads]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert engine.read_bytes() in payloads and timing.read_bytes() in [p[:1000] for p in payloads]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["timing-g.cache", "unet-k.plan"]
    assert trtb.read_timing_cache(tmp_path / "missing.cache") == b""


def _graph(path: Path, with_attention: bool) -> Path:
    """A minimal opset-23 graph, with or without an ONNX Attention node."""
    q = helper.make_tensor_value_info("q", TensorProto.FLOAT, [1, 2, 4, 8])
    out = helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 2, 4, 8])
    node = (helper.make_node("Attention", ["q", "q", "q"], ["out"]) if with_attention
            else helper.make_node("Identity", ["q"], ["out"]))
    model = helper.make_model(helper.make_graph([node], "g", [q], [out]), opset_imports=[helper.make_opsetid("", 23)])
    onnx.save(model, str(path))
    return path


def test_version_gate_names_the_needed_version(tmp_path) -> None:
    attention = _graph(tmp_path / "unet.onnx", with_attention=True)
    plain = _graph(tmp_path / "plain.onnx", with_attention=False)
    assert trtb.required_version(attention) == (10, 14)
    assert trtb.required_version(plain) == (10, 0)
    trtb.check_version("10.14.1.48", (10, 14), attention)
    trtb.check_version("10.3.0", (10, 0), plain)
    with pytest.raises(InvalidArgumentError, match=r"TensorRT parses from 10\.14 on; tensorrt 10\.13\.2 is installed"):
        trtb.check_version("10.13.2", (10, 14), attention)
    assert trtb.parse_version("10.14.0rc1") == (10, 14, 0) and trtb.parse_version("10.9.0.34") < (10, 14)


class _Recorder:
    """A stand-in for the ``tensorrt`` module that records the builder calls (TensorRT 10 names)."""

    def __init__(self, parse_ok: bool = True) -> None:
        self.calls: list[tuple] = []
        rec = self.calls

        class Config:
            builder_optimization_level = None

            def create_timing_cache(self, data):
                rec.append(("create_timing_cache", data))
                return SimpleNamespace(serialize=lambda: b"timing-after")

            def set_timing_cache(self, cache, ignore_mismatch):
                rec.append(("set_timing_cache", ignore_mismatch))

            def add_optimization_profile(self, profile):
                rec.append(("add_optimization_profile", dict(profile.shapes)))

            def get_timing_cache(self):
                return SimpleNamespace(serialize=lambda: b"timing-after")

            def set_flag(self, flag):
                rec.append(("set_flag", flag))

        class Profile:
            def __init__(self):
                self.shapes = {}

            def set_shape(self, name, low, opt, high):
                self.shapes[name] = (low, opt, high)

        class Builder:
            def __init__(self, logger):
                pass

            def create_network(self, flags):
                rec.append(("create_network", flags))
                return "network"

            def create_builder_config(self):
                return Config()

            def create_optimization_profile(self):
                return Profile()

            def build_serialized_network(self, network, config):
                rec.append(("build", config.builder_optimization_level))
                return b"engine-bytes"

        class Parser:
            def __init__(self, network, logger):
                self.num_errors = 0 if parse_ok else 1

            def parse_from_file(self, path):
                rec.append(("parse_from_file", Path(path).name))
                return parse_ok

            def get_error(self, index):
                return "Attention: unsupported"

        self.Logger = type("Logger", (), {"WARNING": 2, "__init__": lambda self, level: None})
        self.Builder, self.OnnxParser = Builder, Parser
        self.NetworkDefinitionCreationFlag = SimpleNamespace(STRONGLY_TYPED=1)


def test_build_sequence_is_strongly_typed_with_profiles_and_timing_cache(tmp_path) -> None:
    trt = _Recorder()
    timing = tmp_path / "timing.cache"
    timing.write_bytes(b"timing-before")
    shapes = [trtb.input_shapes("vae", p, (4, 12, 12), (77, 8)) for p in trtb.plan_profiles([4, 16])]
    engine, timing_after = trtb.build_engine(trt, tmp_path / "vae_decoder.onnx", shapes, timing)
    assert (engine, timing_after) == (b"engine-bytes", b"timing-after")
    assert ("create_network", 1 << 1) in trt.calls  # STRONGLY_TYPED, nothing else
    assert not any(call[0] == "set_flag" for call in trt.calls)  # no FP16/BF16 flags on a typed graph
    assert ("create_timing_cache", b"timing-before") in trt.calls and ("set_timing_cache", False) in trt.calls
    profiles = [call[1] for call in trt.calls if call[0] == "add_optimization_profile"]
    assert profiles == [{"latent": ((1, 4, 12, 12), (4, 4, 12, 12), (4, 4, 12, 12))},
                        {"latent": ((5, 4, 12, 12), (16, 4, 12, 12), (16, 4, 12, 12))}]
    assert ("build", trtb.BUILDER_OPTIMIZATION_LEVEL) in trt.calls


def test_parse_failure_is_an_artifact_error(tmp_path) -> None:
    with pytest.raises(ArtifactError, match=r"TensorRT cannot parse the graph.*Attention: unsupported"):
        trtb.build_engine(_Recorder(parse_ok=False), tmp_path / "unet.onnx", [], tmp_path / "t.cache")
