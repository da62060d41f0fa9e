"""ONNX Runtime: the CPU execution provider, and CUDA / TensorRT providers with onnxruntime-gpu.

Sessions come from :func:`core.onnx_session.create_session`, which checks that the
provider asked for is the one running (ONNX Runtime quietly drops to CPU when a GPU provider
fails to load) and raises instead. Precision is what was asked: the CPU and CUDA providers run
the graph they are given (fp32, or the INT8 Q/DQ graph on CPU); the TensorRT provider compiles
fp16 only when fp16 is asked for.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from core.errors import InvalidInputError
from core.onnx_session import Provider, check_available, create_session, provider_name
from core.paths import engines_dir
from engine.backends.base import DetectorOptions, GraphBackend, TensorSpec, scrfd_over
from engine.backends.qdq_rewrite import cpu_qdq_model

if TYPE_CHECKING:
    from preprocess.scrfd import SCRFDDetector
    from preprocess.scrfd_graph import DetectorGraph

log = logging.getLogger(__name__)

_ORT_TYPES = {
    "tensor(float)": np.dtype(np.float32),
    "tensor(float16)": np.dtype(np.float16),
    "tensor(uint8)": np.dtype(np.uint8),
    "tensor(int64)": np.dtype(np.int64),
}


class OrtBackend(GraphBackend):
    """One graph on one ONNX Runtime session."""

    def __init__(self, name: str, session: Any) -> None:
        self.name = name
        self.session = session
        inputs = []
        for i in session.get_inputs():
            dims = tuple(d if isinstance(d, int) else None for d in i.shape)
            inputs.append(TensorSpec(i.name, _ORT_TYPES.get(i.type, np.dtype(np.float32)), dims))
        super().__init__(inputs, [o.name for o in session.get_outputs()])

    def infer_impl(
        self, feeds: dict[str, np.ndarray], outputs: Sequence[str]
    ) -> dict[str, np.ndarray]:
        return dict(zip(outputs, self.session.run(list(outputs), feeds)))

    def describe(self) -> dict[str, object]:
        return {"backend": self.name, "providers": self.session.get_providers()}


class OrtFactory:
    """Sessions of one provider list for the graphs of a model."""

    def __init__(
        self,
        name: str,
        providers: list[Provider],
        *,
        precision: str,
        precisions: tuple[str, ...],
        intra_op_threads: int = 0,
        detector_providers: list[Provider] | None = None,
    ) -> None:
        if precision not in precisions:
            raise InvalidInputError(
                f"backend {name!r} does not run precision {precision}; it runs "
                f"{', '.join(precisions)}"
            )
        check_available(providers, what=name)
        self.name = name
        self.providers = providers
        self.detector_providers = detector_providers or providers
        self.precision = precision
        self.intra_op_threads = intra_op_threads

    @property
    def provider(self) -> str:
        return provider_name(self.providers[0])

    def runner(
        self,
        model: Path | bytes,
        *,
        providers: Sequence[Provider] | None = None,
        intra_op_threads: int | None = None,
    ) -> OrtBackend:
        """A runner over any ONNX graph (a path, or serialized bytes) on this factory's
        providers (or ``providers``), with ``intra_op_threads`` threads (default: the
        factory's). Raises :class:`~core.errors.BackendUnavailableError` when the first
        provider is not the one running."""
        providers = list(providers or self.providers)
        threads = self.intra_op_threads if intra_op_threads is None else intra_op_threads
        session = create_session(model, providers, intra_op_threads=threads)
        name = "a graph" if isinstance(model, bytes) else Path(model).name
        log.info("%s: %s on %s", self.name, name, session.get_providers())
        return OrtBackend(self.name, session)

    def detector(self, graph: DetectorGraph, options: DetectorOptions) -> SCRFDDetector:
        """SCRFD over a runner of ``graph`` on this factory's detector providers (on the CPU
        provider, with its head convolutions fused where that is bit-identical:
        :meth:`~preprocess.scrfd_graph.DetectorGraph.model_for`)."""
        first = provider_name(self.detector_providers[0])
        runner = self.runner(
            graph.model_for(first),
            providers=self.detector_providers,
            intra_op_threads=options.intra_op_threads,
        )
        return scrfd_over(runner, graph, options)

    def __call__(self, graph: str, onnx_path: Path, *, spec: object = None) -> OrtBackend:
        """A backend over ``onnx_path``. On the CPU provider the INT8 Q/DQ graph of ``spec``
        (a :class:`~core.sidecar.ModelSpec`) is loaded with its grouped convolutions
        merged (:mod:`engine.backends.qdq_rewrite`: bit-identical outputs, ~27% faster)."""
        int8_file = getattr(spec, "onnx_files", {}).get("int8")
        model: Path | bytes = onnx_path
        if (
            self.provider == "CPUExecutionProvider"
            and int8_file is not None
            and Path(onnx_path).resolve() == Path(int8_file).resolve()
        ):
            model, _ = cpu_qdq_model(onnx_path)
        return self.runner(model)


def cpu_factory(*, precision: str = "fp32", intra_op_threads: int = 0, **_: Any) -> OrtFactory:
    """ONNX Runtime on CPU: the fp32 graph, or the INT8 Q/DQ graph."""
    return OrtFactory(
        "ort",
        ["CPUExecutionProvider"],
        precision=precision,
        precisions=("fp32", "int8"),
        intra_op_threads=intra_op_threads,
    )


def cuda_factory(
    *, precision: str = "fp32", intra_op_threads: int = 0, device_id: int = 0, **_: Any
) -> OrtFactory:
    """ONNX Runtime's CUDA provider (onnxruntime-gpu): the fp32 graph."""
    return OrtFactory(
        "ort-cuda",
        [("CUDAExecutionProvider", {"device_id": int(device_id)}), "CPUExecutionProvider"],
        precision=precision,
        precisions=("fp32",),
        intra_op_threads=intra_op_threads,
    )


def tensorrt_factory(
    *,
    precision: str = "fp32",
    intra_op_threads: int = 0,
    device_id: int = 0,
    cache_dir: str | Path | None = None,
    **_: Any,
) -> OrtFactory:
    """ONNX Runtime's TensorRT provider: fp32, or fp16 when asked (never on its own)."""
    cache = Path(cache_dir) if cache_dir else engines_dir() / "ort-trt"
    trt_opts = {
        "device_id": int(device_id),
        "trt_fp16_enable": precision == "fp16",
        "trt_engine_cache_enable": True,
        "trt_engine_cache_path": str(cache),
        "trt_timing_cache_enable": True,
    }
    cuda = ("CUDAExecutionProvider", {"device_id": int(device_id)})
    return OrtFactory(
        "ort-tensorrt",
        [("TensorrtExecutionProvider", trt_opts), cuda],
        precision=precision,
        precisions=("fp32", "fp16"),
        intra_op_threads=intra_op_threads,
        detector_providers=[cuda, "CPUExecutionProvider"],  # SCRFD in fp32 on CUDA
    )
