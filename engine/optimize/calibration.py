"""Real face crops from videos, for INT8 calibration and for measuring what quantization costs.

The crops come out of the runtime's own stages (decode, batched SCRFD, the tight crop of
:mod:`preprocess.crop`, the highest-scoring face per frame, as ``Engine`` does by default), so
the quantizer sees exactly the activations the engine will feed it. Calibration uses frames
*after* the ones ``dfe predict`` reads by default (the first N), so the accuracy check on the
first frames is held out.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from engine.errors import ArtifactNotFoundError, InvalidInputError, InvalidVideoError
from preprocess.crop import crop_box, face_crop, normalize
from preprocess.dlib_map import check_crop_style, face_box
from preprocess.video import iter_frames

if TYPE_CHECKING:
    from preprocess.scrfd import SCRFDDetector

log = logging.getLogger(__name__)

# The documented default: frames 100, 104, ..., 224, 32 per video (frames 0-99 stay held out).
CALIB_START = 100
CALIB_STEP = 4
CALIB_FRAMES_PER_VIDEO = 32
# Held-out evaluation: the first 60 frames (what dfe predict reads for N <= 60).
EVAL_FRAMES = 60


@dataclass(frozen=True)
class FrameSelection:
    """Which frames of each video: ``start``, ``start + step``, ... (at most ``count``)."""

    start: int
    step: int
    count: int

    def __post_init__(self) -> None:
        if self.start < 0 or self.step < 1 or self.count < 1:
            raise InvalidInputError(
                f"frame selection needs start >= 0, step >= 1, count >= 1; got {self}"
            )

    def indices(self) -> list[int]:
        return [self.start + i * self.step for i in range(self.count)]


CALIBRATION_FRAMES = FrameSelection(CALIB_START, CALIB_STEP, CALIB_FRAMES_PER_VIDEO)
EVALUATION_FRAMES = FrameSelection(0, 1, EVAL_FRAMES)


@dataclass
class VideoCrops:
    """Normalised crops of one video (``[n, 3, 112, 112]`` float32) and where they came from."""

    video: str
    crops: np.ndarray
    frame_indices: list[int]
    faces: int  # frames with a detected face (the others, if kept, are whole frames)


def default_calibration_videos() -> list[Path]:
    """The documented default set: the shared test clips (``$DFE_SHARED/videos`` or
    ``../shared/videos``), the same place ``make demo`` takes its clips from."""
    from engine.demo import shared_dir

    videos = shared_dir() / "videos"
    found = sorted(videos.glob("*.mp4")) if videos.is_dir() else []
    if not found:
        raise ArtifactNotFoundError(
            f"no calibration videos given and no default set at {videos}; pass real face videos "
            "with --calib VIDEO [VIDEO ...] (a few clips of the kind you will score), or set "
            "DFE_SHARED"
        )
    return found


def _pick_frames(path: str, wanted: Sequence[int]) -> tuple[list[np.ndarray], list[int]]:
    """Decode sequentially up to the last wanted frame; shorter videos give what they have."""
    want = set(wanted)
    last = max(want)
    frames, indices = [], []
    for idx, frame in iter_frames(path):
        if idx in want:
            frames.append(frame)
            indices.append(idx)
        if idx >= last:
            break
    return frames, indices


def video_crops(
    videos: Iterable[str | os.PathLike[str]],
    detector: SCRFDDetector,
    selection: FrameSelection,
    *,
    crop_style: str = "scrfd",
    margin: float = 0.0,
    keep_faceless: bool = False,
) -> list[VideoCrops]:
    """Face crops of the selected frames of each video (decode, batched detection, crop).

    ``crop_style`` is the model's (``scrfd`` or ``dlib``, see :mod:`preprocess.dlib_map`).
    Frames without a face are dropped unless ``keep_faceless`` (then the whole frame is used,
    as the runtime's default ``no_face="full_frame"``). A video that yields nothing is an error.
    """
    check_crop_style(crop_style)
    out = []
    for video in videos:
        path = str(video)
        frames, indices = _pick_frames(path, selection.indices())
        if not frames:
            raise InvalidVideoError(
                f"{path}: none of frames {selection.indices()[:3]}... exist (the video has "
                f"fewer than {selection.start + 1} frames); pick longer clips"
            )
        faces = detector.detect(frames)
        crops, kept, found = [], [], 0
        for frame, idx, frame_faces in zip(frames, indices, faces):
            face = frame_faces[0] if frame_faces else None  # highest score first
            box = crop_box(face_box(face, crop_style), frame.shape, margin=margin) if face else None
            if box is None and not keep_faceless:
                continue
            found += box is not None
            crops.append(face_crop(frame, box))
            kept.append(idx)
        if not crops:
            raise InvalidVideoError(f"{path}: no face in frames {indices}; not usable here")
        if len(kept) < len(indices):
            log.info("%s: %d of %d frames without a face", path, len(indices) - found, len(indices))
        out.append(VideoCrops(path, normalize(np.stack(crops)), kept, found))
    return out


def describe_set(
    crops: Sequence[VideoCrops], selection: FrameSelection, **extra: Any
) -> dict[str, Any]:
    """The sidecar record of a crop set: videos, frames per video, crop count, selection."""
    return {
        "videos": [Path(c.video).name for c in crops],
        "frames": asdict(selection),
        "frames_per_video": {Path(c.video).name: len(c.frame_indices) for c in crops},
        "crops": int(sum(len(c.crops) for c in crops)),
        "crop": "highest-scoring SCRFD face per frame, tight crop, Pillow bilinear 112x112",
        **extra,
    }
