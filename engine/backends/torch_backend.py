"""PyTorch: the reference backend (the `export` extra) on CPU, and the GPU backend ``torch-cuda``.

It runs the same graphs as the ONNX export (per-frame logits, or features + sequence head), built
from the training checkpoint the model was exported from, in exactly the precision asked for:

=============  ==================  ====================================================
backend        precisions          notes
=============  ==================  ====================================================
``torch``      fp32, bf16          CPU
``torch-cuda`` fp32, fp16, bf16    bf16 only where ``torch.cuda.is_bf16_supported()``
=============  ==================  ====================================================

Anything else raises (:class:`InvalidInputError` naming the supported values, or
:class:`BackendUnavailableError` when the device cannot run it); nothing switches precision on its
own. fp16/bf16 cast the whole module and its input (true half-precision execution, outputs
returned as float32). On CUDA, fp32 means IEEE fp32: TF32 is turned off for cuDNN convolutions and
CUDA matmuls (torch allows TF32 in convolutions by default) unless ``tf32=True`` is passed.

Options of ``torch-cuda`` (keyword arguments of :func:`cuda_factory`; the defaults are in
:data:`CUDA_DEFAULTS`, chosen from ``benchmarks/gpu_check.py``'s measurements):

- ``channels_last``: run the CNN in the NHWC memory format (tensor-core friendly).
- ``cuda_graphs``: capture one CUDA graph per batch bucket and replay it (removes per-kernel
  launch overhead; inputs are copied into the graph's static buffer, outputs copied out).
- ``compile``: ``torch.compile`` mode (``default``, ``max-autotune``, ...), or None for eager.
- ``tf32``: allow TF32 for fp32 (off by default: fp32 as asked).
- ``cudnn_benchmark``: let cuDNN pick its fastest algorithms per shape (process-wide flag).

On CPU (``torch``) the options are the same but for ``cuda_graphs``; ``channels_last`` defaults to
NHWC for bf16 and NCHW for fp32 (:data:`CPU_DEFAULTS`), and bf16 on a CPU without bf16
instructions (AVX512-BF16, AMX) logs a warning: oneDNN emulates it, several times slower than fp32.

On CUDA every batch of frames is padded to a power of two (at most ``max_batch``, the engine's
classifier batch) so that only a few shapes ever run; frames are independent (BatchNorm in eval
mode), so the padding rows change nothing and are dropped.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from core.deps import require
from core.errors import (
    ArtifactNotFoundError,
    BackendUnavailableError,
    InvalidInputError,
    ModelFormatError,
)
from engine.backends.base import DetectorOptions, GraphBackend, TensorSpec
from engine.backends.torch_detector import use_ieee_fp32

if TYPE_CHECKING:
    from preprocess.faces import Detector
    from preprocess.scrfd_graph import DetectorGraph

log = logging.getLogger(__name__)

#: Precisions each device type runs.
TORCH_PRECISIONS: dict[str, tuple[str, ...]] = {
    "cpu": ("fp32", "bf16"),
    "cuda": ("fp32", "fp16", "bf16"),
}
_DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
#: Defaults of the torch-cuda options (see benchmarks/gpu_check.py for the measurements).
CUDA_DEFAULTS: dict[str, Any] = {
    "channels_last": True,
    "cuda_graphs": False,
    "compile": None,
    "tf32": False,
    "cudnn_benchmark": True,
}
#: Defaults of the torch (CPU) options. ``channels_last`` None: per precision, NHWC for bf16
#: (oneDNN's bf16 convolutions are NHWC kernels: ResNeXt50 at 112x112, batch 8, one thread of an
#: AVX2 EPYC, 837 ms per crop in NCHW, 271 in NHWC) and NCHW for fp32, the layout the model was
#: trained in (NHWC: 37 ms per crop instead of 41, equal within float noise).
CPU_DEFAULTS: dict[str, Any] = {
    "channels_last": None,
    "cuda_graphs": False,
    "compile": None,
    "tf32": False,
    "cudnn_benchmark": False,
}
DEFAULT_MAX_BATCH = 1024


def find_checkpoint(spec: Any, explicit: str | Path | None = None) -> Path:
    """The checkpoint a model directory was exported from: ``explicit``, next to the sidecar,
    or where it was at export time; its sha256 must match the sidecar's."""
    from core.hashing import sha256_file

    info = spec.checkpoint
    if explicit and not Path(explicit).is_file():  # a typo must not fall back to another file
        raise ArtifactNotFoundError(
            f"--checkpoint {explicit}: no such file; give the checkpoint {spec.directory} was "
            f"exported from ({info.file!r}), or leave --checkpoint out to use it"
        )
    candidates = [Path(explicit)] if explicit else []
    candidates += [spec.directory / (info.file or ""), Path(info.path or "")]
    for c in candidates:
        if c.is_file():
            if info.sha256 and sha256_file(c) != info.sha256:
                raise ModelFormatError(
                    f"{c} is not the checkpoint {spec.directory} was exported from (sha256 "
                    f"differs from the sidecar's); pass the right file or re-export"
                )
            return c
    raise ArtifactNotFoundError(
        f"the torch backend needs the training checkpoint {info.file!r} of "
        f"{spec.directory}; put it next to classifier.json or pass checkpoint=PATH"
    )


def _native_cpu_bf16(torch: Any) -> bool:
    """Whether oneDNN runs bf16 natively on this CPU (``torch.ops.mkldnn.
    _is_mkldnn_bf16_supported``: AVX512-BF16 or AMX); True where torch cannot tell."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return True


def _bucket(n: int, limit: int) -> int:
    """The smallest power of two >= ``n``, at most ``limit`` (and at least ``n``)."""
    return max(min(1 << (n - 1).bit_length(), limit), n)


class _CudaGraphs:
    """One captured CUDA graph per batch bucket of a frames -> outputs module.

    Each graph owns a static input (``(bucket, 3, H, W)`` in the run dtype and memory format)
    and static outputs; a call copies the batch into the static input (the padding rows keep
    whatever they held: frames are independent), replays, and returns views of the static
    outputs, valid until the next call (the caller copies them out under its lock).
    """

    def __init__(self, module: Any, torch: Any, device: Any, dtype: Any, channels_last: bool):
        self.module, self.torch, self.device, self.dtype = module, torch, device, dtype
        self.channels_last = channels_last
        self.graphs: dict[int, tuple[Any, Any, tuple[Any, ...]]] = {}

    def _capture(self, size: int, shape: Sequence[int]) -> tuple[Any, Any, tuple[Any, ...]]:
        torch = self.torch
        static_in = torch.zeros((size, *shape), device=self.device, dtype=self.dtype)
        if self.channels_last:
            static_in = static_in.contiguous(memory_format=torch.channels_last)
        side = torch.cuda.Stream(device=self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            for _ in range(3):  # warm-up outside the graph (cuDNN picks its algorithms here)
                self.module(static_in)
        torch.cuda.current_stream(self.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            out = self.module(static_in)
        out = out if isinstance(out, tuple) else (out,)
        log.debug("captured a CUDA graph for batch %d", size)
        return graph, static_in, out

    def __call__(self, x: Any, size: int) -> tuple[Any, ...]:
        entry = self.graphs.get(size)
        if entry is None:
            entry = self.graphs[size] = self._capture(size, tuple(x.shape[1:]))
        graph, static_in, out = entry
        static_in[: x.shape[0]].copy_(x)
        graph.replay()
        return out


class TorchBackend(GraphBackend):
    """One exported graph (``classifier`` or ``head``) run by a PyTorch module.

    ``infer`` takes float32 numpy arrays and returns float32 numpy arrays (only the outputs
    asked for are copied to the host). Thread-safe: CUDA-graph replays are serialised.
    """

    def __init__(
        self,
        name: str,
        module: Any,
        *,
        device: str,
        precision: str,
        graph: str,
        options: dict[str, Any] | None = None,
        max_batch: int = DEFAULT_MAX_BATCH,
    ) -> None:
        torch = require("torch", purpose="the PyTorch backend")
        self.name = name
        self._torch = torch
        self.module = module
        self.device = torch.device(device)
        self.precision = precision
        self.dtype = getattr(torch, _DTYPES[precision])
        self.graph = graph
        defaults = CUDA_DEFAULTS if self.device.type == "cuda" else CPU_DEFAULTS
        self.options = {**defaults, **(options or {})}
        self.max_batch = int(max_batch)
        # serialises CUDA-graph replays (static buffers); uncontended otherwise
        self.lock = threading.Lock() if self.options["cuda_graphs"] else contextlib.nullcontext()
        frames_graph = graph != "head"
        self.channels_last = bool(self.options["channels_last"]) and frames_graph
        if graph == "head":
            inputs = [TensorSpec("features", np.dtype(np.float32), (None, None, 2048))]
            outputs = ["logits"]
        else:
            inputs = [TensorSpec("frames", np.dtype(np.float32), (None, 3, 112, 112))]
            outputs = (
                ["logits", "features", "fmap"]
                if type(module).__name__ == "FrameClassifier"
                else ["features", "fmap"]
            )
        super().__init__(inputs, outputs)
        if self.channels_last:
            self.module = self.module.to(memory_format=torch.channels_last)
        mode = self.options["compile"]
        if mode is not None and frames_graph:
            self.module = torch.compile(self.module, mode=None if mode == "default" else mode)
        self._graphs = (
            _CudaGraphs(self.module, torch, self.device, self.dtype, self.channels_last)
            if self.options["cuda_graphs"] and frames_graph
            else None
        )

    def infer_impl(
        self, feeds: dict[str, np.ndarray], outputs: Sequence[str]
    ) -> dict[str, np.ndarray]:
        (x,) = feeds.values()
        idx = [self.outputs.index(o) for o in outputs]
        if self.graph == "head":
            parts = [self._run(x, idx)]
        else:
            step = self.max_batch
            parts = [self._run(x[i : i + step], idx) for i in range(0, len(x), step)]
        return {
            name: np.concatenate([p[k] for p in parts]) if len(parts) > 1 else parts[0][k]
            for k, name in enumerate(outputs)
        }

    def prepare(self, x: np.ndarray) -> Any:
        """A float32 numpy batch as the module's input: on the device, in the run dtype and
        memory format."""
        torch = self._torch
        t = torch.from_numpy(np.ascontiguousarray(x)).to(self.device).to(self.dtype)
        if self.channels_last:
            t = t.contiguous(memory_format=torch.channels_last)
        return t

    def forward(self, t: Any) -> tuple[Any, ...]:
        """Run the module on a prepared batch (see :meth:`prepare`; at most ``max_batch``
        rows) under ``torch.inference_mode``; returns the outputs on the device, ``n`` rows each.
        With CUDA graphs they are views of the graph's static buffers, valid until the next call:
        copy them first, holding :attr:`lock`. For benchmarks; :meth:`infer` is the API."""
        torch = self._torch
        n = t.shape[0]
        with torch.inference_mode():
            if self._graphs is not None:
                with torch.cuda.device(self.device):
                    res = self._graphs(t, _bucket(n, self.max_batch))
                return tuple(r[:n] for r in res)
            if self.device.type == "cuda" and self.graph != "head":
                size = _bucket(n, self.max_batch)
                if size > n:
                    t = torch.cat([t, t.new_zeros((size - n, *t.shape[1:]))])
            res = self.module(t)
            res = res if isinstance(res, tuple) else (res,)
            return tuple(r[:n] for r in res)

    def _run(self, x: np.ndarray, idx: list[int]) -> list[np.ndarray]:
        t = self.prepare(x)
        with self.lock:
            res = self.forward(t)
            return [res[i].float().cpu().numpy() for i in idx]

    def describe(self) -> dict[str, object]:
        return {
            "backend": self.name,
            "device": str(self.device),
            "precision": self.precision,
            **{k: self.options[k] for k in ("channels_last", "cuda_graphs", "compile", "tf32")},
        }


_FACTORY_OPTIONS = ("precision", "checkpoint", "max_batch", "device_id", *CUDA_DEFAULTS)
# options the engine passes to every backend factory, meaningless here
_IGNORED_OPTIONS = ("intra_op_threads",)


class _TorchFactory:
    """Makes the :class:`TorchBackend` runners of one model (one checkpoint load per model) and
    the face detector (:meth:`detector`: on CUDA, the PyTorch SCRFD detector on the same
    device)."""

    def __init__(self, name: str, device: str, options: dict[str, Any]) -> None:
        torch = require("torch", purpose="the PyTorch backend")
        if "fp16" in options:
            raise InvalidInputError(
                f"{name}: the fp16 option is gone; ask for precision='fp16' (torch-cuda)"
            )
        unknown = set(options) - set(_FACTORY_OPTIONS) - set(_IGNORED_OPTIONS)
        if unknown:
            raise InvalidInputError(
                f"{name}: unknown options {sorted(unknown)}; supported options are "
                f"{', '.join(_FACTORY_OPTIONS)}"
            )
        kind = "cuda" if device.startswith("cuda") else "cpu"
        precision = str(options.get("precision", "fp32"))
        if precision not in TORCH_PRECISIONS[kind]:
            raise InvalidInputError(
                f"{name} does not run precision {precision!r}; supported values are "
                f"{', '.join(TORCH_PRECISIONS[kind])}"
            )
        defaults = CUDA_DEFAULTS if kind == "cuda" else CPU_DEFAULTS
        self.options = {k: options.get(k, v) for k, v in defaults.items()}
        if self.options["channels_last"] is None:
            self.options["channels_last"] = precision == "bf16"
        if kind == "cpu" and precision == "bf16" and not _native_cpu_bf16(torch):
            log.warning(
                "%s: this CPU has no bf16 instructions (AVX512-BF16 or AMX); oneDNN emulates "
                "them, so bf16 runs several times slower than fp32 here (ResNeXt50 on an AVX2 "
                "EPYC: 271 ms per crop against 41 in fp32). It runs as asked",
                name,
            )
        compile_mode = self.options["compile"]
        if compile_mode is not None and compile_mode not in COMPILE_MODES:
            raise InvalidInputError(
                f"{name}: compile={compile_mode!r} is not supported; supported values are None, "
                f"{', '.join(COMPILE_MODES)}"
            )
        if kind == "cpu" and self.options["cuda_graphs"]:
            raise InvalidInputError(f"{name}: cuda_graphs needs CUDA; use --backend torch-cuda")
        if self.options["cuda_graphs"] and compile_mode == "reduce-overhead":
            raise InvalidInputError(
                f"{name}: compile='reduce-overhead' captures CUDA graphs itself; do not combine "
                "it with cuda_graphs=True"
            )
        if kind == "cuda":
            if not torch.cuda.is_available():
                raise BackendUnavailableError(
                    f"{name}: CUDA is not available to torch {torch.__version__} (no NVIDIA GPU "
                    "or a CPU-only build); use --backend torch for CPU"
                )
            index = torch.device(device).index or 0
            if index >= torch.cuda.device_count():
                raise BackendUnavailableError(
                    f"{name}: {device} asked for, but torch sees {torch.cuda.device_count()} "
                    "CUDA device(s)"
                )
            if precision == "bf16" and not torch.cuda.is_bf16_supported():
                raise BackendUnavailableError(
                    f"{name}: {torch.cuda.get_device_name(index)} does not support bf16 in "
                    "torch; supported values here are fp32, fp16"
                )
            if self.options["tf32"]:  # process-wide, like use_ieee_fp32
                torch.backends.cudnn.allow_tf32 = True
                torch.backends.cuda.matmul.allow_tf32 = True
            else:
                use_ieee_fp32(torch)
            if self.options["cudnn_benchmark"]:
                torch.backends.cudnn.benchmark = True
        self.name, self.device, self.precision = name, device, precision
        self.checkpoint = options.get("checkpoint")
        self.max_batch = int(options.get("max_batch") or DEFAULT_MAX_BATCH)
        self._model: Any = None
        self._lock = threading.Lock()

    def _reference(self, spec: Any) -> Any:
        with self._lock:
            if self._model is None:
                from network.checkpoint import build_model, load_checkpoint

                ckpt = load_checkpoint(find_checkpoint(spec, self.checkpoint), variant=spec.variant)
                self._model = build_model(ckpt)
            return self._model

    def __call__(self, graph: str, onnx_path: Path, *, spec: Any = None) -> TorchBackend:
        from network.model import FeatureExtractor, FrameClassifier, SequenceHead

        model = self._reference(spec)
        if graph == "head":
            module = SequenceHead(model)
        elif spec.variant == "original":
            module = FrameClassifier(model)
        else:
            module = FeatureExtractor(model)
        # The runners of a model share its reference weights; one factory runs one device and
        # one precision, so moving and casting them in place is what every runner needs.
        torch = require("torch")
        module = module.eval().to(self.device).to(getattr(torch, _DTYPES[self.precision]))
        return TorchBackend(
            self.name,
            module,
            device=self.device,
            precision=self.precision,
            graph=graph,
            options=self.options,
            max_batch=self.max_batch,
        )

    def detector(self, graph: DetectorGraph, options: DetectorOptions) -> Detector:
        """The face detector of this backend: on CUDA, the SCRFD graph converted to PyTorch on
        this backend's device (fp32; :class:`engine.backends.torch_detector.TorchSCRFDDetector`,
        decoding and NMS on the device too); on CPU, SCRFD over an ONNX Runtime CPU runner (the
        same detector as ``--backend ort``: PyTorch would only be slower at it)."""
        if not self.device.startswith("cuda"):
            from engine.backends.ort_backend import cpu_factory as ort_cpu

            return ort_cpu(intra_op_threads=options.intra_op_threads).detector(graph, options)
        from engine.backends.torch_detector import TorchSCRFDDetector

        cfg = options.config
        return TorchSCRFDDetector(
            graph.source,
            input_size=cfg.input_size,
            score_threshold=cfg.score_threshold,
            nms_threshold=cfg.nms_threshold,
            batch_size=cfg.batch_size,
            max_faces=cfg.max_faces,
            input_shape=cfg.input_shape,
            device=self.device,
        )


def cpu_factory(**options: Any) -> _TorchFactory:
    """``torch``: the reference backend on CPU (fp32 or bf16)."""
    options.pop("device_id", None)
    return _TorchFactory("torch", "cpu", options)


def cuda_factory(**options: Any) -> _TorchFactory:
    """``torch-cuda``: CUDA device ``device_id`` (default 0), fp32 / fp16 / bf16 as asked."""
    dev = int(options.pop("device_id", 0) or 0)
    return _TorchFactory("torch-cuda", f"cuda:{dev}", options)
