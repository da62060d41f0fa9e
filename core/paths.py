"""The directories the engine reads and writes, and every environment variable it reads.

One variable per directory:

- models directory (the detector files; nothing is ever written there but a download):
  ``--models DIR``, else ``$DFE_MODELS``, else ``~/.cache/deepfake-engine/models``;
- cache of derived graphs (the batch-dynamic rewrite of a detector, its PyTorch conversion),
  keyed by the source file's sha256 and the rewrite's version: ``$DFE_CACHE``, else
  ``~/.cache/deepfake-engine/graphs``;
- TensorRT engine cache: ``MODEL_DIR/engines`` when writable, else ``$DFE_ENGINES``, else
  ``~/.cache/deepfake-engine/engines``;
- test and demo assets (``models/`` and ``videos/``): ``$DFE_SHARED``, else ``../shared`` next to
  a source checkout.

:data:`ENVIRONMENT` lists every variable the code reads (a test checks the code and docs/layout.md
against it).
"""

from __future__ import annotations

import os
from pathlib import Path

#: Every environment variable deepfake-engine reads, and what it does.
ENVIRONMENT: dict[str, str] = {
    "DFE_MODELS": "models directory (detector files; only downloads are written there); "
    "default ~/.cache/deepfake-engine/models",
    "DFE_CACHE": "cache of derived graphs (batch-dynamic detector rewrites, the PyTorch "
    "conversion of the detector), keyed by source sha256 and rewrite version; default "
    "~/.cache/deepfake-engine/graphs",
    "DFE_ENGINES": "TensorRT engine cache when the model directory is read-only; default "
    "~/.cache/deepfake-engine/engines",
    "DFE_SHARED": "test and demo assets (models/, videos/); default ../shared next to a checkout",
    "DFE_ORT_THREADS": "ONNX Runtime intra-op threads per network call when --threads is 0",
    "DFE_ORT_SPINNING": "1 turns ONNX Runtime's thread spinning back on (off by default)",
    "DFE_MMAP_THRESHOLD": "bytes from which glibc gives a block its own mapping (unset or 0: "
    "glibc's adaptive threshold, the default; 1048576 gives the lowest memory at about 12% more "
    "CPU)",
    "DFE_MALLOC_TRIM_INTERVAL": "seconds between two malloc_trim(0) calls after a video "
    "(default 30; 0 never trims)",
    "DFE_RAY_CRASH_ONCE": "test hook: SUBSTRING:MARKER kills a Ray worker once on a matching path",
    "DFE_RAY_CRASH_ALWAYS": "test hook: kills a Ray worker on every path containing the value",
    "DFE_TEST_MODEL": "test hook: an exported model directory the GPU tests use instead of "
    "exporting one (set by benchmarks/gpu_check.py)",
}

_CACHE_ROOT = Path("~/.cache/deepfake-engine")
#: The source checkout this package was imported from (``benchmarks/`` and ``tests/`` live
#: there); None when installed from a wheel.
_REPO = Path(__file__).resolve().parents[1]


def env(name: str) -> str | None:
    """The value of a documented environment variable (empty counts as unset)."""
    if name not in ENVIRONMENT:
        raise KeyError(f"{name} is not a documented deepfake-engine variable")
    return os.environ.get(name) or None


def models_dir(explicit: str | os.PathLike[str] | None = None) -> Path:
    """The models directory: ``explicit`` (``--models DIR``), else ``$DFE_MODELS``, else
    ``~/.cache/deepfake-engine/models``. Not created here."""
    if explicit:
        return Path(explicit).expanduser()
    value = env("DFE_MODELS")
    return Path(value).expanduser() if value else (_CACHE_ROOT / "models").expanduser()


def cache_dir() -> Path:
    """The cache of derived graphs: ``$DFE_CACHE``, else ``~/.cache/deepfake-engine/graphs``.
    Rewritten graphs go here, never next to the user's model files. Not created here."""
    value = env("DFE_CACHE")
    return Path(value).expanduser() if value else (_CACHE_ROOT / "graphs").expanduser()


def engines_dir() -> Path:
    """The TensorRT engine cache used when a model directory is read-only."""
    value = env("DFE_ENGINES")
    return Path(value).expanduser() if value else (_CACHE_ROOT / "engines").expanduser()


def shared_dir() -> Path:
    """Test and demo assets: ``$DFE_SHARED``, else ``../shared`` next to the source checkout."""
    value = env("DFE_SHARED")
    return Path(value).expanduser() if value else _REPO.parent / "shared"


def in_checkout() -> bool:
    """Whether this package runs from a source checkout (``tests/`` next to it)."""
    return (_REPO / "tests").is_dir() and (_REPO / "pyproject.toml").is_file()
