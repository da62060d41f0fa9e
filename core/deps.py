"""Lazy imports of optional heavy libraries, with errors that name the extra to install."""

from __future__ import annotations

import importlib
from types import ModuleType

from core.errors import MissingDependencyError

# module -> (extra, what it is for)
_EXTRAS: dict[str, tuple[str, str]] = {
    "torch": ("export", "checkpoint export and the PyTorch backend"),
    "torchvision": ("export", "checkpoint export and the PyTorch backend"),
    "onnxruntime": ("cpu", "ONNX Runtime inference (or the `gpu` extra on NVIDIA machines)"),
    "tensorrt": ("gpu", "the TensorRT backend"),
    "onnx2torch": ("torch-gpu", "the PyTorch SCRFD detector (--backend torch-cuda)"),
    "insightface": ("dev", "comparisons against InsightFace's own SCRFD"),
    "fastapi": ("serve", "dfe serve"),
    "uvicorn": ("serve", "dfe serve"),
    "multipart": ("serve", "dfe serve (multipart uploads)"),
    "matplotlib": ("eval", "plots (dfe eval, dfe train's curves.png, the benchmark report)"),
    "pyarrow": ("ray", "Parquet output (dfe score --out DIR.parquet)"),
}


def require(module: str, *, purpose: str | None = None, instead: str | None = None) -> ModuleType:
    """Import ``module`` or raise :class:`MissingDependencyError` naming the extra to install
    (and ``instead``, a way to do without it, e.g. ``"pass --no-plots"``)."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        extra, default_purpose = _EXTRAS.get(module, ("", "this feature"))
        hint = (
            f"install it with: pip install 'deepfake-engine[{extra}]'"
            if extra
            else f"install it with: pip install {module}"
        ) + (f" (or {instead})" if instead else "")
        raise MissingDependencyError(
            f"{module} is needed for {purpose or default_purpose} but could not be imported "
            f"({exc}); {hint}"
        ) from exc
