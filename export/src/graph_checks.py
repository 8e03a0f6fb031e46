"""Structural checks of exported graphs: one fused Attention node per attention block, no Softmax."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import onnx
import torch

from histoaug.errors import ArtifactError


def op_counts(path: Path) -> Counter:
    """Op types of the main graph (the exporter inlines functions)."""
    model = onnx.load(str(path), load_external_data=False)
    return Counter(node.op_type for node in model.graph.node)


def opset_of(path: Path) -> int:
    model = onnx.load(str(path), load_external_data=False)
    return max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))


def attention_blocks(module: torch.nn.Module) -> int:
    """diffusers ``Attention`` modules (self- and cross-attention of each transformer block)."""
    from diffusers.models.attention_processor import Attention

    return sum(isinstance(m, Attention) for m in module.modules())


def check_fused_attention(path: Path, expected: int) -> dict[str, int]:
    """Raise unless the graph has exactly ``expected`` Attention nodes and no Softmax."""
    counts = op_counts(path)
    found, softmax = counts.get("Attention", 0), counts.get("Softmax", 0)
    if found != expected or softmax:
        raise ArtifactError(f"{path.name}: {found} fused Attention nodes for {expected} attention blocks, "
                            f"{softmax} Softmax nodes left (attention was not fused)")
    return {"attention_nodes": found, "softmax_nodes": softmax, "nodes": sum(counts.values())}
