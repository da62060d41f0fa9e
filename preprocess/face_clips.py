"""What ``dfe detect`` and ``dfe preprocess`` write, from the one face chain.

:func:`detect_video` gives per-frame face records (``dfe detect``); :func:`write_face_clip`
redoes the original's training preprocessing for users who train their own checkpoints: one face
per frame, cropped tightly, resized to 112x112, written as an MJPEG clip at 30 fps with an
``.mp4`` name, as the original's ``cv2.VideoWriter('MJPG', 30, (112, 112))`` did.

Both decode and detect with :class:`preprocess.face_extraction.FaceExtractor`, and a clip's
crops are the extractor's (:func:`face_clip_crops`): by default the main person followed as a
face track, as ``dfe predict`` scores (``--faces main``) and ``dfe train`` crops a video, so a
clip holds exactly the crops the runtime would score with the same face options;
``faces="per-frame"`` takes the face rule's face in each frame, as the original did.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from core.errors import InvalidInputError, InvalidVideoError
from preprocess.crop import INPUT_SIZE, Preprocessor
from preprocess.face_extraction import ExtractedFaces, FaceExtractor
from preprocess.faces import FacePolicy, face_record

if TYPE_CHECKING:
    from preprocess.faces import Detector
    from preprocess.scrfd import Face

#: Who a face clip follows (``dfe preprocess --faces``): one clip per video, so one person.
CLIP_FACES = ("main", "per-frame")


def detect_video(
    path: str | os.PathLike[str],
    detector: Detector,
    *,
    frames: int = 20,
    sampling: str = "first",
    policy: FacePolicy | None = None,
    detector_name: str | None = None,
    size_probe: bool = True,
) -> dict[str, Any]:
    """``{"video", "frames": [{"index", "faces": [{"box", "score", "kps"}]}], ...}``: every face
    of the chosen frames, highest score first; each face also carries ``crop_box``, the integer
    box the policy's crop style and margin (both recorded) would crop, computed from the
    detector's unrounded box (:func:`preprocess.faces.face_record`).
    ``detector_input`` is the input chosen for the
    video (:meth:`FaceExtractor.detect`; None when not chosen: ``size_probe`` off or a
    detector that runs one input only). Boxes are in each frame's own pixels (float, 0.01 px);
    ``width``/``height`` are the first frame's, and for a video that changes size each frame
    also has its ``width`` and ``height`` and ``size_changes`` lists ``[index, width, height]``
    where each size starts. Raises the decoder's errors for a video it cannot read."""
    policy = policy or FacePolicy()
    extractor = FaceExtractor(detector, policy, size_probe=size_probe)
    clip = extractor.read(path, frames, sampling)
    detections, choice = extractor.detect(clip.frames, clip.indices)
    info = clip.info
    sized = clip.changes_size

    def frame_record(idx: int, frame: np.ndarray, faces: Sequence[Face]) -> dict[str, Any]:
        rec: dict[str, Any] = {"index": idx}
        if sized:
            rec["width"], rec["height"] = int(frame.shape[1]), int(frame.shape[0])
        rec["faces"] = [face_record(f, policy=policy, frame_shape=frame.shape) for f in faces]
        return rec

    out = {
        "video": str(path),
        "width": info.width,
        "height": info.height,
        "fps": info.fps,
        "frame_count": info.frame_count,
        "rotation": info.rotation,
        "sampling": sampling,
        "detector": detector_name or str(getattr(detector, "model_path", type(detector).__name__)),
        "crop_style": policy.crop_style,
        "margin": policy.margin,
        "detector_input": choice.to_record() if choice is not None else None,
        "frames": [
            frame_record(idx, frame, faces)
            for idx, frame, faces in zip(clip.indices, clip.frames, detections)
        ],
        "warnings": list(clip.warnings),
    }
    if sized:
        out["size_changes"] = [[i, w, h] for i, (w, h) in clip.size_changes]
    return out


@dataclass(frozen=True)
class ClipReport:
    """What :func:`write_face_clip` wrote: frames read and written, ``faces`` (frames cropped
    at a face detected there), ``reused_box`` (at the previous face's box), ``skipped``
    (frames left out), the crop style, and ``people`` (people in enough frames to be scored)."""

    video: str
    output: str | None
    frames_read: int
    frames_written: int
    faces: int  # frames with a detected face
    reused_box: int  # frames written with the previous face's box
    skipped: int
    crop_style: str = "scrfd"
    people: int = 0


def face_clip_crops(
    path: str | os.PathLike[str],
    detector: Detector,
    *,
    frames: int = 150,
    sampling: str = "first",
    policy: FacePolicy | None = None,
    faces: str = "main",
    size_probe: bool = True,
) -> ExtractedFaces:
    """The face chain of ``dfe preprocess`` on the first ``frames`` frames (or spread frames
    with ``sampling="uniform"``) of ``path``: :meth:`FaceExtractor.extract` with ``policy``
    (default: the original's training preprocessing, highest-scoring face, SCRFD box, no
    margin, the previous face's box for a frame without one) and ``faces`` (``main`` or
    ``per-frame``, :data:`CLIP_FACES`). Its one sequence (none when no frame was kept) holds
    the 112x112x3 uint8 BGR crops a clip is made of. Raises :class:`InvalidInputError` for
    ``faces="all"`` (one clip is one person) and the decoder's errors."""
    if faces not in CLIP_FACES:
        raise InvalidInputError(
            f"faces={faces!r} is not supported for a face clip (one person per clip); "
            f"supported values are {', '.join(CLIP_FACES)}"
        )
    policy = policy or FacePolicy(no_face="previous")
    extractor = FaceExtractor(detector, policy, Preprocessor(), faces=faces, size_probe=size_probe)
    clip = extractor.read(path, frames, sampling)
    return extractor.extract(clip.frames, clip.indices)


def write_face_clip(
    path: str | os.PathLike[str],
    out_path: Path,
    detector: Detector,
    *,
    frames: int = 150,
    sampling: str = "first",
    policy: FacePolicy | None = None,
    faces: str = "main",
    fps: int = 30,
    size_probe: bool = True,
) -> ClipReport:
    """Write ``out_path``: the 112x112 face crops of :func:`face_clip_crops` (same options),
    as an MJPEG clip readable by OpenCV, written to ``<out_path>.part`` and renamed when done.
    Raises :class:`InvalidVideoError` when no frame is kept."""
    import av

    policy = policy or FacePolicy(no_face="previous")
    got = face_clip_crops(
        path,
        detector,
        frames=frames,
        sampling=sampling,
        policy=policy,
        faces=faces,
        size_probe=size_probe,
    )
    if not got.sequences:
        raise InvalidVideoError(
            f"{path}: no face found in the {len(got.frame_indices)} frames read, so no face clip "
            "was written; use --no-face full_frame to keep whole frames"
        )
    (seq,) = got.sequences
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(out_path.name + ".part")
    with av.open(str(tmp), "w", format="mp4") as container:
        stream = container.add_stream("mjpeg", rate=fps)
        stream.width = stream.height = INPUT_SIZE
        stream.pix_fmt = "yuvj444p"  # no chroma subsampling: 112x112 crops are small enough
        stream.bit_rate = 20_000_000  # ~near-lossless JPEG at this size
        for crop in seq.crops:
            frame = av.VideoFrame.from_ndarray(crop, format="bgr24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    tmp.replace(out_path)
    return ClipReport(
        str(path),
        str(out_path),
        len(got.frame_indices),
        len(seq.crops),
        seq.found,
        seq.reused,
        seq.dropped,
        policy.crop_style,
        got.people,
    )
