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

The policy is one step of the face chain (:class:`preprocess.face_extraction.FaceExtractor`:
decode, detect, track, select, crop), which all of the above run; ``dfe detect``'s records and
``dfe preprocess``'s clips are made in :mod:`preprocess.face_clips`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from core.config import CLIP_NO_FACE_RULES, CROP_STYLES, FACE_RULES, MAX_MARGIN
from core.errors import InvalidInputError
from preprocess.crop import Box, crop_box
from preprocess.dlib_map import face_box

if TYPE_CHECKING:
    from preprocess.scrfd import Face

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
        if not (math.isfinite(self.margin) and 0 <= self.margin <= MAX_MARGIN):
            raise InvalidInputError(
                f"margin must be a number from 0 to {MAX_MARGIN:g}, got {self.margin}"
            )

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


def face_record(
    face: Face, *, policy: FacePolicy | None = None, frame_shape: Sequence[int] | None = None
) -> dict[str, Any]:
    """One face as ``dfe detect`` writes it: box (float pixels, 0.01 px), and with a policy
    the integer ``crop_box`` that would be cropped (its crop style and margin, rounded then
    clipped to the frame as :func:`preprocess.crop.crop_box` does; None when nothing of the
    box is inside the frame), score, keypoints. Raises InvalidInputError when a policy is
    given without ``frame_shape``."""
    rec: dict[str, Any] = {"box": [round(float(v), 2) for v in face.box]}
    if policy is not None:
        if frame_shape is None:
            raise InvalidInputError("crop_box needs the frame shape")
        box = policy.box(face, frame_shape)
        rec["crop_box"] = list(box) if box else None
    rec["score"] = round(float(face.score), 5)
    if face.kps is not None:
        rec["kps"] = [[round(float(x), 2), round(float(y), 2)] for x, y in face.kps]
    return rec


def clip_policy(no_face: str, *, crop_style: str = "scrfd", margin: float = 0.0) -> FacePolicy:
    """The :class:`FacePolicy` of ``dfe preprocess``'s ``--no-face`` (``skip`` is ``drop``)."""
    if no_face not in CLIP_NO_FACE_RULES:
        raise InvalidInputError(
            f"no_face={no_face!r} is not supported; supported values are "
            f"{', '.join(CLIP_NO_FACE_RULES)}"
        )
    rule = "drop" if no_face == "skip" else no_face
    return FacePolicy(crop_style=crop_style, margin=margin, no_face=rule)
