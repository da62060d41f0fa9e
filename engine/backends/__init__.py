"""Inference backends: one small class each, picked from a registry whose entries import on use.

Every backend runs the exported graphs (``classifier`` and, for the sequence variant, ``head``)
behind the same :meth:`~engine.backends.base.GraphBackend.infer`, which validates inputs before
the backend's own ``infer_impl``. A backend asked for by name that cannot run here raises
:class:`~engine.errors.BackendUnavailableError`; nothing falls back silently.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING

from engine.errors import BackendUnavailableError, EngineError, InvalidInputError

if TYPE_CHECKING:
    from engine.backends.base import BackendFactory

# name -> "module:function" returning a BackendFactory; imported on first use.
_REGISTRY: dict[str, str] = {
    "tensorrt": "engine.backends.trt_backend:tensorrt_factory",
    "ort": "engine.backends.ort_backend:cpu_factory",
    "ort-cuda": "engine.backends.ort_backend:cuda_factory",
    "ort-tensorrt": "engine.backends.ort_backend:tensorrt_factory",
    "torch": "engine.backends.torch_backend:cpu_factory",
    "torch-cuda": "engine.backends.torch_backend:cuda_factory",
}
ALIASES = {"onnxruntime": "ort", "cpu": "ort", "trt": "tensorrt"}
# "auto": the first of these that can run here (and runs the precision asked for).
AUTO_ORDER = ("tensorrt", "ort-cuda", "ort")
BACKEND_NAMES = ("auto", *_REGISTRY, "trt")
# Which backends run which precision. fp16 is TensorRT's (engines compiled from the fp32
# graph) and PyTorch's on CUDA; bf16 is PyTorch's (CPU, and CUDA where the GPU has it); int8 is
# the Q/DQ graph of `dfe build --precision int8`, on TensorRT or ONNX Runtime CPU.
PRECISION_BACKENDS: dict[str, tuple[str, ...]] = {
    "fp32": tuple(_REGISTRY),
    "fp16": ("tensorrt", "torch-cuda"),
    "bf16": ("torch", "torch-cuda"),
    "int8": ("tensorrt", "ort"),
}
# Backends whose factory is told the precision (the others run whichever graph they are given).
_TOLD_PRECISION = ("tensorrt", "torch", "torch-cuda")


def _load(name: str) -> Callable[..., BackendFactory]:
    module, func = _REGISTRY[name].split(":")
    return getattr(importlib.import_module(module), func)


def get_factory(name: str, *, precision: str = "fp32", **options: object) -> BackendFactory:
    """The factory for backend ``name`` (or the best available one for ``auto``) running
    ``precision``. The TensorRT and PyTorch factories are told the precision (TensorRT picks the
    engine, PyTorch casts the module); the others run whichever ONNX graph they are given."""
    name = ALIASES.get(name, name)
    if precision not in PRECISION_BACKENDS:
        raise InvalidInputError(
            f"precision={precision!r} is not supported; supported values are "
            f"{', '.join(PRECISION_BACKENDS)}"
        )
    allowed = PRECISION_BACKENDS[precision]

    def make(candidate: str) -> BackendFactory:
        extra = {"precision": precision} if candidate in _TOLD_PRECISION else {}
        return _load(candidate)(**options, **extra)

    if name == "auto":
        candidates = [c for c in AUTO_ORDER if c in allowed]
        if not candidates:
            raise InvalidInputError(
                f"backend 'auto' does not pick a backend for precision {precision}; name one of "
                f"{', '.join(allowed)}"
            )
        if len(candidates) == 1:
            return make(candidates[0])  # its own error (e.g. the extra to install) if it fails
        reasons = []
        for candidate in candidates:
            try:
                return make(candidate)
            except EngineError as exc:  # unavailable here: try the next one, say why later
                reasons.append(f"{candidate}: {exc}")
        raise BackendUnavailableError("no backend can run here: " + "; ".join(reasons))
    if name not in _REGISTRY:
        raise InvalidInputError(
            f"unknown backend {name!r}; supported values are {', '.join(BACKEND_NAMES)}"
        )
    if name not in allowed:
        raise InvalidInputError(
            f"backend {name!r} does not run precision {precision}; backends for {precision}: "
            f"{', '.join(allowed)}"
            + (" (build with: dfe build MODEL --precision fp16)" if precision == "fp16" else "")
        )
    return make(name)


__all__ = [
    "AUTO_ORDER",
    "BACKEND_NAMES",
    "PRECISION_BACKENDS",
    "BackendUnavailableError",
    "get_factory",
]
