"""Issue 14's hard inputs, re-made from the shared clips with PyAV (no ffmpeg CLI needed).

Each function decodes the first frames of a shared clip, transforms them with OpenCV/numpy as
the issue's ffmpeg filters do, and encodes H.264 (libx264, yuv420p) at the clip's rate, so the
result goes through the same decoder as any user's video. Sizes are parameters, because the
issue asks for other sizes to be tried than its own.
"""

from __future__ import annotations

from collections.abc import Iterable
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

from preprocess.video import read_video

#: Centre of the woman's face in dfdc_like_real.mp4 (1920x1080), over its first seconds; her
#: SCRFD box there is about 199x285 px.
DFDC_FACE_CENTRE = (1160.0, 323.0)
DFDC_FACE_HEIGHT = 285.0


def encode(path: Path, frames: Iterable[np.ndarray], *, rate: int = 24, crf: int = 20) -> Path:
    """Encode BGR frames (one even-sided shape) as H.264 in ``path`` (mp4)."""
    frames = list(frames)
    h, w = frames[0].shape[:2]
    with av.open(str(path), "w") as out:
        stream = out.add_stream(
            "libx264", rate=Fraction(rate), options={"crf": str(crf), "preset": "ultrafast"}
        )
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        for image in frames:
            out.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="bgr24")))
        out.mux(stream.encode())
    return path


def closeup(
    path: Path, shared: Path, *, frames: int = 10, face_fraction: float = 0.89, side: int = 480
) -> Path:
    """A square close-up of the woman in dfdc_like_real: her face box is ``face_fraction`` of
    the frame's height, the frame ``side`` x ``side``. The issue's command (crop 320x320
    around her face, scaled to 480) is ``face_fraction=0.89, side=480`` (face ~62% wide)."""
    region = DFDC_FACE_HEIGHT / face_fraction
    cx, cy = DFDC_FACE_CENTRE
    x0, y0 = cx - region / 2, cy - region / 2
    scale = side / region
    # an affine warp crops and scales in one step; the border (if the region leaves the frame)
    # is black, as ffmpeg's pad would make it
    m = np.float32([[scale, 0, -x0 * scale], [0, scale, -y0 * scale]])
    clip = read_video(shared / "videos" / "dfdc_like_real.mp4", frames)
    return encode(
        path,
        (cv2.warpAffine(f, m, (side, side), flags=cv2.INTER_AREA) for f in clip.frames),
        rate=30,
    )


def small_face(
    path: Path,
    shared: Path,
    *,
    frames: int = 4,
    scale: float = 0.6,
    canvas: tuple[int, int] = (3840, 2160),
    at: tuple[int, int] = (1500, 800),
) -> Path:
    """pair480p_real (854x480) scaled by ``scale`` and placed at ``at`` on a grey ``canvas``
    (width, height), cut at the canvas's edges: the issue's 4K small-face video is
    ``scale=0.6`` (face ~60x85 px); 0.45 gives ~45x64 px."""
    clip = read_video(shared / "videos" / "pair480p_real.mp4", frames)
    w, h = canvas
    out = []
    for f in clip.frames:
        small = cv2.resize(
            f,
            (round(f.shape[1] * scale / 2) * 2, round(f.shape[0] * scale / 2) * 2),
            interpolation=cv2.INTER_AREA,
        )
        image = np.full((h, w, 3), 128, np.uint8)
        part = small[: h - at[1], : w - at[0]]  # what fits on the canvas
        image[at[1] : at[1] + part.shape[0], at[0] : at[0] + part.shape[1]] = part
        out.append(image)
    return encode(path, out, crf=23)


def side_by_side(path: Path, shared: Path, *, seconds: float = 2.0) -> Path:
    """The issue's real/fake video: the first ``seconds`` of pair480p_real and pair480p_fake,
    each scaled to 640x360, side by side (1280x360)."""
    n = round(24 * seconds)
    left = read_video(shared / "videos" / "pair480p_real.mp4", n).frames
    right = read_video(shared / "videos" / "pair480p_fake.mp4", n).frames
    return encode(
        path,
        (
            np.hstack([cv2.resize(x, (640, 360), interpolation=cv2.INTER_AREA) for x in (a, b)])
            for a, b in zip(left, right)
        ),
    )


def two_people(path: Path, shared: Path, *, seconds: float = 1.0) -> Path:
    """Two different people side by side: pair480p_real (a man) and dfdc_like_real (a woman),
    each scaled to 640x360."""
    n = round(24 * seconds)
    left = read_video(shared / "videos" / "pair480p_real.mp4", n).frames
    right = read_video(shared / "videos" / "dfdc_like_real.mp4", n).frames
    return encode(
        path,
        (
            np.hstack([cv2.resize(x, (640, 360), interpolation=cv2.INTER_AREA) for x in (a, b)])
            for a, b in zip(left, right)
        ),
    )


def bars_intro(
    path: Path, shared: Path, *, bars_seconds: float = 1.0, seconds: float = 1.0
) -> Path:
    """Colour bars (SMPTE-like: seven vertical bars) for ``bars_seconds``, then the first
    ``seconds`` of pair480p_real, at 24 fps and 640x360 (the issue's bars_intro.mp4)."""
    colours = [(192, 192, 192), (0, 192, 192), (192, 192, 0), (0, 192, 0), (192, 0, 192),
               (0, 0, 192), (192, 0, 0)]  # fmt: skip
    bars = np.zeros((360, 640, 3), np.uint8)
    for i, c in enumerate(colours):
        bars[:, i * 640 // 7 : (i + 1) * 640 // 7] = c
    face = read_video(shared / "videos" / "pair480p_real.mp4", round(24 * seconds)).frames
    frames = [bars] * round(24 * bars_seconds) + [
        cv2.resize(f, (640, 360), interpolation=cv2.INTER_AREA) for f in face
    ]
    return encode(path, frames)
