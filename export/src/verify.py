"""Export self-check: torch and ONNX Runtime on the same inputs, error against a tolerance."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from histoaug.errors import ArtifactError

logger = logging.getLogger(__name__)

# Max |ort - torch| relative to the reference's max |value|, per export dtype.
TOLERANCE = {"fp32": 1e-4, "fp16": 1e-2, "bf16": 5e-2}


@dataclass(frozen=True)
class Check:
    graph: str
    max_abs_error: float
    reference_scale: float
    tolerance: float
    provider: str = "CPUExecutionProvider"

    @property
    def relative_error(self) -> float:
        return self.max_abs_error / max(self.reference_scale, 1e-6)

    @property
    def ok(self) -> bool:
        return bool(np.isfinite(self.max_abs_error)) and self.relative_error <= self.tolerance


def compare(graph: str, reference: torch.Tensor, output: np.ndarray, dtype: str,
            provider: str = "CPUExecutionProvider") -> Check:
    ref = reference.detach().float().cpu().numpy()
    if ref.shape != output.shape:
        raise ArtifactError(f"{graph}: ONNX output shape {output.shape} != torch {ref.shape}")
    return Check(graph, float(np.abs(ref - output).max()), float(np.abs(ref).max()), TOLERANCE[dtype], provider)


@torch.no_grad()
def verify_export(onnx_dir: Path, unet: torch.nn.Module, vae: torch.nn.Module, *, dtype: str, batch: int,
                  latent_shape: tuple[int, int, int], text_shape: tuple[int, int], seed: int = 0) -> list[Check]:
    """Run both graphs in ORT and the torch modules (fp32) on the same random inputs.

    ORT runs them on the provider that will run the export (``verification_device``: CUDA for
    fp16/bf16 where onnxruntime-gpu is present, else the CPU), and each check records it. The
    reference is the fp32 torch model, so a reduced-precision export is checked against what it
    approximates. Raises ArtifactError when a graph is beyond tolerance.
    """
    from histoaug.export.onnx_graphs import UNetForExport, VaeDecoderForExport
    from histoaug.synthesis.artifact_format import UNET_FILE, VAE_DECODER_FILE
    from histoaug.synthesis.backends.onnxruntime_backend import open_session, verification_device

    generator = torch.Generator().manual_seed(seed)
    sample = torch.randn(batch, *latent_shape, generator=generator)
    timestep = torch.full((batch,), 321.0)
    text = torch.randn(batch, *text_shape, generator=generator)
    latent = torch.randn(batch, *latent_shape, generator=generator)
    device = verification_device(dtype)
    unet_session = open_session(onnx_dir / UNET_FILE, device)
    vae_session = open_session(onnx_dir / VAE_DECODER_FILE, device)
    provider = unet_session.get_providers()[0]
    unet_out = unet_session.run(None, {"sample": sample.numpy(), "timestep": timestep.numpy(),
                                       "encoder_hidden_states": text.numpy()})[0]
    vae_out = vae_session.run(None, {vae_session.get_inputs()[0].name: latent.numpy()})[0]
    checks = [
        compare("unet", UNetForExport(unet.float(), torch.float32)(sample, timestep, text), unet_out, dtype, provider),
        compare("vae_decoder", VaeDecoderForExport(vae.float(), torch.float32)(latent), vae_out, dtype, provider),
    ]
    for check in checks:
        logger.info("verify %s on %s: max abs error %.3g (relative %.3g, tolerance %.3g)", check.graph,
                    check.provider, check.max_abs_error, check.relative_error, check.tolerance)
    failed = [c for c in checks if not c.ok]
    if failed:
        raise ArtifactError("export verification failed: " + "; ".join(
            f"{c.graph} relative error {c.relative_error:.3g} > {c.tolerance:.3g}" for c in failed))
    return checks
