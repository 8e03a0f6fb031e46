"""ONNX Runtime backend: the exported UNet and VAE decoder graphs of an artifact.

CPU: the CPU execution provider with all graph optimisations, intra-op threads = torch's
thread count, memory-pattern planning and the arena.

CUDA (onnxruntime-gpu), following ONNX Runtime's CUDA execution provider documentation:
- the session runs on torch's current CUDA stream of the backend's device (provider options
  ``user_compute_stream`` / ``has_user_compute_stream``), so ORT kernels are ordered with the
  torch ops around them without host synchronisation (``disable_synchronize_execution_providers``);
- IO binding with static, reused device buffers per batch size (``bind_input`` /
  ``bind_output`` on torch CUDA tensors, bound once);
- ORT CUDA graphs (``enable_cuda_graph``, one graph per batch size through the run option
  ``gpu_graph_id``) where the graph allows it (every node on the CUDA provider); otherwise the
  session runs without and ``runtime_id`` says so;
- no silent CPU fallback: :meth:`OnnxRuntimeBackend.prepare` profiles one run and fails with one
  line naming the compute nodes that ORT placed on the CPU (ORT assigns any node the CUDA
  provider lacks a kernel for, e.g. an opset-23 ``Attention`` on an older ORT, to the CPU and,
  at the default log level, says nothing).

Graph inputs and outputs are float32 whatever the export dtype (casts live inside the graph),
so the sampling loop is the same.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from histoaug.errors import ArtifactError, InvalidArgumentError
from histoaug.synthesis.artifact_format import UNET_FILE, VAE_DECODER_FILE

logger = logging.getLogger(__name__)

CUDA_PROVIDER = "CUDAExecutionProvider"

# Compute ops that must never run on the CPU in a CUDA session; any other node placed there with an
# output above SMALL_OUTPUT_BYTES counts too (ORT keeps tiny shape arithmetic on the CPU on purpose).
COMPUTE_OPS = frozenset({"Attention", "Conv", "ConvTranspose", "MatMul", "Gemm", "Softmax", "GroupNormalization",
                         "InstanceNormalization", "LayerNormalization", "Resize", "Einsum", "Sigmoid", "Gelu",
                         "MultiHeadAttention", "BatchNormalization"})
SMALL_OUTPUT_BYTES = 64 * 1024

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


def providers_for(device: torch.device, *, stream: torch.cuda.Stream | None = None,
                  cuda_graph: bool = False) -> list:
    """Execution providers for ``device``: CPU alone, or the CUDA provider on ``device``'s index
    (on ``stream`` when given, with CUDA graphs when asked). ORT keeps its CPU provider implicitly
    for what CUDA cannot run; :func:`cpu_placed_nodes` finds what went there."""
    import onnxruntime as ort

    if device.type == "cpu":
        return ["CPUExecutionProvider"]
    if device.type == "cuda":
        available = ort.get_available_providers()
        if CUDA_PROVIDER not in available:
            raise InvalidArgumentError("onnxruntime backend on CUDA needs onnxruntime-gpu "
                                       f"(available providers: {', '.join(available)})")
        options = {"device_id": str(device.index or 0)}
        if stream is not None:
            options.update(has_user_compute_stream="1", user_compute_stream=str(int(stream.cuda_stream)))
        if cuda_graph:
            options["enable_cuda_graph"] = "1"
        return [(CUDA_PROVIDER, options)]
    raise InvalidArgumentError(f"onnxruntime backend does not run on device {device}")


def cpu_placed_nodes(profile_file: str | Path) -> list[str]:
    """Compute nodes an ORT profile (``enable_profiling``) shows running outside the CUDA provider.

    Returns 'name (OpType on Provider)' for every node event whose provider is not CUDA and that
    is a compute op or produced more than SMALL_OUTPUT_BYTES.
    """
    events = json.loads(Path(profile_file).read_text())
    found: dict[str, str] = {}
    for event in events:
        args = event.get("args") or {}
        if event.get("cat") != "Node" or "provider" not in args or args["provider"] == CUDA_PROVIDER:
            continue
        op = args.get("op_name", "?")
        if op in COMPUTE_OPS or int(args.get("output_size", 0) or 0) > SMALL_OUTPUT_BYTES:
            name = str(event.get("name", "?")).removesuffix("_kernel_time").removesuffix("_fence_before")
            found[name] = f"{name} ({op} on {args['provider']})"
    return list(found.values())


def open_session(path: Path, device: torch.device, threads: int | None = None, *,
                 stream: torch.cuda.Stream | None = None, cuda_graph: bool = False, profile_dir: Path | None = None):
    """An InferenceSession for ``path`` on ``device``; ``profile_dir`` turns on ORT's profiler there
    (the CUDA backend profiles its first run to check node placement)."""
    import onnxruntime as ort

    options = session_options(threads)
    if profile_dir is not None:
        options.enable_profiling = True
        options.profile_file_prefix = str(profile_dir / path.stem)
    try:
        return ort.InferenceSession(str(path), options,
                                    providers=providers_for(device, stream=stream, cuda_graph=cuda_graph))
    except (ort.capi.onnxruntime_pybind11_state.Fail, ort.capi.onnxruntime_pybind11_state.InvalidGraph,
            ort.capi.onnxruntime_pybind11_state.NotImplemented, ort.capi.onnxruntime_pybind11_state.InvalidProtobuf,
            ort.capi.onnxruntime_pybind11_state.NoSuchFile) as exc:
        raise ArtifactError(f"{path}: onnxruntime cannot load this graph ({exc})") from exc


def verification_device(dtype: str) -> torch.device:
    """Where an export of ``dtype`` is verified: on the provider that will run it.

    fp32 runs (and is verified) on the CPU provider; fp16/bf16 exports are for the CUDA provider,
    so they are verified there when onnxruntime-gpu and a GPU are present. Without them an fp16
    export is verified on ORT-CPU (its upcast path; the manifest records the provider) and a
    bf16 export cannot be verified (ORT-CPU has no bf16 kernels).
    """
    import onnxruntime as ort

    if dtype != "fp32" and CUDA_PROVIDER in ort.get_available_providers() and torch.cuda.is_available():
        return torch.device("cuda", 0)
    if dtype == "bf16":
        raise InvalidArgumentError("onnxruntime's CPU provider has no bf16 kernels, so a bf16 export cannot be "
                                   "verified here; export on a machine with onnxruntime-gpu, or pass --no-verify")
    return torch.device("cpu")


class _CudaBinding:
    """Static device buffers bound once to one session for one batch size (IO binding, reused)."""

    def __init__(self, session, device: torch.device, shapes: dict[str, tuple[int, ...]],
                 out_shape: tuple[int, ...], graph_id: int | None) -> None:
        import onnxruntime as ort

        self.binding = session.io_binding()
        self.inputs = {name: torch.empty(shape, dtype=torch.float32, device=device) for name, shape in shapes.items()}
        self.output = torch.empty(out_shape, dtype=torch.float32, device=device)
        index = device.index or 0
        for name, tensor in self.inputs.items():
            self.binding.bind_input(name=name, device_type="cuda", device_id=index, element_type=np.float32,
                                    shape=tuple(tensor.shape), buffer_ptr=tensor.data_ptr())
        self.binding.bind_output(name=session.get_outputs()[0].name, device_type="cuda", device_id=index,
                                 element_type=np.float32, shape=out_shape, buffer_ptr=self.output.data_ptr())
        self.run_options = ort.RunOptions()
        # the session computes on torch's stream: no host synchronisation after each run
        self.run_options.add_run_config_entry("disable_synchronize_execution_providers", "1")
        if graph_id is not None:
            self.run_options.add_run_config_entry("gpu_graph_id", str(graph_id))


class OnnxRuntimeBackend:
    name = "onnxruntime"

    def __init__(self, onnx_dir: Path, device: torch.device, dtype: str, *, threads: int | None = None,
                 cuda_graph: bool = True) -> None:
        self.device, self.dtype = device, dtype
        self.onnx_dir = onnx_dir
        self.cuda_graph = "off"
        self._bindings: dict[tuple[str, int], _CudaBinding] = {}
        self._placement_checked: set[str] = set()
        if device.type == "cuda":
            index = device.index if device.index is not None else torch.cuda.current_device()
            self.device = torch.device("cuda", index)
            self._open_cuda(onnx_dir, cuda_graph)
        else:
            self.unet = open_session(onnx_dir / UNET_FILE, device, threads)
            self.vae = open_session(onnx_dir / VAE_DECODER_FILE, device, threads)
        self._unet_inputs = [i.name for i in self.unet.get_inputs()]
        self._vae_input = self.vae.get_inputs()[0].name
        if self._unet_inputs != ["sample", "timestep", "encoder_hidden_states"]:
            raise ArtifactError(f"{onnx_dir / UNET_FILE}: unexpected inputs {self._unet_inputs}")

    def _open_cuda(self, onnx_dir: Path, cuda_graph: bool) -> None:
        """Sessions on a torch stream of this device, profiled for the placement check.

        Without CUDA graphs that is torch's current stream; with them, a torch stream of the
        backend's own (capture is impossible on the legacy default stream), ordered after the
        caller's stream on every call.
        """
        with torch.cuda.device(self.device):
            self.stream = torch.cuda.Stream(self.device) if cuda_graph else torch.cuda.current_stream(self.device)
        self._profile_dir = Path(tempfile.mkdtemp(prefix="histoaug-ort-placement-"))
        sessions = None
        if cuda_graph:
            try:
                sessions = [open_session(onnx_dir / f, self.device, stream=self.stream, cuda_graph=True,
                                         profile_dir=self._profile_dir) for f in (UNET_FILE, VAE_DECODER_FILE)]
                self.cuda_graph = "on"
            except ArtifactError as exc:  # ORT refuses graphs with CPU nodes; say why in runtime_id
                first = str(exc).splitlines()[0]
                self.cuda_graph = f"off (onnxruntime refused: {first[:160]})"
                logger.info("onnxruntime: CUDA graphs unavailable for this artifact (%s)", first)
        if sessions is None:
            sessions = [open_session(onnx_dir / f, self.device, stream=self.stream, profile_dir=self._profile_dir)
                        for f in (UNET_FILE, VAE_DECODER_FILE)]
        self.unet, self.vae = sessions
        for session in sessions:
            if CUDA_PROVIDER not in session.get_providers():
                raise InvalidArgumentError(f"onnxruntime did not enable {CUDA_PROVIDER} on {self.device} "
                                           f"(providers: {', '.join(session.get_providers())})")

    @property
    def runtime_id(self) -> dict[str, str]:
        import onnxruntime as ort

        if self.device.type == "cuda":
            device = f"{self.device} {torch.cuda.get_device_name(self.device)}"
            provider = CUDA_PROVIDER
        else:
            device, provider = "cpu", "CPUExecutionProvider"
        return {"backend": self.name, "device": device, "dtype": self.dtype, "provider": provider,
                "attention": "onnxruntime fused (ONNX Attention)", "graph_mode": f"cuda graph {self.cuda_graph}"
                if self.device.type == "cuda" else "eager", "onnxruntime": ort.__version__,
                "torch": torch.__version__}

    # --- lifecycle ----------------------------------------------------------------------------
    def prepare(self, batch_sizes: Sequence[int]) -> None:
        """CUDA: bind static buffers for each UNet batch size (and its decode batch), run each once
        (CUDA graph capture happens on these runs; each session's first run also checks node placement)."""
        if self.device.type != "cuda":
            return
        c, h, w = self._latent_shape()
        text = tuple(self.unet.get_inputs()[2].shape[1:])
        for batch in sorted({int(b) for b in batch_sizes}):
            for decode_batch in sorted({batch, max(1, batch // 2)}):
                self.decode(torch.randn(decode_batch, c, h, w, device=self.device))
            latents = torch.randn(batch, c, h, w, device=self.device)
            self.predict_noise(latents, torch.full((batch,), 500.0, device=self.device),
                               torch.randn(batch, *text, device=self.device))

    def _latent_shape(self) -> tuple[int, int, int]:
        shape = self.unet.get_inputs()[0].shape[1:]
        if not all(isinstance(d, int) for d in shape):
            raise ArtifactError(f"{self.onnx_dir / UNET_FILE}: latent shape {shape} is not static")
        return tuple(shape)

    def _check_placement(self, which: str, session) -> None:
        """After a session's first run: end its profiling and fail on compute nodes placed on the CPU."""
        if which in self._placement_checked:
            return
        self._placement_checked.add(which)
        torch.cuda.current_stream(self.device).synchronize()
        profile = Path(session.end_profiling())
        misplaced = cpu_placed_nodes(profile)
        profile.unlink(missing_ok=True)
        if misplaced:
            import onnxruntime as ort

            raise InvalidArgumentError(
                f"onnxruntime {ort.__version__} runs {len(misplaced)} compute node(s) of {which} on the CPU, not "
                f"{CUDA_PROVIDER} (e.g. {', '.join(misplaced[:3])}); use an onnxruntime-gpu with CUDA kernels "
                "for them (opset-23 Attention needs a recent release) or the torch backend")

    def close(self) -> None:
        """Drop bindings and sessions (idempotent)."""
        self._bindings.clear()
        for name in ("unet", "vae"):
            if hasattr(self, name):
                delattr(self, name)
        if getattr(self, "_profile_dir", None) is not None:
            shutil.rmtree(self._profile_dir, ignore_errors=True)
            self._profile_dir = None

    # --- CPU: numpy views of CPU tensors, no copies --------------------------------------------
    def _run_cpu(self, session, feeds: dict[str, torch.Tensor]) -> torch.Tensor:
        arrays = {k: np.ascontiguousarray(v.detach().cpu().float().numpy()) for k, v in feeds.items()}
        return torch.from_numpy(session.run(None, arrays)[0])

    # --- CUDA: IO binding on static torch CUDA buffers, on torch's stream ----------------------
    def _run_cuda(self, which: str, session, feeds: dict[str, torch.Tensor],
                  out_shape: tuple[int, ...]) -> torch.Tensor:
        batch = out_shape[0]
        key = (which, batch)
        if key not in self._bindings:
            graph_id = len(self._bindings) + 1 if self.cuda_graph == "on" else None
            self._bindings[key] = _CudaBinding(session, self.device, {k: tuple(v.shape) for k, v in feeds.items()},
                                               out_shape, graph_id)
        bound = self._bindings[key]
        current = torch.cuda.current_stream(self.device)
        if current != self.stream:  # the caller moved to another stream: order ours after it
            self.stream.wait_stream(current)
        with torch.cuda.stream(self.stream):
            for name, tensor in feeds.items():
                bound.inputs[name].copy_(tensor, non_blocking=True)
            session.run_with_iobinding(bound.binding, bound.run_options)
            out = bound.output.clone()
        self._check_placement(which, session)
        if current != self.stream:
            current.wait_stream(self.stream)
            out.record_stream(current)
        return out

    def predict_noise(self, latents: torch.Tensor, timesteps: torch.Tensor, embeddings: torch.Tensor) -> torch.Tensor:
        feeds = {"sample": latents, "timestep": timesteps, "encoder_hidden_states": embeddings}
        if self.device.type == "cuda":
            return self._run_cuda("unet", self.unet, feeds, tuple(latents.shape))
        return self._run_cpu(self.unet, feeds)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        if self.device.type == "cuda":
            b, _, h, w = latents.shape
            scale = self.vae.get_outputs()[0].shape[-1] // self.vae.get_inputs()[0].shape[-1]
            return self._run_cuda("vae", self.vae, {self._vae_input: latents}, (b, 3, h * scale, w * scale))
        return self._run_cpu(self.vae, {self._vae_input: latents})
