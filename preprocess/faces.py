"""Which face of each frame is cropped, and how: the one face -> box -> crop policy.

:class:`FacePolicy` is used by everything that turns detections into crops: the runtime
(``Engine``), ``dfe detect`` / ``dfe preprocess``, INT8 calibration and its accuracy check, and
the benchmarks, so they all crop the same way. Its parts:

- the face rule: the highest-scoring face of a frame (``score``; the original took the first
  face its detector returned) or the largest box (``largest``);
- the crop style: SCRFD's own box (``scrfd``) or SCRFD mapped to the box dlib's mmod detector
  would draw (``dlib``, :mod:`preprocess.dlib_map`), then a ``margin`` (a fraction of the box on
  each side) and the crop convention of :func:`preprocess.crop.crop_box` (round, then clip);
- the no-face rule: classify the whole frame (``full_frame``, the original's scoring), drop the
  frame (``drop``), or reuse the previous face's box (``previous``, what the original's training
  preprocessing did in effect; frames before the first face are dropped).

``detect_video`` gives per-frame face records (``dfe detect``); ``write_face_clip`` redoes the
original's training preprocessing for users who train their own checkpoints: one face per frame,
cropped tightly, resized to 112x112, written as an MJPEG clip at 30 fps with an ``.mp4`` name, as
the original's ``cv2.VideoWriter('MJPG', 30, (112, 112))`` did.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from engine.core.config import CLIP_NO_FACE_RULES, CROP_STYLES, FACE_RULES
from engine.core.errors import InvalidInputError, InvalidVideoError
from preprocess.crop import INPUT_SIZE, Box, Preprocessor, crop_box
from preprocess.dlib_map import face_box
from preprocess.video import read_video

if TYPE_CHECKING:
    from preprocess.scrfd import Face

log = logging.getLogger(__name__)

#: No-face rules of :class:`FacePolicy` (scoring offers ``full_frame`` and ``drop``;
#: ``dfe preprocess`` also ``previous``, and calls ``drop`` ``skip``).
POLICY_NO_FACE = ("full_frame", "drop", "previous")


class Detector(Protocol):
    """Anything that finds faces the way :class:`preprocess.scrfd.SCRFDDetector` does."""

    def detect(self, frames: Sequence[np.ndarray]) -> list[list[Face]]: ...


@dataclass(frozen=True)
class FaceSelection:
    """What :meth:`FacePolicy.select` kept of a sequence of frames.

    ``positions`` index the frames given (not video frame numbers); ``boxes`` are the integer
    crop boxes (x1, y1, x2, y2) in frame pixels, None for a whole frame; ``faces`` the face each
    box came from (None for a whole frame or a reused box).
    """

    positions: list[int] = field(default_factory=list)
    boxes: list[Box | None] = field(default_factory=list)
    faces: list[Face | None] = field(default_factory=list)
    found: int = 0  # kept frames cropped at a face detected in that frame
    reused: int = 0  # kept frames cropped at the previous face's box (no_face="previous")
    dropped: int = 0  # frames not kept (no face and no_face "drop", or before the first face)


@dataclass(frozen=True)
class FacePolicy:
    """The face rule, crop style, margin and no-face rule (see the module docstring)."""

    face: str = "score"
    crop_style: str = "scrfd"
    margin: float = 0.0
    no_face: str = "full_frame"

    def __post_init__(self) -> None:
        for name, value, allowed in (
            ("face", self.face, FACE_RULES),
            ("crop_style", self.crop_style, CROP_STYLES),
            ("no_face", self.no_face, POLICY_NO_FACE),
        ):
            if value not in allowed:
                raise InvalidInputError(
                    f"{name}={value!r} is not supported; supported values are {', '.join(allowed)}"
                )
        if isinstance(self.margin, bool) or not isinstance(self.margin, (int, float)):
            raise InvalidInputError(f"margin must be a number >= 0, got {self.margin!r}")
        if self.margin < 0:
            raise InvalidInputError(f"margin must be >= 0, got {self.margin}")

    def choose(self, faces: Sequence[Face]) -> Face | None:
        """The face of one frame to crop (faces sorted by score, highest first), or None."""
        if not faces:
            return None
        if self.face == "largest":
            return max(faces, key=lambda f: (f.box[2] - f.box[0]) * (f.box[3] - f.box[1]))
        return faces[0]

    def box(self, face: Face, frame_shape: Sequence[int]) -> Box | None:
        """The integer crop box of ``face`` in a frame of ``frame_shape`` (height, width, ...):
        the crop style's float box, the margin, then rounding and clipping; None if empty."""
        return crop_box(face_box(face, self.crop_style), frame_shape, margin=self.margin)

    def select(
        self,
        frame_shapes: Sequence[Sequence[int]],
        faces: Sequence[Sequence[Face]] | None = None,
        *,
        chosen: Sequence[Face | None] | None = None,
    ) -> FaceSelection:
        """Apply the policy to a sequence of frames.

        ``faces``: every face of each frame (the face rule picks one), or ``chosen``: the face
        already picked for each frame (e.g. by a face track), None where the frame has none.
        """
        if chosen is None:
            if faces is None:
                raise InvalidInputError("select() needs the faces of each frame, or chosen")
            chosen = [self.choose(f) for f in faces]
        if len(chosen) != len(frame_shapes):
            raise InvalidInputError(f"{len(chosen)} face choices for {len(frame_shapes)} frames")
        positions: list[int] = []
        boxes: list[Box | None] = []
        kept_faces: list[Face | None] = []
        found = reused = dropped = 0
        last: Box | None = None
        for pos, (shape, face) in enumerate(zip(frame_shapes, chosen)):
            box = self.box(face, shape) if face is not None else None
            if box is not None:
                found += 1
                last = box
            elif self.no_face == "previous" and last is not None:
                box, face = last, None
                reused += 1
            elif self.no_face != "full_frame":
                dropped += 1
                continue
            else:
                face = None
            positions.append(pos)
            boxes.append(box)
            kept_faces.append(face)
        return FaceSelection(positions, boxes, kept_faces, found, reused, dropped)

    def describe(self) -> dict[str, Any]:
        """The policy as a record (sidecars, benchmark JSON)."""
        return {
            "face": self.face,
            "crop_style": self.crop_style,
            "margin": self.margin,
            "no_face": self.no_face,
        }


def crop_selection(
    frames: Sequence[np.ndarray], selection: FaceSelection, preprocessor: Preprocessor
) -> list[np.ndarray]:
    """The uint8 crops (size x size x 3, BGR) of the frames a :class:`FaceSelection` kept."""
    return [preprocessor.crop(frames[p], b) for p, b in zip(selection.positions, selection.boxes)]


def face_record(
    face: Face, *, policy: FacePolicy | None = None, frame_shape: Sequence[int] | None = None
) -> dict[str, Any]:
    """One face as ``dfe detect`` writes it: box, score, keypoints, and with a ``dlib`` crop
    style (or a margin) the integer ``crop_box`` that would be cropped."""
    rec: dict[str, Any] = {"box": [round(float(v), 2) for v in face.box]}
    if policy is not None and (policy.crop_style != "scrfd" or policy.margin):
        if frame_shape is None:
            raise InvalidInputError("crop_box needs the frame shape")
        box = policy.box(face, frame_shape)
        rec["crop_box"] = list(box) if box else None
    rec["score"] = round(float(face.score), 5)
    if face.kps is not None:
        rec["kps"] = [[round(float(x), 2), round(float(y), 2)] for x, y in face.kps]
    return rec


def detect_frames(
    detector: Detector,
    frames: Sequence[np.ndarray],
    frame_indices: Sequence[int] | None = None,
    *,
    size_probe: bool = True,
    chunk: int = 32,
) -> tuple[list[list[Face]], dict[str, Any] | None]:
    """Faces per frame (HxWx3 uint8 BGR frames of one video) and, with ``size_probe``, the
    detector input chosen for the video as ``dfe predict`` chooses it
    (:func:`preprocess.detector_input.detect_any_size`: faces that fill the frame or are tiny
    in 4K are found at another input size), as its record; None when the detector runs one
    input only (``fixed_input``, or no ``detect_prepared``) or ``size_probe`` is off. Without
    the choice, frames are detected ``chunk`` at a time."""
    frames = list(frames)
    if (
        size_probe
        and frames
        and hasattr(detector, "detect_prepared")
        and not getattr(detector, "fixed_input", False)
    ):
        from preprocess.detector_input import detect_any_size

        faces, choice = detect_any_size(detector, frames, frame_indices=frame_indices)
        return faces, choice.to_record()
    out: list[list[Face]] = []
    for start in range(0, len(frames), chunk):
        out.extend(detector.detect(frames[start : start + chunk]))
    return out, None


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
    of the chosen frames, highest score first; faces also carry ``crop_box`` when the policy's
    crop style is ``dlib`` or it has a margin. ``detector_input`` is the input chosen for the
    video (:func:`detect_frames`; None when not chosen). Boxes are in each frame's own pixels;
    ``width``/``height`` are the first frame's, and for a video that changes size each frame
    also has its ``width`` and ``height`` and ``size_changes`` lists ``[index, width, height]``
    where each size starts."""
    policy = policy or FacePolicy()
    clip = read_video(path, frames, sampling=sampling)
    detections, chosen = detect_frames(detector, clip.frames, clip.indices, size_probe=size_probe)
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
        "detector_input": chosen,
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
    """What :func:`write_face_clip` wrote."""

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
    detector: Detector,
    *,
    frames: int = 150,
    sampling: str = "first",
    policy: FacePolicy | None = None,
    fps: int = 30,
    chunk: int = 32,
    size_probe: bool = True,
) -> ClipReport:
    """Write ``out_path``: the 112x112 face crops of the first ``frames`` frames (or spread
    frames with ``sampling="uniform"``) of ``path``, as an MJPEG clip readable by OpenCV.

    ``policy`` defaults to the original's training preprocessing: highest-scoring face, SCRFD
    box, no margin, the previous face's box for a frame without one. Faces are found as
    :func:`detect_frames` finds them (``size_probe``: the input chosen per video). Raises
    :class:`InvalidVideoError` when no frame is kept.
    """
    import av

    policy = policy or FacePolicy(no_face="previous")
    preprocessor = Preprocessor()
    clip = read_video(path, frames, sampling=sampling)
    faces, _ = detect_frames(
        detector, clip.frames, clip.indices, size_probe=size_probe, chunk=chunk
    )
    selection = policy.select([f.shape for f in clip.frames], faces)
    crops = crop_selection(clip.frames, selection, preprocessor)
    if not crops:
        raise InvalidVideoError(
            f"{path}: no face found in the {len(clip.frames)} frames read, so no face clip was "
            "written; use --no-face full_frame to keep whole frames"
        )
    out_path.parent.mkdir(parents=True, exist_ok=True)
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
        str(path),
        str(out_path),
        len(clip.frames),
        len(crops),
        selection.found,
        selection.reused,
        selection.dropped,
        policy.crop_style,
    )


def clip_policy(no_face: str, *, crop_style: str = "scrfd", margin: float = 0.0) -> FacePolicy:
    """The :class:`FacePolicy` of ``dfe preprocess``'s ``--no-face`` (``skip`` is ``drop``)."""
    if no_face not in CLIP_NO_FACE_RULES:
        raise InvalidInputError(
            f"no_face={no_face!r} is not supported; supported values are "
            f"{', '.join(CLIP_NO_FACE_RULES)}"
        )
    rule = "drop" if no_face == "skip" else no_face
    return FacePolicy(crop_style=crop_style, margin=margin, no_face=rule)
