"""Native TensorRT (10+) backend: serialized engines from ``dfe build``, one CUDA stream.

NOT TESTED ON A GPU: this module was written without access to TensorRT or an NVIDIA GPU. Its
pure parts (profiles, range checks, the engine cache and its keys) live in
:mod:`engine.backends.engine_cache` and are unit-tested on CPU; the code here that calls
TensorRT and CUDA is only exercised by the ``gpu``-marked tests.

Design:
- TensorRT 10 named I/O tensors: ``set_input_shape``, ``set_tensor_address``,
  ``execute_async_v3``; inputs are checked against the engine's optimisation profile before
  launch, with an error saying the allowed range.
- CUDA through cuda-python's runtime bindings (``cuda.bindings.runtime``, or ``cuda.cudart``
  in older releases), imported lazily.
- The factory gives a runner (:class:`TrtBackend`) for any graph's engine: the classifier's,
  the sequence head's, the SCRFD detector's (which :func:`engine.backends.base.scrfd_over` turns
  into the detector: the SCRFD maths over that runner).
- Every runner made by one factory shares one CUDA stream and one lock: a call copies its
  inputs into **pinned** host buffers, enqueues the host-to-device copies, the engine and the
  device-to-host copies, and synchronises before it returns. Host and device buffers are
  allocated once per runner at the profile's maximum shape and owned by the runner, so every
  pointer bound with ``set_tensor_address`` stays alive until (and after) the stream has
  synchronised; outputs are copied out of the pinned buffers before the lock is released, so
  callers never see a buffer that is reused.
- A missing or mismatched engine is built (see
  :func:`engine.backends.trt_build.ensure_graph_engine`), never loaded; asking for this backend
  without TensorRT raises MissingDependencyError naming the ``gpu`` extra.
"""

from __future__ import annotations

import ctypes
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from core.deps import require
from core.errors import BackendUnavailableError
from engine.backends.base import DetectorOptions, GraphBackend, TensorSpec, scrfd_over
from engine.backends.cuda_runtime import Cuda, device_info
from engine.backends.engine_cache import TensorProfile, check_in_profile

if TYPE_CHECKING:
    from preprocess.scrfd import SCRFDDetector
    from preprocess.scrfd_graph import DetectorGraph

log = logging.getLogger(__name__)


@dataclass
class _Binding:
    """One I/O tensor's pinned host buffer and device buffer, sized for the profile's max."""

    name: str
    dtype: np.dtype
    is_input: bool
    host_ptr: int
    host: np.ndarray  # flat view of the pinned buffer
    device_ptr: int
    nbytes: int


# ------------------------------------------------------------------------------ runner


class TrtBackend(GraphBackend):
    """Runs one TensorRT engine. Thread-safe: calls are serialised on the factory's stream."""

    def __init__(
        self,
        name: str,
        graph: str,
        plan: bytes,
        cuda: Cuda,
        stream: Any,
        lock: threading.Lock,
    ) -> None:
        trt = require("tensorrt", purpose="the TensorRT backend")
        self.name, self.graph = name, graph
        self._trt, self._cuda, self._stream, self._lock = trt, cuda, stream, lock
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        self._engine = self._runtime.deserialize_cuda_engine(plan)
        if self._engine is None:
            raise BackendUnavailableError(
                f"TensorRT could not deserialize the {graph} engine (built by another TensorRT "
                "version or for another GPU?); rebuild it with dfe build"
            )
        self._context = self._engine.create_execution_context()
        names = [self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)]
        self._input_names = [
            n for n in names if self._engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT
        ]
        self._output_names = [n for n in names if n not in self._input_names]
        self.profiles: dict[str, TensorProfile] = {}
        for n in self._input_names:
            lo, opt, hi = self._engine.get_tensor_profile_shape(n, 0)
            self.profiles[n] = TensorProfile(n, tuple(lo), tuple(opt), tuple(hi))
        # Output sizes at the largest input shapes: set every input to its max, then read them.
        for n in self._input_names:
            self._context.set_input_shape(n, self.profiles[n].max)
        self._bindings: dict[str, _Binding] = {}
        for n in names:
            shape = (
                self.profiles[n].max if n in self.profiles else self._context.get_tensor_shape(n)
            )
            dtype = np.dtype(trt.nptype(self._engine.get_tensor_dtype(n)))
            self._bindings[n] = self._allocate(n, tuple(shape), dtype, n in self.profiles)
        inputs = [
            TensorSpec(
                n,
                self._bindings[n].dtype,
                tuple(
                    None if a != b else a
                    for a, b in zip(self.profiles[n].min, self.profiles[n].max)
                ),
            )
            for n in self._input_names
        ]
        super().__init__(inputs, self._output_names)

    def _allocate(self, name: str, shape: tuple[int, ...], dtype: np.dtype, is_input: bool):
        rt, c = self._cuda.rt, self._cuda
        nbytes = int(np.prod(shape)) * dtype.itemsize
        host_ptr = c.call(rt.cudaMallocHost(nbytes), "cudaMallocHost")
        ctype = np.ctypeslib.as_ctypes_type(dtype)
        host = np.ctypeslib.as_array(
            ctypes.cast(host_ptr, ctypes.POINTER(ctype)), (nbytes // dtype.itemsize,)
        )
        device_ptr = c.call(rt.cudaMalloc(nbytes), "cudaMalloc")
        return _Binding(name, dtype, is_input, int(host_ptr), host, int(device_ptr), nbytes)

    def check_inputs(self, feeds: dict[str, np.ndarray]) -> None:
        super().check_inputs(feeds)
        for name, arr in feeds.items():
            check_in_profile(self.graph, name, arr.shape, self.profiles[name])

    def infer_impl(
        self, feeds: dict[str, np.ndarray], outputs: Sequence[str]
    ) -> dict[str, np.ndarray]:
        rt, c = self._cuda.rt, self._cuda
        h2d = rt.cudaMemcpyKind.cudaMemcpyHostToDevice
        d2h = rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        with self._lock:
            for name, arr in feeds.items():
                b = self._bindings[name]
                n = arr.size * b.dtype.itemsize
                np.copyto(b.host[: arr.size], arr.reshape(-1), casting="same_kind")
                c.call(
                    rt.cudaMemcpyAsync(b.device_ptr, b.host_ptr, n, h2d, self._stream),
                    "cudaMemcpyAsync H2D",
                )
                if not self._context.set_input_shape(name, arr.shape):
                    raise BackendUnavailableError(f"{self.graph}: set_input_shape({arr.shape})")
            for b in self._bindings.values():
                self._context.set_tensor_address(b.name, b.device_ptr)
            shapes = {n: tuple(self._context.get_tensor_shape(n)) for n in outputs}
            if not self._context.execute_async_v3(stream_handle=self._stream):
                raise BackendUnavailableError(f"{self.graph}: TensorRT execute_async_v3 failed")
            for n in outputs:
                b = self._bindings[n]
                size = int(np.prod(shapes[n]))
                c.call(
                    rt.cudaMemcpyAsync(
                        b.host_ptr, b.device_ptr, size * b.dtype.itemsize, d2h, self._stream
                    ),
                    "cudaMemcpyAsync D2H",
                )
            c.call(rt.cudaStreamSynchronize(self._stream), "cudaStreamSynchronize")
            # copy out: the pinned buffers are reused by the next call
            return {
                n: self._bindings[n].host[: int(np.prod(shapes[n]))].reshape(shapes[n]).copy()
                for n in outputs
            }

    def close(self) -> None:
        rt, c = self._cuda.rt, self._cuda
        with self._lock:
            c.call(rt.cudaStreamSynchronize(self._stream), "cudaStreamSynchronize")
            for b in self._bindings.values():
                c.call(rt.cudaFree(b.device_ptr), "cudaFree")
                c.call(rt.cudaFreeHost(b.host_ptr), "cudaFreeHost")
            self._bindings.clear()

    def describe(self) -> dict[str, object]:
        return {
            "backend": self.name,
            "graph": self.graph,
            "profiles": {n: p.as_dict() for n, p in self.profiles.items()},
        }


# ------------------------------------------------------------------------------ factory


class _TrtFactory:
    """Builds (when needed) and loads the engines of a model, all on one CUDA stream."""

    name = "tensorrt"
    precisions = ("fp32", "fp16", "int8")

    def __init__(
        self,
        *,
        precision: str = "fp32",
        max_batch: int = 64,
        device_id: int = 0,
        cache_dir: str | Path | None = None,
        **_: Any,
    ) -> None:
        require("tensorrt", purpose="the TensorRT backend")
        self.cuda = Cuda(device_id)
        self.device = device_info(device_id)
        self.precision, self.max_batch = precision, int(max_batch)
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self.stream = self.cuda.call(self.cuda.rt.cudaStreamCreate(), "cudaStreamCreate")
        self.lock = threading.Lock()  # one stream: one call in flight at a time

    def runner(self, graph: str, engine_path: Path) -> TrtBackend:
        """A runner over the serialized TensorRT engine at ``engine_path`` (any graph's:
        ``graph`` names it in errors), on this factory's stream."""
        return TrtBackend(
            self.name, graph, Path(engine_path).read_bytes(), self.cuda, self.stream, self.lock
        )

    def __call__(self, graph: str, onnx_path: Path, *, spec: Any = None) -> TrtBackend:
        """The runner of a model graph (``classifier`` or ``head``): its engine, cached or
        built now (:func:`engine.backends.trt_build.ensure_graph_engine`)."""
        from engine.backends.trt_build import ensure_graph_engine, graph_precision

        result = ensure_graph_engine(
            graph,
            Path(onnx_path),
            precision=graph_precision(graph, self.precision),
            max_batch=self.max_batch,
            device=self.device,
            cache_dir=self.cache_dir,
            model_dir=getattr(spec, "directory", None),
        )
        log.info("%s: %s engine %s (%s)", self.name, graph, result.path.name, result.reason)
        return self.runner(graph, result.path)

    def detector(self, graph: DetectorGraph, options: DetectorOptions) -> SCRFDDetector:
        """SCRFD over an fp16 engine of ``graph`` on this factory's stream: built for batches
        up to the detector batch at the square ``input_size`` (the engine's profile), so the
        detector takes that size only (``fixed_input``)."""
        from engine.backends.trt_build import ensure_detector_engine

        result = ensure_detector_engine(
            graph,
            batch=options.config.batch_size,
            input_size=options.config.input_size,
            device=self.device,
            cache_dir=self.cache_dir,
            model_dir=options.model_dir,
        )
        log.info("%s: detector engine %s (%s)", self.name, result.path.name, result.reason)
        return scrfd_over(self.runner("detector", result.path), graph, options)


def tensorrt_factory(**options: Any) -> _TrtFactory:
    """``tensorrt``: native TensorRT engines (fp32, fp16, int8) on one CUDA stream."""
    return _TrtFactory(**options)
