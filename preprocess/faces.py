"""Per-frame face detection records and face-only clips (``dfe detect``, ``dfe preprocess``).

``detect_video`` gives, for the chosen frames, every face with its box, score and five keypoints
in frame pixel coordinates, faces sorted by score (highest first). With ``crop_style="dlib"``
each face also gets ``crop_box``: the integer box that is cropped, SCRFD's face mapped to the box
dlib's mmod detector would draw (:mod:`preprocess.dlib_map`), rounded and clipped to the frame.

``write_face_clip`` redoes the original's training preprocessing for users who train their own
checkpoints: one face per frame, cropped tightly (the crop convention of :mod:`preprocess.crop`),
resized to 112x112, written as an MJPEG clip at 30 fps with an ``.mp4`` name, as the original's
``cv2.VideoWriter('MJPG', 30, (112, 112))`` did. Frames without a face reuse the previous face's
box, as the original's loop did in effect; frames before the first face are skipped (the
original's crop raised and its bare ``except`` skipped them); ``no_face`` changes that.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from engine.errors import InvalidInputError, InvalidVideoError
from preprocess.crop import INPUT_SIZE, crop_box, face_crop
from preprocess.dlib_map import check_crop_style, face_box
from preprocess.video import read_video

if TYPE_CHECKING:
    from preprocess.scrfd import Face, SCRFDDetector

log = logging.getLogger(__name__)

CLIP_NO_FACE = ("previous", "skip", "full_frame")


def face_record(
    face: Face, *, crop_style: str = "scrfd", frame_shape: tuple[int, ...] | None = None
) -> dict[str, Any]:
    rec: dict[str, Any] = {"box": [round(float(v), 2) for v in face.box]}
    if crop_style == "dlib":
        if frame_shape is None:
            raise InvalidInputError("crop_style='dlib' needs the frame shape for crop_box")
        box = crop_box(face_box(face, crop_style), frame_shape)
        rec["crop_box"] = list(box) if box else None
    rec["score"] = round(float(face.score), 5)
    if face.kps is not None:
        rec["kps"] = [[round(float(x), 2), round(float(y), 2)] for x, y in face.kps]
    return rec


def detect_video(
    path: str | os.PathLike[str],
    detector: SCRFDDetector,
    *,
    frames: int = 20,
    sampling: str = "first",
    crop_style: str = "scrfd",
) -> dict[str, Any]:
    """``{"video", "frames": [{"index", "faces": [{"box", "score", "kps"}]}], ...}``; faces
    also carry ``crop_box`` with ``crop_style="dlib"``."""
    check_crop_style(crop_style)
    clip = read_video(path, frames, sampling=sampling)
    detections = detector.detect(clip.frames)
    info = clip.info
    return {
        "video": str(path),
        "width": info.width,
        "height": info.height,
        "fps": info.fps,
        "frame_count": info.frame_count,
        "rotation": info.rotation,
        "sampling": sampling,
        "detector": str(detector.model_path),
        "crop_style": crop_style,
        "frames": [
            {
                "index": idx,
                "faces": [
                    face_record(f, crop_style=crop_style, frame_shape=frame.shape) for f in faces
                ],
            }
            for idx, frame, faces in zip(clip.indices, clip.frames, detections)
        ],
        "warnings": list(clip.warnings),
    }


@dataclass(frozen=True)
class ClipReport:
    video: str
    output: str | None
    frames_read: int
    frames_written: int
    faces: int  # frames with a detected face
    reused_box: int  # frames written with the previous face's box
    skipped: int
    crop_style: str = "scrfd"


def write_face_clip(
    path: str | os.PathLike[str],
    out_path: Path,
    detector: SCRFDDetector,
    *,
    frames: int = 150,
    sampling: str = "first",
    no_face: str = "previous",
    margin: float = 0.0,
    fps: int = 30,
    chunk: int = 32,
    crop_style: str = "scrfd",
) -> ClipReport:
    """Write ``out_path``: the 112x112 face crops of the first ``frames`` frames (or spread
    frames with ``sampling="uniform"``) of ``path``, as an MJPEG clip readable by OpenCV."""
    if no_face not in CLIP_NO_FACE:
        raise InvalidInputError(
            f"no_face={no_face!r} is not supported; supported values are {', '.join(CLIP_NO_FACE)}"
        )
    check_crop_style(crop_style)
    import av

    clip = read_video(path, frames, sampling=sampling)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    crops: list[np.ndarray] = []
    last_box = None
    found = reused = skipped = 0
    for start in range(0, len(clip.frames), chunk):
        batch = clip.frames[start : start + chunk]
        for frame, faces in zip(batch, detector.detect(batch)):
            box = (
                crop_box(face_box(faces[0], crop_style), frame.shape, margin=margin)
                if faces
                else None
            )
            if box is not None:
                found += 1
                last_box = box
            elif no_face == "previous" and last_box is not None:
                box = last_box
                reused += 1
            elif no_face != "full_frame":
                skipped += 1
                continue
            crops.append(face_crop(frame, box))
    if not crops:
        raise InvalidVideoError(
            f"{path}: no face found in the {len(clip.frames)} frames read, so no face clip was "
            "written; use --no-face full_frame to keep whole frames"
        )
    tmp = out_path.with_name(out_path.name + ".part")
    with av.open(str(tmp), "w", format="mp4") as container:
        stream = container.add_stream("mjpeg", rate=fps)
        stream.width = stream.height = INPUT_SIZE
        stream.pix_fmt = "yuvj444p"  # no chroma subsampling: 112x112 crops are small enough
        stream.bit_rate = 20_000_000  # ~near-lossless JPEG at this size
        for crop in crops:
            frame = av.VideoFrame.from_ndarray(crop, format="bgr24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    tmp.replace(out_path)
    return ClipReport(
        str(path), str(out_path), len(clip.frames), len(crops), found, reused, skipped, crop_style
    )
