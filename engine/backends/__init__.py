"""Inference backends: one small class each, picked from a registry whose entries import on use.

Every backend runs the exported graphs (``classifier`` and, for the sequence variant, ``head``)
behind the same :meth:`~engine.backends.base.GraphBackend.infer`, which validates inputs before
the backend's own ``infer_impl``. A backend asked for by name that cannot run here raises
:class:`~core.errors.BackendUnavailableError`; nothing falls back silently. Each backend
runs exactly the precision it is asked for (:data:`PRECISION_BACKENDS`), or refuses.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING

from core.config import AUTO_ORDER, BACKEND_NAMES, canonical_backend
from core.errors import BackendUnavailableError, EngineError, InvalidInputError

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
# Which backends run which precision. fp16: TensorRT engines compiled from the fp32 graph (native
# or through ONNX Runtime's TensorRT provider) and PyTorch on CUDA; bf16: PyTorch; int8:
# the Q/DQ graph of `dfe build --precision int8`, on TensorRT or ONNX Runtime CPU.
#: Backends that run on the CPU alone.
CPU_BACKENDS = ("ort", "torch")
PRECISION_BACKENDS: dict[str, tuple[str, ...]] = {
    "fp32": tuple(_REGISTRY),
    "fp16": ("tensorrt", "ort-tensorrt", "torch-cuda"),
    "bf16": ("torch-cuda", "torch"),
    "int8": ("tensorrt", "ort"),
}


def _load(name: str) -> Callable[..., BackendFactory]:
    module, func = _REGISTRY[name].split(":")
    return getattr(importlib.import_module(module), func)


def get_factory(name: str, *, precision: str = "fp32", **options: object) -> BackendFactory:
    """The factory for backend ``name`` (or the best available one for ``auto``) running
    ``precision``; each factory is told the precision and runs exactly that."""
    name = canonical_backend(name)
    if precision not in PRECISION_BACKENDS:
        raise InvalidInputError(
            f"precision={precision!r} is not supported; supported values are "
            f"{', '.join(PRECISION_BACKENDS)}"
        )
    allowed = PRECISION_BACKENDS[precision]

    def make(candidate: str) -> BackendFactory:
        return _load(candidate)(precision=precision, **options)

    if name == "auto":
        candidates = [c for c in AUTO_ORDER if c in allowed]
        if not candidates:
            raise InvalidInputError(
                f"no backend of --backend auto runs {precision}; backends for {precision}: "
                f"{', '.join(allowed)} (pass one with --backend)"
            )
        reasons = []
        for candidate in candidates:
            try:
                return make(candidate)
            except EngineError as exc:  # unavailable here: try the next one, say why later
                if len(candidates) == 1 and precision == "fp32":
                    raise  # its own error (e.g. the extra to install)
                reasons.append(f"{candidate}: {exc}")
        if precision == "fp32":
            raise BackendUnavailableError("no backend can run here: " + "; ".join(reasons))
        on_cpu = [c for c in allowed if c in CPU_BACKENDS]
        where = (
            f"--backend auto tried {', '.join(candidates)}, which cannot run here; it also "
            f"runs on {', '.join(on_cpu)} (pass it with --backend)"
            if on_cpu
            else f"it needs an NVIDIA GPU: its backends ({', '.join(allowed)}) cannot run on "
            "this machine"
        )
        raise BackendUnavailableError(
            f"--precision {precision}: {where}. Why: "
            + "; ".join(reasons)
            + ". Without a GPU, use --precision fp32, or int8 after dfe build MODEL "
            "--precision int8"
        )
    if name not in _REGISTRY:
        raise InvalidInputError(
            f"unknown backend {name!r}; supported values are {', '.join(BACKEND_NAMES)}"
        )
    if name not in allowed:
        raise InvalidInputError(
            f"backend {name!r} does not run precision {precision}; backends for {precision}: "
            f"{', '.join(allowed)}"
        )
    return make(name)


__all__ = [
    "AUTO_ORDER",
    "BACKEND_NAMES",
    "PRECISION_BACKENDS",
    "BackendUnavailableError",
    "get_factory",
]
