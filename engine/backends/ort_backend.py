"""ONNX Runtime: the CPU execution provider, and CUDA / TensorRT providers with onnxruntime-gpu.

After creating a session we check which provider actually runs it: ONNX Runtime quietly drops
to CPU when a GPU provider fails to load, and a backend that was asked for must never do that.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from engine._deps import require
from engine.backends.base import GraphBackend, TensorSpec
from engine.errors import BackendUnavailableError

log = logging.getLogger(__name__)

_ORT_TYPES = {
    "tensor(float)": np.dtype(np.float32),
    "tensor(float16)": np.dtype(np.float16),
    "tensor(uint8)": np.dtype(np.uint8),
    "tensor(int64)": np.dtype(np.int64),
}


def _provider_name(p: Any) -> str:
    return p[0] if isinstance(p, tuple) else p


def session_options(ort: Any, intra_op_threads: int = 0) -> Any:
    """Options shared by every session of the engine (classifier and detector).

    Spinning is off: the pipeline runs the detector and the classifier at the same time, and
    spinning worker threads of one session steal the cores the other needs (measured on 2
    cores: 1.75 videos/s without spinning, 1.30 with). ``DFE_ORT_SPINNING=1`` turns it back on.
    """
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if intra_op_threads:
        opts.intra_op_num_threads = intra_op_threads
    spinning = "1" if os.environ.get("DFE_ORT_SPINNING") == "1" else "0"
    opts.add_session_config_entry("session.intra_op.allow_spinning", spinning)
    return opts


def create_session(path: Path, providers: Sequence[Any], *, intra_op_threads: int = 0) -> Any:
    """An InferenceSession whose first provider is the one asked for, or an error."""
    ort = require("onnxruntime")
    wanted = _provider_name(providers[0])
    try:
        sess = ort.InferenceSession(
            str(path), session_options(ort, intra_op_threads), providers=list(providers)
        )
    except Exception as exc:  # ORT raises its own Fail/RuntimeException types
        raise BackendUnavailableError(
            f"ONNX Runtime could not load {path} with {wanted}: {exc}"
        ) from exc
    running = sess.get_providers()
    if not running or running[0] != wanted:
        raise BackendUnavailableError(
            f"asked for {wanted} but ONNX Runtime runs {path.name} on {running}: the provider "
            "failed to load (missing CUDA/cuDNN/TensorRT libraries?). Refusing to fall back "
            "silently; fix the GPU install or pick --backend ort for CPU."
        )
    return sess


class OrtBackend(GraphBackend):
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


class _OrtFactory:
    def __init__(self, name: str, providers: list[Any], *, intra_op_threads: int = 0) -> None:
        ort = require("onnxruntime")
        wanted = _provider_name(providers[0])
        if wanted not in ort.get_available_providers():
            raise BackendUnavailableError(
                f"{name}: {wanted} is not available in onnxruntime {ort.__version__} "
                f"(available: {ort.get_available_providers()}); install the `gpu` extra "
                "(onnxruntime-gpu) on a machine with an NVIDIA driver"
            )
        self.name = name
        self.providers = providers
        self.intra_op_threads = intra_op_threads

    def __call__(self, graph: str, onnx_path: Path, *, spec: object = None) -> OrtBackend:
        sess = create_session(onnx_path, self.providers, intra_op_threads=self.intra_op_threads)
        log.info("%s: %s on %s", self.name, onnx_path.name, sess.get_providers())
        return OrtBackend(self.name, sess)


def _threads(options: dict[str, Any]) -> int:
    return int(options.get("intra_op_threads") or os.environ.get("DFE_ORT_THREADS", 0) or 0)


def cpu_factory(**options: Any) -> _OrtFactory:
    return _OrtFactory("ort", ["CPUExecutionProvider"], intra_op_threads=_threads(options))


def cuda_factory(**options: Any) -> _OrtFactory:
    dev = int(options.get("device_id", 0))
    return _OrtFactory(
        "ort-cuda",
        [("CUDAExecutionProvider", {"device_id": dev}), "CPUExecutionProvider"],
        intra_op_threads=_threads(options),
    )


def tensorrt_factory(**options: Any) -> _OrtFactory:
    dev = int(options.get("device_id", 0))
    cache = Path(options.get("cache_dir") or Path.home() / ".cache" / "deepfake-engine" / "ort-trt")
    trt_opts = {
        "device_id": dev,
        "trt_fp16_enable": bool(options.get("fp16", True)),
        "trt_engine_cache_enable": True,
        "trt_engine_cache_path": str(cache),
        "trt_timing_cache_enable": True,
    }
    return _OrtFactory(
        "ort-tensorrt",
        [("TensorrtExecutionProvider", trt_opts), ("CUDAExecutionProvider", {"device_id": dev})],
        intra_op_threads=_threads(options),
    )
