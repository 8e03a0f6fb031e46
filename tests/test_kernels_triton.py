"""Triton kernels against their torch references: on the CPU under TRITON_INTERPRET=1 (CI), on CUDA when present.

Errors are measured as ||out - ref|| / ||ref|| against a float64 reference on fresh random inputs
(not zeros), and outputs are poisoned first so an unwritten element cannot pass.
"""

from __future__ import annotations

import copy
import importlib.util
import logging
import os

import pytest
import torch

HAS_TRITON = importlib.util.find_spec("triton") is not None
pytestmark = pytest.mark.skipif(not HAS_TRITON, reason="triton is not installed (it comes with the dev extra)")


@pytest.fixture(params=["cpu-interpreter", pytest.param("cuda", marks=pytest.mark.gpu)])
def device(request, monkeypatch) -> torch.device:
    """The CPU under Triton's interpreter (always), and CUDA (gpu-marked, where one exists)."""
    if request.param == "cuda":
        if not torch.cuda.is_available():
            pytest.skip("no CUDA device")
        monkeypatch.setenv("TRITON_INTERPRET", "0")
        return torch.device("cuda")
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    from histoaug.kernels.dispatch import interpreter_unavailable_reason, triton_import_error

    missing = triton_import_error()
    if missing is not None:
        pytest.skip(missing)
    reason = interpreter_unavailable_reason()
    # conftest imports Triton in interpreter mode on machines without CUDA: a failure here is a
    # regression of that set-up, not a reason to skip the kernel checks
    assert reason is None, reason
    return torch.device("cpu")


def relative_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    ref = ref.double()
    return float((out.double() - ref).norm() / ref.norm())


# float32 arithmetic lands far under 1e-5; a reduced-precision output carries its own rounding (~4e-3 for bf16)
TOLERANCE = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1e-2}

NORM_CASES = [
    # (shape, groups, dtype, memory format): SD's 32 groups of 10 channels; channels-last; odd sizes
    ((2, 320, 8, 8), 32, torch.float32, torch.contiguous_format),
    ((2, 64, 12, 12), 16, torch.float32, torch.channels_last),
    ((3, 20, 5, 7), 5, torch.bfloat16, torch.contiguous_format),
    ((2, 40, 6, 6), 4, torch.float16, torch.channels_last),
]


@pytest.mark.parametrize(("shape", "groups", "dtype", "memory_format"), NORM_CASES)
@pytest.mark.parametrize("variant", ["norm", "silu", "add+silu", "full add"])
def test_group_norm_matches_reference(device, shape, groups, dtype, memory_format, variant) -> None:
    from histoaug.kernels.group_norm import group_norm_reference, group_norm_triton

    if device.type == "cpu" and dtype == torch.float16:
        pytest.skip("fp16 group_norm has no CPU reference kernel in torch")
    generator = torch.Generator().manual_seed(hash((shape, variant)) % 2**31)
    n, c, _, _ = shape
    # a large mean and a non-unit spread: the single-pass statistics must not cancel
    x = (torch.randn(shape, generator=generator) * 3 + 20).to(device, dtype).contiguous(memory_format=memory_format)
    weight = torch.randn(c, generator=generator).to(device, dtype)
    bias = torch.randn(c, generator=generator).to(device, dtype)
    add = {"add+silu": torch.randn(n, c, 1, 1, generator=generator),
           "full add": torch.randn(shape, generator=generator)}.get(variant)
    add = None if add is None else add.to(device, dtype)
    silu = variant != "norm"
    out = group_norm_triton(x, groups, weight, bias, 1e-5, add=add, silu=silu)
    summed = x if add is None else x + add  # rounded to ``dtype``, as the reference (and the kernel) round it
    truth = group_norm_reference(summed.double(), groups, weight.double(), bias.double(), 1e-5, silu=silu)
    assert out.dtype == dtype and out.shape == x.shape
    assert out.is_contiguous(memory_format=memory_format)
    assert torch.isfinite(out).all()
    tolerance = TOLERANCE[dtype]
    if device.type == "cpu" and dtype == torch.bfloat16:
        # Triton's interpreter truncates fp32 -> bf16 casts instead of rounding to nearest (measured:
        # half of all casts differ from torch's, with a bias), and the add path casts twice
        tolerance = 3e-2
    assert relative_error(out, truth) < tolerance


def test_group_norm_three_dims_and_no_affine(device) -> None:
    """(N, C, L) inputs (attention blocks' norm) through the dispatch, and weight/bias None."""
    from histoaug.kernels.group_norm import group_norm, group_norm_reference

    x = torch.randn(2, 32, 50, generator=torch.Generator().manual_seed(3)).to(device).transpose(1, 2)
    x = x.reshape(2, 50, 32).transpose(1, 2)  # (N, C, L) view with C innermost, as diffusers passes it
    out = group_norm(x, 8)
    assert relative_error(out, group_norm_reference(x.double(), 8)) < 1e-5


@pytest.mark.parametrize(("shape", "size", "dtype", "memory_format"), [
    ((2, 3, 96, 96), 96, torch.float32, torch.contiguous_format),   # the embedded model: no resize
    ((2, 3, 96, 96), 48, torch.float16, torch.contiguous_format),    # 2x antialiased downscale
    ((1, 3, 64, 50), 48, torch.float32, torch.channels_last),        # non-integer, non-square
    ((2, 3, 24, 24), 48, torch.bfloat16, torch.contiguous_format),   # upscale (test models)
])
def test_postprocess_matches_reference(device, shape, size, dtype, memory_format) -> None:
    from histoaug.kernels.postprocess import to_uint8_nhwc_reference, to_uint8_nhwc_triton

    if device.type == "cpu" and dtype == torch.float16:
        dtype = torch.float32
    generator = torch.Generator().manual_seed(shape[-1])
    # beyond [-1, 1] on both sides, so the clamps are exercised
    images = (torch.rand(shape, generator=generator) * 2.6 - 1.3).to(device, dtype)
    images = images.contiguous(memory_format=memory_format)
    out = to_uint8_nhwc_triton(images, size)
    ref = to_uint8_nhwc_reference(images, size)
    assert out.shape == (shape[0], size, size, 3) and out.dtype == torch.uint8 and out.is_contiguous()
    diff = (out.int() - ref.int()).abs()
    if shape[-2:] == (size, size):
        assert torch.equal(out, ref)
    else:  # tap order differs from torch's kernels: an exact .5 boundary may round the other way
        assert int(diff.max()) <= 1 and float((diff > 0).float().mean()) < 1e-3


def test_antialias_taps_match_torch_interpolate() -> None:
    """The host-side filter tables reproduce F.interpolate's antialiased weights exactly enough."""
    import torch.nn.functional as F

    from histoaug.kernels.postprocess import antialias_taps

    for in_size, out_size in [(512, 96), (256, 96), (100, 96), (48, 96)]:
        starts, weights = antialias_taps(in_size, out_size)
        eye = torch.eye(in_size, dtype=torch.float64)[None, None]  # each column a unit impulse
        dense = F.interpolate(eye, size=(out_size, in_size), mode="bilinear", antialias=True,
                              align_corners=False)[0, 0]
        ours = torch.zeros(out_size, in_size, dtype=torch.float64)
        for i, (start, w) in enumerate(zip(starts, weights, strict=True)):
            ours[i, start:start + len(w)] = torch.tensor(w, dtype=torch.float64)
        assert torch.allclose(ours, dense, atol=1e-6)


@pytest.mark.parametrize("where", ["cpu-reference", pytest.param("cuda", marks=pytest.mark.gpu)])
def test_fused_unet_matches_unfused(where, monkeypatch) -> None:
    """fuse_group_norms: same state-dict keys, same function (bit-identical on the reference path); idempotent."""
    from histoaug.kernels.diffusers_fusion import FusedGroupNorm, fuse_group_norms
    from histoaug.models import build_pipeline

    if where == "cuda" and not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    device = torch.device("cuda" if where == "cuda" else "cpu")
    unet = build_pipeline("tiny", seed=0).unet.eval().to(device)
    generator = torch.Generator().manual_seed(0)
    sample = torch.randn(2, unet.config.in_channels, 8, 8, generator=generator).to(device)
    text = torch.randn(2, 77, unet.config.cross_attention_dim, generator=generator).to(device)
    timestep = torch.tensor([321.0, 20.0], device=device)
    fused = copy.deepcopy(unet)
    counts = fuse_group_norms(fused)
    assert counts["resnet_blocks"] > 0 and counts["output_norms"] == 1
    assert fuse_group_norms(fused) == {"resnet_blocks": 0, "output_norms": 0, "plain_norms": 0}
    assert list(fused.state_dict()) == list(unet.state_dict())
    assert not any(type(m) is torch.nn.GroupNorm for m in fused.modules())
    assert any(isinstance(m, FusedGroupNorm) and m.silu for m in fused.modules())
    with torch.no_grad():
        ref = unet(sample, timestep, text).sample
        out = fused(sample, timestep, text).sample
    if device.type == "cpu":
        assert torch.equal(out, ref)
    else:
        assert relative_error(out, ref) < 1e-4  # TF32/cuDNN convolutions around the norms


def test_dispatch_falls_back_on_cpu_without_interpreter(monkeypatch, caplog) -> None:
    """No Triton on CPU tensors unless interpreting: the reference runs (bit-identical) and it is logged once."""
    from histoaug.kernels import dispatch
    from histoaug.kernels.group_norm import group_norm, group_norm_reference

    monkeypatch.setenv("TRITON_INTERPRET", "0")
    monkeypatch.setattr(dispatch, "_LOGGED", set())
    x = torch.randn(2, 8, 4, 4)
    with caplog.at_level(logging.INFO, logger="histoaug.kernels.dispatch"):
        for _ in range(3):
            assert torch.equal(group_norm(x, 4, silu=True), group_norm_reference(x, 4, silu=True))
    assert sum("torch reference" in r.message for r in caplog.records) == 1
    assert dispatch.kernels_runtime_id(torch.device("cpu")) == {"kernels": "torch reference"}


def test_interpreter_set_after_triton_import_falls_back_to_reference() -> None:
    """TRITON_INTERPRET=1 set after Triton was imported cannot interpret: the reference runs, no crash."""
    import subprocess
    import sys

    script = (
        "import os, torch, triton.language\n"
        "os.environ['TRITON_INTERPRET'] = '1'\n"
        "from histoaug.kernels.dispatch import interpreter_unavailable_reason\n"
        "from histoaug.kernels.group_norm import group_norm, group_norm_reference\n"
        "x = torch.randn(2, 8, 4, 4)\n"
        "assert torch.equal(group_norm(x, 4, silu=True), group_norm_reference(x, 4, silu=True))\n"
        "print(interpreter_unavailable_reason())\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "imported before TRITON_INTERPRET=1" in result.stdout
