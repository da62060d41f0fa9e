"""The colour measures of ``preprocess.quality`` equal their textbook definitions: the circular
standard deviation from the complex mean of unit hue vectors, and the residual of a least-squares
quadratic fit solved on the pixels. The module computes both a faster way (separate means; the
3x3 normal equations of a centred basis), so this checks it on real face crops and on the
degenerate crops where a fast formula could break: flat, two lightness levels, gray, a tint."""

from __future__ import annotations

import numpy as np
import pytest

from preprocess.quality import CHROMATIC_ABOVE, chroma_spread, hue_spread, lab_pixels
from tests.conftest import VIDEOS_DIR


def _hue_by_definition(lab: np.ndarray) -> float:
    a, b = lab[:, 1] - 128.0, lab[:, 2] - 128.0
    chroma = np.hypot(a, b)
    keep = chroma > CHROMATIC_ABOVE
    if keep.sum() < max(1, 0.01 * len(chroma)):
        return 0.0
    resultant = float(np.abs(((a[keep] + 1j * b[keep]) / chroma[keep]).mean()))
    return float(np.degrees(np.sqrt(-2.0 * np.log(max(resultant, 1e-12)))))


def _chroma_by_definition(lab: np.ndarray) -> float:
    lum = lab[:, 0] / 255.0
    basis = np.stack([np.ones_like(lum), lum, lum * lum], axis=1)
    chroma = lab[:, 1:]
    coef, *_ = np.linalg.lstsq(basis, chroma, rcond=None)
    return float(np.sqrt(((chroma - basis @ coef) ** 2).mean(axis=0).sum()))


def _crops() -> list[tuple[str, np.ndarray]]:
    rng = np.random.default_rng(7)
    gray = rng.integers(0, 256, (112, 112), dtype=np.uint8)
    two = np.zeros((112, 112, 3), np.uint8)
    two[:56], two[56:] = (10, 200, 30), (200, 30, 10)
    out = [
        ("noise", rng.integers(0, 256, (112, 112, 3), dtype=np.uint8)),
        ("flat black", np.zeros((112, 112, 3), np.uint8)),
        ("flat colour", np.full((112, 112, 3), (40, 90, 200), np.uint8)),
        ("two levels", two),
        ("gray", np.dstack([gray, gray, gray])),
        ("sepia", np.dstack([(gray * 0.7).astype(np.uint8), (gray * 0.85).astype(np.uint8), gray])),
        ("small", rng.integers(0, 256, (9, 7, 3), dtype=np.uint8)),
    ]
    clip = VIDEOS_DIR / "pair480p_real.mp4"
    if clip.is_file():
        import cv2

        from preprocess.video import read_video

        for i, frame in enumerate(read_video(clip, 4).frames):
            out.append((f"face {i}", cv2.resize(frame[90:390, 280:580], (112, 112))))
    return out


@pytest.mark.parametrize(("name", "crop"), _crops(), ids=[n for n, _ in _crops()])
def test_colour_measures_equal_their_definitions(name, crop):
    lab = lab_pixels(crop)
    assert hue_spread(crop, lab) == pytest.approx(_hue_by_definition(lab), abs=1e-9), name
    assert chroma_spread(crop, lab) == pytest.approx(_chroma_by_definition(lab), abs=1e-9), name
    assert hue_spread(crop) == hue_spread(crop, lab) and chroma_spread(crop) == chroma_spread(
        crop, lab
    )
