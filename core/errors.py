"""One exception tree for the whole engine.

Every subclass also inherits the matching builtin, so callers can catch either
``EngineError`` or the usual ``ValueError`` / ``FileNotFoundError`` / ``ImportError``.
Messages say what failed, what was expected versus found, and how to fix it.
"""

from __future__ import annotations


class EngineError(Exception):
    """Base class of every error raised on purpose by deepfake-engine."""


class InvalidVideoError(EngineError, ValueError):
    """A file could not be read as a video (empty, truncated, no video stream, ...)."""


class CheckpointError(EngineError, ValueError):
    """A file is not a usable checkpoint of the ResNeXt50 + LSTM model."""


class ModelFormatError(EngineError, ValueError):
    """An ONNX model or sidecar does not have the layout this engine expects."""


class InvalidInputError(EngineError, ValueError):
    """An argument or array given to the engine is not valid."""


class ArtifactNotFoundError(EngineError, FileNotFoundError):
    """A model file, sidecar or other artifact is missing."""


class MissingDependencyError(EngineError, ImportError):
    """An optional dependency is needed for what was asked; the message names the extra."""


class BackendUnavailableError(EngineError, RuntimeError):
    """A backend or device was asked for explicitly but cannot run here. Never falls back."""


class ParityError(EngineError, RuntimeError):
    """An exported graph does not reproduce the reference model within tolerance."""


class PortBusyError(EngineError, OSError):
    """The address and port a server was asked to listen on are taken by another process.
    The CLI exits with :attr:`exit_code` (``engine.options.EXIT_PORT_BUSY``) for it."""

    exit_code = 4


class OutputError(EngineError, OSError):
    """An output (a results file or folder) cannot be written: not writable, a full disk, an
    I/O error. The message names the file, what was kept and how to go on."""
