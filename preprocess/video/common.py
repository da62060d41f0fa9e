"""What the decoding backends share: their names, the import of a backend's library (an
error that names the package and the other backends), the error that makes ``backend="auto"``
try the next backend, and the rotation of decoded pictures upright."""

from __future__ import annotations

import importlib
from typing import Any

import numpy as np

from core.errors import InvalidVideoError, MissingDependencyError

# "pillow" reads animated WebP and APNG (chosen by "auto" for those files; see pillow_backend).
BACKENDS = ("auto", "pyav", "opencv", "pillow")


class _CannotOpenError(InvalidVideoError):
    """A backend could not open the file at all: with ``backend="auto"`` the next one is tried."""


def _import(module: str, package: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependencyError(
            f"the {package!r} package is needed for this video backend but `import {module}` "
            f"failed ({exc}); install it with: pip install {package} (a dependency of "
            f"deepfake-engine), or pass another backend= of {', '.join(repr(b) for b in BACKENDS)}"
        ) from exc


def _rotation_cw(ccw_degrees: float) -> tuple[int, str | None]:
    """Clockwise right angle to apply for a display matrix rotating ``ccw_degrees`` CCW."""
    cw = (-float(ccw_degrees)) % 360.0
    quarter = round(cw / 90.0) % 4
    note = None
    if abs(((cw - 90.0 * quarter) + 180.0) % 360.0 - 180.0) > 1.0:
        note = f"display rotation of {cw:.1f} degrees rounded to {90 * quarter}"
    return 90 * quarter, note


def _upright(image: np.ndarray, rotation: int) -> np.ndarray:
    if rotation:
        image = np.rot90(image, k=-(rotation // 90))  # np.rot90 turns counter-clockwise
    return np.ascontiguousarray(image)
