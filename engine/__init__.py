"""deepfake-engine runtime: torch-free inference for ResNeXt50 + LSTM deepfake detection.

Importing this package pulls in no heavy library (torch, tensorrt, onnxruntime); they are
imported where they are used.
"""

from __future__ import annotations

from core import __version__
from core.errors import (
    ArtifactNotFoundError,
    BackendUnavailableError,
    CheckpointError,
    EngineError,
    InvalidInputError,
    InvalidVideoError,
    MissingDependencyError,
    ModelFormatError,
    ParityError,
)

__all__ = [
    "ArtifactNotFoundError",
    "BackendUnavailableError",
    "CheckpointError",
    "EngineError",
    "InvalidInputError",
    "InvalidVideoError",
    "MissingDependencyError",
    "ModelFormatError",
    "ParityError",
    "__version__",
]
