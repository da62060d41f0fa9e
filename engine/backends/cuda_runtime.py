"""The few CUDA runtime calls the TensorRT path needs (cuda-python, imported lazily).

Shared by the TensorRT backend (:mod:`engine.backends.trt_backend`) and the engine builder
(:mod:`engine.backends.trt_build`), so neither imports the other for them.

NOT TESTED ON A GPU here: exercised by the ``gpu``-marked tests and, on CPU, with a fake
``cudart`` module in the tests.
"""

from __future__ import annotations

from typing import Any

from core.deps import require
from core.errors import BackendUnavailableError, MissingDependencyError


def import_cudart() -> Any:
    """cuda-python's runtime API module, or MissingDependencyError naming the extra."""
    try:
        from cuda.bindings import runtime as cudart  # cuda-python >= 12.6
    except ImportError:
        try:
            from cuda import cudart  # older cuda-python
        except ImportError as exc:
            raise MissingDependencyError(
                f"cuda-python is needed for the TensorRT backend but could not be imported "
                f"({exc}); install it with: pip install 'deepfake-engine[gpu]'"
            ) from exc
    return cudart


class Cuda:
    """The few CUDA runtime calls we need, each checked."""

    def __init__(self, device_id: int = 0) -> None:
        self.rt = import_cudart()
        self.device_id = device_id
        count = self.call(self.rt.cudaGetDeviceCount(), "cudaGetDeviceCount")
        if count < 1 or device_id >= count:
            raise BackendUnavailableError(
                f"no CUDA device {device_id} (found {count}); the TensorRT backend needs an "
                "NVIDIA GPU"
            )
        self.call(self.rt.cudaSetDevice(device_id), "cudaSetDevice")

    def call(self, result: Any, what: str) -> Any:
        err, rest = (result[0], result[1:]) if isinstance(result, tuple) else (result, ())
        if err != self.rt.cudaError_t.cudaSuccess:
            name = self.rt.cudaGetErrorString(err)[1]
            raise BackendUnavailableError(f"{what} failed: {name!r} ({err})")
        return rest[0] if len(rest) == 1 else (rest or None)

    def device_properties(self) -> tuple[str, str]:
        """(GPU name, compute capability "major.minor")."""
        prop = self.call(self.rt.cudaGetDeviceProperties(self.device_id), "cudaGetDeviceProperties")
        name = prop.name
        if isinstance(name, bytes):
            name = name.split(b"\0", 1)[0].decode(errors="replace")
        return str(name).strip(), f"{prop.major}.{prop.minor}"


def device_info(device_id: int = 0) -> Any:
    """The :class:`DeviceInfo` an engine built here is tied to."""
    from engine.backends.engine_cache import DeviceInfo

    trt = require("tensorrt", purpose="the TensorRT backend")
    name, cc = Cuda(device_id).device_properties()
    return DeviceInfo(gpu_name=name, compute_capability=cc, tensorrt_version=trt.__version__)
