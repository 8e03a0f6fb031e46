"""ONNX Runtime backend: the exported UNet and VAE decoder graphs of an artifact.

CPU: the CPU execution provider with all graph optimisations, intra-op threads = torch's
thread count, memory-pattern planning and the arena. CUDA (onnxruntime-gpu): the CUDA
execution provider with IO binding, so inputs and outputs stay in torch CUDA tensors without
host copies. Graph inputs and outputs are float32 whatever the export dtype (casts live inside
the graph), so the sampling loop is the same.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from histoaug.errors import ArtifactError, InvalidArgumentError
from histoaug.synthesis.artifact_format import UNET_FILE, VAE_DECODER_FILE

logger = logging.getLogger(__name__)


def session_options(threads: int | None = None):
    """CPU-tuned session options (also fine for CUDA)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.inter_op_num_threads = 1
    options.enable_mem_pattern = True
    options.enable_cpu_mem_arena = True
    options.log_severity_level = 3
    return options


def providers_for(device: torch.device) -> list:
    import onnxruntime as ort

    available = ort.get_available_providers()
    if device.type == "cpu":
        return ["CPUExecutionProvider"]
    if device.type == "cuda":
        if "CUDAExecutionProvider" not in available:
            raise InvalidArgumentError("onnxruntime backend on CUDA needs onnxruntime-gpu "
                                       f"(available providers: {', '.join(available)})")
        return [("CUDAExecutionProvider", {"device_id": device.index or 0}), "CPUExecutionProvider"]
    raise InvalidArgumentError(f"onnxruntime backend does not run on device {device}")


def open_session(path: Path, device: torch.device, threads: int | None = None):
    import onnxruntime as ort

    try:
        return ort.InferenceSession(str(path), session_options(threads), providers=providers_for(device))
    except (ort.capi.onnxruntime_pybind11_state.Fail, ort.capi.onnxruntime_pybind11_state.InvalidGraph,
            ort.capi.onnxruntime_pybind11_state.NotImplemented, ort.capi.onnxruntime_pybind11_state.InvalidProtobuf,
            ort.capi.onnxruntime_pybind11_state.NoSuchFile) as exc:
        raise ArtifactError(f"{path}: onnxruntime cannot load this graph ({exc})") from exc


class OnnxRuntimeBackend:
    name = "onnxruntime"

    def __init__(self, onnx_dir: Path, device: torch.device, dtype: str, *, threads: int | None = None) -> None:
        self.device, self.dtype = device, dtype
        self.unet = open_session(onnx_dir / UNET_FILE, device, threads)
        self.vae = open_session(onnx_dir / VAE_DECODER_FILE, device, threads)
        self._unet_inputs = [i.name for i in self.unet.get_inputs()]
        self._vae_input = self.vae.get_inputs()[0].name
        if self._unet_inputs != ["sample", "timestep", "encoder_hidden_states"]:
            raise ArtifactError(f"{onnx_dir / UNET_FILE}: unexpected inputs {self._unet_inputs}")

    # --- CPU: numpy views of CPU tensors, no copies --------------------------------------------
    def _run_cpu(self, session, feeds: dict[str, torch.Tensor]) -> torch.Tensor:
        arrays = {k: np.ascontiguousarray(v.detach().cpu().float().numpy()) for k, v in feeds.items()}
        return torch.from_numpy(session.run(None, arrays)[0])

    # --- CUDA: IO binding on torch CUDA tensors ------------------------------------------------
    def _run_cuda(self, session, feeds: dict[str, torch.Tensor], out_shape: tuple[int, ...]) -> torch.Tensor:
        binding = session.io_binding()
        device_id = self.device.index or 0
        keep = []
        for name, tensor in feeds.items():
            tensor = tensor.to(self.device, torch.float32).contiguous()
            keep.append(tensor)
            binding.bind_input(name=name, device_type="cuda", device_id=device_id, element_type=np.float32,
                               shape=tuple(tensor.shape), buffer_ptr=tensor.data_ptr())
        out = torch.empty(out_shape, dtype=torch.float32, device=self.device)
        binding.bind_output(name=session.get_outputs()[0].name, device_type="cuda", device_id=device_id,
                            element_type=np.float32, shape=out_shape, buffer_ptr=out.data_ptr())
        binding.synchronize_inputs()
        session.run_with_iobinding(binding)
        binding.synchronize_outputs()
        return out

    def predict_noise(self, latents: torch.Tensor, timesteps: torch.Tensor, embeddings: torch.Tensor) -> torch.Tensor:
        feeds = {"sample": latents, "timestep": timesteps, "encoder_hidden_states": embeddings}
        if self.device.type == "cuda":
            return self._run_cuda(self.unet, feeds, tuple(latents.shape))
        return self._run_cpu(self.unet, feeds)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        if self.device.type == "cuda":
            b, _, h, w = latents.shape
            scale = self.vae.get_outputs()[0].shape[-1] // self.vae.get_inputs()[0].shape[-1]
            return self._run_cuda(self.vae, {self._vae_input: latents}, (b, 3, h * scale, w * scale))
        return self._run_cpu(self.vae, {self._vae_input: latents})
