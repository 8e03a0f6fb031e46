"""UNet and VAE decoder -> ONNX (opset 23) through torch's dynamo exporter.

The dynamo exporter lowers ``F.scaled_dot_product_attention`` (diffusers' default attention
processor) to ONNX's fused ``Attention`` op at opset >= 23, so every attention block of the
UNet becomes one node and no Softmax is left; :mod:`histoaug.export.graph_checks` asserts it.
Graph inputs and outputs are float32 whatever the compute dtype (casts live inside the graph),
and the batch dimension is dynamic.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import torch

from histoaug.dtypes import DTYPES

logger = logging.getLogger(__name__)

OPSET = 23
UNET_INPUTS = ("sample", "timestep", "encoder_hidden_states")
UNET_OUTPUT = "noise_pred"
VAE_INPUT = "latent"
VAE_OUTPUT = "image"


class UNetForExport(torch.nn.Module):
    """(sample, timestep (B,), text embeddings) -> noise prediction, float32 in and out."""

    def __init__(self, unet: torch.nn.Module, dtype: torch.dtype) -> None:
        super().__init__()
        self.unet, self.dtype = unet, dtype

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor, encoder_hidden_states: torch.Tensor):
        out = self.unet(sample.to(self.dtype), timestep, encoder_hidden_states.to(self.dtype), return_dict=False)[0]
        return out.to(torch.float32)


class VaeDecoderForExport(torch.nn.Module):
    """Unscaled latents -> images in [-1, 1], float32 in and out."""

    def __init__(self, vae: torch.nn.Module, dtype: torch.dtype) -> None:
        super().__init__()
        self.vae, self.dtype = vae, dtype

    def forward(self, latent: torch.Tensor):
        return self.vae.decode(latent.to(self.dtype), return_dict=False)[0].to(torch.float32)


def example_batch(batch: int) -> int:
    """The batch of the tracing inputs: torch.export specialises a dimension of size 1 (the
    graph would then refuse other batch sizes), so tracing uses at least 2."""
    return max(batch, 2)


def _export(module: torch.nn.Module, args: tuple[torch.Tensor, ...], names: tuple[str, ...], output: str,
            path: Path) -> None:
    batch = torch.export.Dim("batch", min=1, max=4096)
    dynamic = tuple({0: batch} for _ in args)
    quiet = [logging.getLogger(name) for name in ("onnxscript", "onnx_ir", "torch.onnx")]
    levels = [q.level for q in quiet]
    for q in quiet:
        q.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(module.eval(), args, dynamo=True, opset_version=OPSET,
                                        dynamic_shapes=dynamic, input_names=list(names), output_names=[output],
                                        verbose=False)
    finally:
        for q, level in zip(quiet, levels, strict=True):
            q.setLevel(level)
    program.save(str(path))


def export_unet(unet: torch.nn.Module, path: Path, *, dtype: str, batch: int, latent_shape: tuple[int, int, int],
                text_shape: tuple[int, int]) -> None:
    dt = DTYPES[dtype]
    model = UNetForExport(unet if dt == torch.float32 else unet.to(dt), dt)
    batch = example_batch(batch)
    args = (torch.randn(batch, *latent_shape), torch.full((batch,), 500.0), torch.randn(batch, *text_shape))
    logger.info("exporting UNet to %s (%s, opset %d)", path, dtype, OPSET)
    _export(model, args, UNET_INPUTS, UNET_OUTPUT, path)


def export_vae_decoder(vae: torch.nn.Module, path: Path, *, dtype: str, batch: int,
                       latent_shape: tuple[int, int, int]) -> None:
    dt = DTYPES[dtype]
    model = VaeDecoderForExport(vae if dt == torch.float32 else vae.to(dt), dt)
    logger.info("exporting VAE decoder to %s (%s, opset %d)", path, dtype, OPSET)
    _export(model, (torch.randn(example_batch(batch), *latent_shape),), (VAE_INPUT,), VAE_OUTPUT, path)
