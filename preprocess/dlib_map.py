"""SCRFD face -> the box dlib's CNN (mmod) detector would have drawn (``crop_style="dlib"``).

The original's published checkpoints learned from crops of dlib's mmod detector (through
``face_recognition.batch_face_locations``): square, tight boxes. SCRFD's boxes are taller and
sit lower on the face (they include the chin and more forehead), so feeding SCRFD crops to those
checkpoints shows them faces framed as they never saw in training. This module maps an SCRFD
face (box and five keypoints) to a square box placed as mmod's, with numpy only: no dlib is
needed at run time.

The model (coefficients fitted by ``benchmarks/fit_dlib_map.py`` against dlib itself and
shipped in :mod:`preprocess.dlib_map_coefficients`), per face, with the keypoints ``le, re``
(eyes), ``n`` (nose), ``lm, rm`` (mouth corners), ``e = (le + re) / 2``, ``m = (lm + rm) / 2``,
``k`` = the mean of the five points, and the SCRFD box's centre ``b`` and size ``bw x bh``:

    side = a_eye * |re - le| + a_em * |m - e| + a_w * bw + a_h * bh
    cx   = k_x + c_box * (b_x - k_x) + c_nose * (n_x - e_x) + c_0 * side
    cy   = k_y + d_box * (b_y - k_y) + d_0 * side

and the box is the square of that side centred on ``(cx, cy)``, in the convention of mmod's
``rect`` (left, top, right, bottom) that face_recognition sliced with. Without keypoints the
box-only fallback is ``side = f_w * bw + f_h * bh``, centre ``(b_x + f_x * bw, b_y + f_y * bh)``.
The resulting float box goes through the same rounding and clipping as SCRFD's
(:func:`preprocess.crop.crop_box`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

from engine.errors import InvalidInputError
from preprocess.dlib_map_coefficients import COEFFICIENTS

if TYPE_CHECKING:
    from preprocess.scrfd import Face

CROP_STYLES = ("scrfd", "dlib")

KPS_TERMS = ("a_eye", "a_em", "a_w", "a_h", "c_box", "c_nose", "c_0", "d_box", "d_0")
BOX_TERMS = ("f_w", "f_h", "f_x", "f_y")


def check_crop_style(style: str) -> str:
    if style not in CROP_STYLES:
        raise InvalidInputError(
            f"crop_style={style!r} is not supported; supported values are {', '.join(CROP_STYLES)}"
        )
    return style


def _square(cx: np.ndarray, cy: np.ndarray, side: np.ndarray) -> np.ndarray:
    half = side / 2
    return np.stack([cx - half, cy - half, cx + half, cy + half], axis=-1)


def map_boxes(
    boxes: np.ndarray | Sequence[Sequence[float]],
    kps: np.ndarray | Sequence | None = None,
    *,
    coefficients: Mapping[str, Mapping[str, float]] = COEFFICIENTS,
) -> np.ndarray:
    """dlib-mmod-style boxes ``(N, 4)`` (x1, y1, x2, y2, float64) of SCRFD ``boxes`` ``(N, 4)``
    and their keypoints ``(N, 5, 2)``; rows of ``kps`` that are NaN, or ``kps=None``, use the
    box-only formula."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    bw, bh = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
    bx, by = (b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2
    f = coefficients["box"]
    out = _square(bx + f["f_x"] * bw, by + f["f_y"] * bh, f["f_w"] * bw + f["f_h"] * bh)
    if kps is None:
        return out
    p = np.asarray(kps, dtype=np.float64).reshape(-1, 5, 2)
    if len(p) != len(b):
        raise InvalidInputError(f"{len(b)} boxes but {len(p)} keypoint sets")
    ok = np.isfinite(p).all(axis=(1, 2))
    if not ok.any():
        return out
    p, bw, bh, bx, by = p[ok], bw[ok], bh[ok], bx[ok], by[ok]
    c = coefficients["kps"]
    eye, mouth = (p[:, 0] + p[:, 1]) / 2, (p[:, 3] + p[:, 4]) / 2
    k = p.mean(axis=1)
    side = (
        c["a_eye"] * np.linalg.norm(p[:, 1] - p[:, 0], axis=1)
        + c["a_em"] * np.linalg.norm(mouth - eye, axis=1)
        + c["a_w"] * bw
        + c["a_h"] * bh
    )
    cx = k[:, 0] + c["c_box"] * (bx - k[:, 0]) + c["c_nose"] * (p[:, 2, 0] - eye[:, 0])
    cx = cx + c["c_0"] * side
    cy = k[:, 1] + c["d_box"] * (by - k[:, 1]) + c["d_0"] * side
    out[ok] = _square(cx, cy, side)
    return out


def dlib_box(face: Face) -> tuple[float, float, float, float]:
    """The dlib-mmod-style float box (x1, y1, x2, y2) of one SCRFD face."""
    kps = None if face.kps is None else [face.kps]
    x1, y1, x2, y2 = map_boxes([face.box], kps)[0]
    return float(x1), float(y1), float(x2), float(y2)


def face_box(face: Face, style: str) -> tuple[float, float, float, float]:
    """The float box to crop for ``face`` in crop style ``style`` (``scrfd``: its own box)."""
    if style == "dlib":
        return dlib_box(face)
    check_crop_style(style)
    return tuple(float(v) for v in face.box)  # type: ignore[return-value]
