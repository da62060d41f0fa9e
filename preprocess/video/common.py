"""What the decoding backends share: their names, the import of a backend's library (an
error that names the package and the other backends), the error that makes ``backend="auto"``
try the next backend, and the rotation of decoded pictures upright."""

from __future__ import annotations

import importlib
import logging
import os
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


#: The libraries whose own logs :func:`_native_logs` has set up in this process.
_NATIVE_LOGS_SET: set[str] = set()


def _native_logs(module: Any) -> None:
    """Quiet the native log of ``module`` (``av`` or ``cv2``) once per process: a file that
    cannot be read is reported by this engine's own error (and the record's), so FFmpeg's
    lines (``[mov,mp4,... @ 0x..] moov atom not found``) and OpenCV's (``[ WARN:0@0.9]
    global cap.cpp ...``) on stderr only repeat it. With logging at INFO or more verbose
    (``dfe -v``) they stay visible: FFmpeg's warnings and errors printed by FFmpeg itself.

    PyAV: ``av.logging.set_level(None)`` (no FFmpeg log at all; PyAV's own default), or with
    ``-v`` FFmpeg's default printer at its WARNING level. OpenCV: its log at ERROR, and its
    bundled FFmpeg's at ``OPENCV_FFMPEG_LOGLEVEL=-8`` (quiet; read when its first FFmpeg
    capture starts, so set before it; a value the user set is kept)."""
    name = module.__name__
    if name in _NATIVE_LOGS_SET:
        return
    _NATIVE_LOGS_SET.add(name)
    visible = logging.getLogger("preprocess.video").isEnabledFor(logging.INFO)
    try:
        if name == "av":
            if visible:
                module.logging.set_libav_level(module.logging.WARNING)
                module.logging.restore_default_callback()  # FFmpeg prints, no Python callback
            else:
                module.logging.set_level(None)
        elif name == "cv2" and not visible:
            os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # AV_LOG_QUIET
            module.utils.logging.setLogLevel(module.utils.logging.LOG_LEVEL_ERROR)
    except AttributeError:  # a build without these functions: its logs stay as they are
        pass


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
