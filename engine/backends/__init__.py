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
    "ort": "engine.backends.ort_backend:cpu_factory",
    "ort-cuda": "engine.backends.ort_backend:cuda_factory",
    "ort-tensorrt": "engine.backends.ort_backend:tensorrt_factory",
    "torch": "engine.backends.torch_backend:cpu_factory",
    "torch-cuda": "engine.backends.torch_backend:cuda_factory",
}
ALIASES = {"onnxruntime": "ort", "cpu": "ort"}
# "auto": the first of these that can run here.
AUTO_ORDER = ("ort-cuda", "ort")
BACKEND_NAMES = ("auto", *_REGISTRY)


def _load(name: str) -> Callable[..., BackendFactory]:
    module, func = _REGISTRY[name].split(":")
    return getattr(importlib.import_module(module), func)


def get_factory(name: str, **options: object) -> BackendFactory:
    """The factory for backend ``name`` (or the best available one for ``auto``)."""
    name = ALIASES.get(name, name)
    if name == "auto":
        reasons = []
        for candidate in AUTO_ORDER:
            try:
                return _load(candidate)(**options)
            except EngineError as exc:  # unavailable here: try the next one, say why later
                reasons.append(f"{candidate}: {exc}")
        raise BackendUnavailableError("no backend can run here: " + "; ".join(reasons))
    if name not in _REGISTRY:
        raise InvalidInputError(
            f"unknown backend {name!r}; supported values are {', '.join(BACKEND_NAMES)}"
        )
    return _load(name)(**options)


__all__ = ["AUTO_ORDER", "BACKEND_NAMES", "BackendUnavailableError", "get_factory"]
