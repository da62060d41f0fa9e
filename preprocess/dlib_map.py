"""SCRFD face -> the box dlib's CNN (mmod) detector would have drawn (``crop_style="dlib"``).

The original's published checkpoints learned from crops of dlib's mmod detector (through
``face_recognition.batch_face_locations``): square, tight boxes from about the brows to just
below the lower lip. SCRFD's boxes are as wide but about 1.45 times as tall (forehead to chin),
so feeding SCRFD crops to those checkpoints shows them faces framed as they never saw in
training. This module maps an SCRFD face (box and five keypoints) to a square box placed as
mmod's, with numpy only: no dlib is needed at run time.

The model (coefficients fitted against dlib itself with ``benchmarks/fit_dlib_map.py``: least
squares, then a search for the highest mean IoU; shipped in
:mod:`preprocess.dlib_map_coefficients`), per face, with the eye centre ``e`` (mean of the two
eyes), the mouth centre ``m`` (mean of the mouth corners), ``k`` the mean of the five keypoints,
and the SCRFD box's centre ``b`` and width ``bw``:

    side = a_em * |m - e| + a_w * bw
    cx   = k_x + c_box * (b_x - k_x) + c_0 * side
    cy   = k_y + d_box * (b_y - k_y) + d_0 * side

and the box is the square of that side centred on ``(cx, cy)``, in the convention of mmod's
``rect`` (left, top, right, bottom) that face_recognition sliced with. Fitted on whole frames as
the original ran mmod, the box width sets the scale (``a_w`` about 1.3) and the eye-to-mouth
distance takes some back (``a_em`` about -0.6): a face long for its width (tilted up or down, the
mouth open) gets a smaller mmod box. Adding the eye distance, the nose or the box height did not
help on held-out faces. Without keypoints the box-only fallback is
``side = f_w * bw + f_h * bh``, centre ``(b_x + f_x * bw, b_y + f_y * bh)``. The float box then
goes through the same rounding and clipping as SCRFD's (:func:`preprocess.crop.crop_box`).

How close it gets: not as close as issue 9 hoped (mean IoU 0.85 with mmod). mmod's boxes are
points of a lattice fixed by the frame size (``benchmarks/fit_dlib_map.py``: ``mmod_lattice``
reproduces dlib's tiled pyramid, and every mmod box of the fitting set lies on it exactly): sides
6/5 apart, positions a tenth of the side apart; which point mmod picks depends on the face's
texture, not only its geometry. The same face in a photo and its mirror image, or in the same
frame of a video's fake and real versions, gets mmod boxes that agree at a mean IoU of 0.71-0.74,
where SCRFD's agree at 0.86-0.96. No coefficients of this map reach 0.80 even on the faces they
were fitted on (0.79); on faces left out of the fit it reaches 0.76-0.80 per group, against
0.59-0.68 for raw SCRFD boxes (figures in ``FIT``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

from core.config import CROP_STYLES
from core.errors import InvalidInputError
from preprocess.dlib_map_coefficients import COEFFICIENTS

if TYPE_CHECKING:
    from preprocess.scrfd import Face

KPS_TERMS = ("a_em", "a_w", "c_box", "c_0", "d_box", "d_0")
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
    p, bw, bx, by = p[ok], bw[ok], bx[ok], by[ok]
    c = coefficients["kps"]
    eye, mouth = (p[:, 0] + p[:, 1]) / 2, (p[:, 3] + p[:, 4]) / 2
    k = p.mean(axis=1)
    side = c["a_em"] * np.linalg.norm(mouth - eye, axis=1) + c["a_w"] * bw
    cx = k[:, 0] + c["c_box"] * (bx - k[:, 0]) + c["c_0"] * side
    cy = k[:, 1] + c["d_box"] * (by - k[:, 1]) + c["d_0"] * side
    out[ok] = _square(cx, cy, side)
    return out


def dlib_box(
    face: Face, *, coefficients: Mapping[str, Mapping[str, float]] = COEFFICIENTS
) -> tuple[float, float, float, float]:
    """The dlib-mmod-style float box (x1, y1, x2, y2) of one SCRFD face: :func:`map_boxes` for
    one face in plain Python (a few microseconds, where numpy's per-call overhead is ~100)."""
    x1, y1, x2, y2 = (float(v) for v in face.box)
    bw, bx, by = x2 - x1, (x1 + x2) / 2, (y1 + y2) / 2
    pts = face.kps
    if pts is None or not all(math.isfinite(v) for pt in pts for v in pt):
        f = coefficients["box"]
        side = f["f_w"] * bw + f["f_h"] * (y2 - y1)
        cx, cy = bx + f["f_x"] * bw, by + f["f_y"] * (y2 - y1)
    else:
        c = coefficients["kps"]
        (lex, ley), (rex, rey), _, (lmx, lmy), (rmx, rmy) = pts
        d_em = math.hypot((lmx + rmx - lex - rex) / 2, (lmy + rmy - ley - rey) / 2)
        kx = sum(pt[0] for pt in pts) / 5
        ky = sum(pt[1] for pt in pts) / 5
        side = c["a_em"] * d_em + c["a_w"] * bw
        cx = kx + c["c_box"] * (bx - kx) + c["c_0"] * side
        cy = ky + c["d_box"] * (by - ky) + c["d_0"] * side
    half = side / 2
    return cx - half, cy - half, cx + half, cy + half


def face_box(face: Face, style: str) -> tuple[float, float, float, float]:
    """The float box to crop for ``face`` in crop style ``style`` (``scrfd``: its own box)."""
    if style == "dlib":
        return dlib_box(face)
    check_crop_style(style)
    return tuple(float(v) for v in face.box)  # type: ignore[return-value]
