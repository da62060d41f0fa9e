"""Real face crops from videos, for INT8 calibration and for measuring what quantization costs.

The crops come out of the runtime's own face chain,
:class:`~preprocess.face_extraction.FaceExtractor` (decode, the detector the engine uses with the
input chosen per video, face tracks and who is scored: ``--faces main`` by default, the engine's
:class:`~preprocess.faces.FacePolicy`, and the model's :class:`~preprocess.crop.Preprocessor`),
so the quantizer sees exactly the crops and activations the engine will feed it, and the face
options are recorded with the INT8 graph.
Calibration uses frames *after* the ones ``dfe predict`` reads by default (the first N), so the
accuracy check on the first frames is held out.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from core.errors import ArtifactNotFoundError, InvalidInputError, InvalidVideoError
from core.paths import env, in_checkout, shared_dir
from core.sidecar import FrameRange
from preprocess.crop import Preprocessor
from preprocess.face_extraction import DecodeOptions, FaceExtractor
from preprocess.faces import FacePolicy

if TYPE_CHECKING:
    from preprocess.faces import Detector

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
class NormalisedCrops:
    """Normalised crops of one video (``[n, 3, 112, 112]`` float32) and where they came from:
    ``frame_indices`` (the video frame of each crop), ``faces`` (crops cut at a face detected
    in that frame; the others, if kept, are whole frames), ``people`` (people in enough of the
    frames to be scored on their own) and ``detector_input`` (the input chosen for the video,
    its record; None when not chosen)."""

    video: str
    crops: np.ndarray
    frame_indices: list[int]
    faces: int
    people: int = 0
    detector_input: dict[str, Any] | None = None


def default_calibration_videos() -> list[Path]:
    """The default set in a source checkout (or with ``$DFE_SHARED``): the shared test clips,
    the same place ``make demo`` takes its clips from. Anywhere else there is no default: the
    error says to pass real face videos of the kind that will be scored."""
    hint = (
        "pass real face videos with --calib VIDEO [VIDEO ...] (a few clips of the kind you "
        "will score; frames 100+ of each are used)"
    )
    if not env("DFE_SHARED") and not in_checkout():
        raise ArtifactNotFoundError(f"no calibration videos given: {hint}")
    videos = shared_dir() / "videos"
    found = sorted(videos.glob("*.mp4")) if videos.is_dir() else []
    if not found:
        raise ArtifactNotFoundError(
            f"no calibration videos given and no default set at {videos}: {hint}, or set "
            "DFE_SHARED to a folder with videos/"
        )
    return found


def video_crops(
    videos: Iterable[str | os.PathLike[str]],
    detector: Detector,
    selection: FrameSelection,
    *,
    policy: FacePolicy | None = None,
    preprocessor: Preprocessor | None = None,
    keep_faceless: bool = False,
    faces: str = "main",
    size_probe: bool = True,
    detect_every: int = 1,
    decode: DecodeOptions | None = None,
) -> list[NormalisedCrops]:
    """Normalised face crops of the selected frames of each video.

    The runtime's face chain (:class:`~preprocess.face_extraction.FaceExtractor` with
    ``detector``, the engine's face ``policy``, ``faces`` (who is scored: ``main``, the
    runtime's default, ``all`` or ``per-frame``), ``size_probe`` (the detector input chosen per
    video), ``detect_every`` and ``decode``) on the frames of ``selection``, then the model's
    ``preprocessor``, as :class:`engine.pipeline.VideoPipeline` runs them on the frames it
    reads. Frames without the scored person's face are dropped unless ``keep_faceless`` (then
    the policy's no-face rule applies, the whole frame by default). With ``faces="all"`` the
    crops of every person scored follow one another.

    Raises :class:`InvalidVideoError` for a video without any of the selected frames or
    without a crop.
    """
    policy = policy or FacePolicy()
    if not keep_faceless:
        policy = FacePolicy(policy.face, policy.crop_style, policy.margin, no_face="drop")
    extractor = FaceExtractor(
        detector,
        policy,
        preprocessor or Preprocessor(),
        faces=faces,
        size_probe=size_probe,
        detect_every=detect_every,
        decode=decode,
    )
    out = []
    for video in videos:
        path = str(video)
        frames, indices = extractor.read_indices(path, selection.indices())
        if not frames:
            raise InvalidVideoError(
                f"{path}: none of frames {selection.indices()[:3]}... exist (the video has "
                f"fewer than {selection.start + 1} frames); pick longer clips"
            )
        got = extractor.extract(frames, indices)
        if not got.sequences:
            raise InvalidVideoError(f"{path}: no face in frames {indices}; not usable here")
        crops = [c for q in got.sequences for c in q.crops]
        kept = [i for q in got.sequences for i in q.frame_indices]
        found = sum(q.found for q in got.sequences)
        if found < len(indices):
            missing = len(indices) - found
            log.info("%s: %d of %d frames without the scored face", path, missing, len(indices))
        choice = got.detector_input.to_record() if got.detector_input is not None else None
        normalised = extractor.preprocessor(np.stack(crops))
        out.append(NormalisedCrops(path, normalised, kept, found, got.people, choice))
    return out


def describe_set(crops: Sequence[NormalisedCrops], selection: FrameSelection) -> dict[str, Any]:
    """The fields of a crop set's sidecar record (:class:`core.sidecar.CropSet` and
    the records built on it): the videos (file names), the frame selection, the frames used per
    video and the crop count."""
    return {
        "videos": tuple(Path(c.video).name for c in crops),
        "frames": FrameRange(**asdict(selection)),
        "frames_per_video": {Path(c.video).name: len(c.frame_indices) for c in crops},
        "crops": int(sum(len(c.crops) for c in crops)),
    }
