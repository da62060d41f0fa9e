"""Face extraction: a video's frames -> the face crops the classifier scores, written once.

``decode -> detect -> detector input -> track -> select -> crop``, each step implemented once
elsewhere and composed here by :class:`FaceExtractor`:

===============  ==========================================================================
step             implementation
===============  ==========================================================================
decode           :func:`preprocess.video.read_video` (the first N or N spread frames) or
                 :func:`preprocess.video.iter_frames` (chosen frame indices), with the
                 extractor's :class:`DecodeOptions`
detect           the detector's ``detect(frames)`` at its default input (on every K-th
                 sampled frame with ``detect_every`` K > 1)
detector input   :func:`preprocess.detector_input.detect_at_chosen_input` (the input chosen
                 per video; ``size_probe``), then with ``detect_every`` K > 1 the faces of the
                 frames in between from the tracks of the detected ones
                 (:func:`preprocess.tracking.fill_between_detections`)
track            :func:`preprocess.tracking.track_faces` (one face track per person) and
                 :func:`preprocess.tracking.tracks_to_score` (``people``)
select           who is scored (``faces``: ``main``, the main track
                 :func:`preprocess.tracking.main_track`; ``all``, every track present in
                 enough frames, each on its own frames; ``per-frame``, the face rule in each
                 frame), then :meth:`preprocess.faces.FacePolicy.select` (crop style, margin,
                 no-face rule)
crop             :meth:`preprocess.crop.Preprocessor.crop` (size x size, Pillow bilinear)
===============  ==========================================================================

Everything that turns a video into face crops goes through it, so they all get the same crops
for the same video and settings: the runtime (:class:`engine.pipeline.VideoPipeline`, which
calls the steps one by one because it batches detection across videos and overlaps stages in
threads), ``dfe train``'s crops (:class:`export.datasets.FaceCropper`), INT8 calibration and its
accuracy check (:func:`engine.optimize.calibration.video_crops`), ``dfe preprocess`` and ``dfe
detect`` (:mod:`preprocess.face_clips`) and the benchmarks (through those).
``tests/engine/test_face_extraction_users.py`` pins that their crops are equal.

:meth:`FaceExtractor.extract` is the composition for one video; the step methods
(:meth:`~FaceExtractor.detected_positions`, :meth:`~FaceExtractor.detect_default`,
:meth:`~FaceExtractor.complete_detection`, :meth:`~FaceExtractor.track`,
:meth:`~FaceExtractor.select`, :meth:`~FaceExtractor.crop`) are what it composes, in that order.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from engine.core.config import FACES_MODES
from engine.core.errors import InvalidInputError
from preprocess.crop import Box, Preprocessor
from preprocess.faces import FacePolicy

if TYPE_CHECKING:
    from engine.core.config import EngineConfig
    from preprocess.detector_input import DetectorInput
    from preprocess.faces import Detector
    from preprocess.scrfd import Face
    from preprocess.tracking import Track
    from preprocess.video import VideoClip

__all__ = [
    "DecodeOptions",
    "ExtractedFaces",
    "FaceExtractor",
    "FaceSequence",
    "chooses_input",
]


@dataclass(frozen=True)
class DecodeOptions:
    """How frames are decoded (:func:`preprocess.video.read_video`'s options): ``backend``
    (``auto``, ``pyav``, ``opencv``), ``threads`` (FFmpeg threads per video, 0: FFmpeg's
    choice), ``colour`` (``bt709`` or ``keep``) and ``deinterlace`` (``auto`` or ``off``)."""

    backend: str = "auto"
    threads: int = 0
    colour: str = "bt709"
    deinterlace: str = "auto"

    @classmethod
    def from_config(cls, config: EngineConfig) -> DecodeOptions:
        """The decode options of an :class:`~engine.core.config.EngineConfig`
        (``decode_backend``, ``decode_threads``, ``colour``, ``deinterlace``)."""
        return cls(config.decode_backend, config.decode_threads, config.colour, config.deinterlace)


@dataclass
class FaceSequence:
    """One sequence of face crops: a person's frames (``track``: the face track's id; None for
    the per-frame rule, a video without any face, or the caller's own crops).

    ``positions`` index the frames given to the extractor (not video frame numbers);
    ``frame_indices`` are the matching 0-based video frame indices; ``boxes`` the integer crop
    boxes (x1, y1, x2, y2) in each frame's pixels, None for a whole frame; ``found`` the frames
    cropped at this person's face detected there; ``reused`` the frames cropped at the previous
    face's box (no-face rule ``previous``); ``dropped`` the frames left out (no face and the
    no-face rule ``drop``, or before the first face with ``previous``). ``crops`` are filled by
    :meth:`FaceExtractor.crop`: one size x size x 3 uint8 BGR array per position; ``faces``
    the detected face cropped at each position (None: a whole frame or a reused box), with its
    keypoints.
    """

    track: int | None
    positions: list[int]
    frame_indices: list[int]
    boxes: list[Box | None]
    found: int
    crops: list[np.ndarray] = field(default_factory=list)
    reused: int = 0
    dropped: int = 0
    faces: list[Face | None] = field(default_factory=list)

    @property
    def coverage(self) -> float:
        """Fraction of the frames used that had this person's face (0 when none did)."""
        return self.found / len(self.positions) if self.positions else 0.0


@dataclass
class ExtractedFaces:
    """What :meth:`FaceExtractor.extract` found in one video's frames.

    ``frame_indices``: the video frame index of each frame given; ``faces``: every face of each
    frame (frame pixels, highest score first), after the detector input and, in fast mode, the
    faces followed between detections; ``detector_input``: the input chosen for the video (None
    when it was not chosen: ``size_probe`` off or a detector that runs one input only);
    ``tracks``: the face tracks (ids in order of first appearance); ``people``: tracks present
    in enough frames to be scored on their own (:func:`preprocess.tracking.tracks_to_score`);
    ``sequences``: what is scored, in the runtime's order (one for ``main`` and
    ``per-frame``), each with its crops; none when the no-face rule left no frame.
    """

    frame_indices: list[int]
    faces: list[list[Face]]
    detector_input: DetectorInput | None
    tracks: list[Track]
    people: int
    sequences: list[FaceSequence]

    def record(self) -> dict[str, Any]:
        """JSON-ready: ``detector_input`` (its record, or None), ``people``, ``tracks`` (all
        tracks, scored or not), ``found`` and ``reused`` (summed over the sequences)."""
        return {
            "detector_input": self.detector_input.to_record() if self.detector_input else None,
            "people": self.people,
            "tracks": len(self.tracks),
            "found": sum(q.found for q in self.sequences),
            "reused": sum(q.reused for q in self.sequences),
        }


def chooses_input(detector: Any) -> bool:
    """Whether ``detector`` can run another input than its own (the per-video input choice):
    it has ``detect_prepared`` and is not ``fixed_input`` (a TensorRT engine built for one
    input shape)."""
    return hasattr(detector, "detect_prepared") and not getattr(detector, "fixed_input", False)


class FaceExtractor:
    """Decoded frames of one video -> faces, tracks, who is scored and their crops (module
    docstring).

    ``detector``: an object with ``detect(frames)`` (:class:`preprocess.scrfd.SCRFDDetector`,
    or any :class:`preprocess.faces.Detector`; with ``detect_prepared`` the input is chosen per
    video), or a function of no arguments returning one, called each time the detector is used
    (a detector that loads lazily; the function keeps it once loaded). ``policy``: face rule,
    crop style, margin and no-face rule (default :class:`FacePolicy`'s). ``preprocessor``: the
    model's crop size (default 112).
    ``faces``: who is scored (``main``, ``all``, ``per-frame``; see the module docstring);
    ``size_probe``: whether the detector input is chosen per video; ``detect_every``: K >= 1,
    the detector runs on every K-th sampled frame (and the last) only (fast mode);
    ``decode``: how :meth:`read` and :meth:`read_indices` decode.

    Raises :class:`InvalidInputError` for an unknown ``faces`` or a ``detect_every`` below 1.
    Thread-safe as long as the detector is.
    """

    def __init__(
        self,
        detector: Detector | Callable[[], Detector],
        policy: FacePolicy | None = None,
        preprocessor: Preprocessor | None = None,
        *,
        faces: str = "main",
        size_probe: bool = True,
        detect_every: int = 1,
        decode: DecodeOptions | None = None,
    ) -> None:
        if faces not in FACES_MODES:
            raise InvalidInputError(
                f"faces={faces!r} is not supported; supported values are {', '.join(FACES_MODES)}"
            )
        if isinstance(detect_every, bool) or not isinstance(detect_every, int) or detect_every < 1:
            raise InvalidInputError(f"detect_every must be an integer >= 1, got {detect_every!r}")
        if hasattr(detector, "detect"):
            self._detector: Detector | None = detector  # type: ignore[assignment]
            self._factory: Callable[[], Detector] | None = None
        else:
            self._detector, self._factory = None, detector  # type: ignore[assignment]
        self.policy = policy or FacePolicy()
        self.preprocessor = preprocessor or Preprocessor()
        self.faces = faces
        self.size_probe = bool(size_probe)
        self.detect_every = detect_every
        self.decode = decode or DecodeOptions()

    @classmethod
    def from_config(
        cls,
        detector: Detector | Callable[[], Detector],
        config: EngineConfig,
        *,
        policy: FacePolicy,
        preprocessor: Preprocessor | None = None,
    ) -> FaceExtractor:
        """The extractor of an :class:`~engine.core.config.EngineConfig`: its ``faces``,
        ``size_probe``, ``detect_every`` and decode options (:meth:`DecodeOptions.from_config`),
        with ``policy`` (the runtime's: ``engine.pipeline.policy_for``)."""
        return cls(
            detector,
            policy,
            preprocessor,
            faces=config.faces,
            size_probe=config.size_probe,
            detect_every=config.detect_every,
            decode=DecodeOptions.from_config(config),
        )

    @property
    def detector(self) -> Detector:
        """The detector (the function's when it was given as one)."""
        if self._detector is None:
            assert self._factory is not None
            return self._factory()
        return self._detector

    def describe(self) -> dict[str, Any]:
        """The settings that decide the crops, as a record (sidecars, benchmark JSON)."""
        return {
            "faces": self.faces,
            "policy": self.policy.describe(),
            "size_probe": self.size_probe,
            "detect_every": self.detect_every,
            "crop_size": self.preprocessor.size,
        }

    # ------------------------------------------------------------------ decode

    def read(self, path: str | os.PathLike[str], n: int, sampling: str = "first") -> VideoClip:
        """``n`` frames of the video at ``path`` chosen by ``sampling`` (``first`` or
        ``uniform``), decoded with :attr:`decode` (:func:`preprocess.video.read_video`: HxWx3
        uint8 BGR frames, its errors)."""
        from preprocess.video import read_video

        d = self.decode
        return read_video(
            path,
            n,
            sampling=sampling,
            backend=d.backend,
            threads=d.threads,
            colour=d.colour,
            deinterlace=d.deinterlace,
        )

    def read_indices(
        self, path: str | os.PathLike[str], wanted: Sequence[int]
    ) -> tuple[list[np.ndarray], list[int]]:
        """The frames of ``path`` at the 0-based video frame indices ``wanted`` (HxWx3 uint8
        BGR, in presentation order) and their indices, decoded sequentially up to the last one
        with :attr:`decode` (:func:`preprocess.video.iter_frames`); a video shorter than that
        gives the wanted frames it has (possibly none)."""
        from preprocess.video import iter_frames

        want = set(int(i) for i in wanted)
        if not want:
            return [], []
        last = max(want)
        d = self.decode
        frames: list[np.ndarray] = []
        indices: list[int] = []
        for idx, frame in iter_frames(
            path, backend=d.backend, threads=d.threads, colour=d.colour, deinterlace=d.deinterlace
        ):
            if idx in want:
                frames.append(frame)
                indices.append(idx)
            if idx >= last:
                break
        return frames, indices

    # ------------------------------------------------------------------ detect

    def detected_positions(self, n: int) -> list[int]:
        """Positions (0..n-1) of the sampled frames the detector runs on: all, or with
        ``detect_every`` K > 1 every K-th and the last (fast mode; all when n <= 2)."""
        k = self.detect_every
        if k <= 1 or n <= 2:
            return list(range(n))
        picks = list(range(0, n, k))
        return picks if picks[-1] == n - 1 else [*picks, n - 1]

    def detect_default(self, frames: Sequence[np.ndarray]) -> list[list[Face]]:
        """Every face of each HxWx3 uint8 BGR frame at the detector's default input (frames of
        several videos may share the call: each frame's faces are its own)."""
        frames = list(frames)
        return self.detector.detect(frames) if frames else []

    def complete_detection(
        self,
        frames: Sequence[np.ndarray],
        frame_indices: Sequence[int],
        default_faces: Sequence[Sequence[Face]],
        positions: Sequence[int] | None = None,
    ) -> tuple[list[list[Face]], DetectorInput | None]:
        """The faces of every frame of one video, from :meth:`detect_default`'s faces of the
        frames at ``positions`` (default: all; :meth:`detected_positions`): the detector input
        chosen for the video on those frames and, where it is not the default, detected again
        there (``size_probe`` and a detector that :func:`chooses_input`); then, in fast mode,
        the faces of the other frames followed along the tracks of the detected ones.

        Returns one list of faces per frame of ``frames`` and the input choice (None when not
        chosen). Raises :class:`InvalidInputError` for lengths that do not match.
        """
        frames = list(frames)
        indices = list(frame_indices)
        picks = list(range(len(frames))) if positions is None else list(positions)
        if len(indices) != len(frames):
            raise InvalidInputError(f"{len(frames)} frames but {len(indices)} frame indices")
        if len(default_faces) != len(picks):
            raise InvalidInputError(
                f"{len(picks)} detected frames but {len(default_faces)} lists of faces"
            )
        faces = [list(f) for f in default_faces]
        choice = None
        detector = self.detector
        if self.size_probe and picks and chooses_input(detector):
            from preprocess.detector_input import detect_at_chosen_input

            faces, choice = detect_at_chosen_input(
                detector,
                [frames[p] for p in picks],
                faces,
                frame_indices=[indices[p] for p in picks],
            )
        if self.detect_every > 1:
            from preprocess.tracking import fill_between_detections, track_faces

            sizes = [f.shape for f in frames]  # each frame's own size (a video may change it)
            tracks = track_faces(
                list(zip([indices[p] for p in picks], faces)),
                frame_sizes=[sizes[p] for p in picks],
            )
            faces = fill_between_detections(tracks, indices, frame_sizes=sizes)
        return faces, choice

    def detect(
        self, frames: Sequence[np.ndarray], frame_indices: Sequence[int] | None = None
    ) -> tuple[list[list[Face]], DetectorInput | None]:
        """:meth:`detect_default` on the :meth:`detected_positions` of one video's frames,
        then :meth:`complete_detection`: every face of each frame and the input choice."""
        frames = list(frames)
        indices = list(range(len(frames))) if frame_indices is None else list(frame_indices)
        picks = self.detected_positions(len(frames))
        default = self.detect_default([frames[p] for p in picks])
        return self.complete_detection(frames, indices, default, picks)

    # ------------------------------------------------------------------ track, select, crop

    def track(
        self,
        frame_indices: Sequence[int],
        faces: Sequence[Sequence[Face]],
        frame_shapes: Sequence[Sequence[int]] | None = None,
    ) -> tuple[list[Track], int]:
        """The face tracks of one video's sampled frames (strictly increasing 0-based
        ``frame_indices``, every face of each frame) and the number of people in enough
        frames to be scored. ``frame_shapes`` (each frame's ``(height, width, ...)``): faces
        are linked where they are on screen across a size change
        (:func:`preprocess.tracking.track_faces`; its errors)."""
        from preprocess.tracking import track_faces, tracks_to_score

        tracks = track_faces(list(zip(frame_indices, faces)), frame_sizes=frame_shapes)
        return tracks, len(tracks_to_score(tracks, len(frame_indices)))

    def select(
        self,
        frame_shapes: Sequence[Sequence[int]],
        frame_indices: Sequence[int],
        faces: Sequence[Sequence[Face]],
        tracks: Sequence[Track],
    ) -> list[FaceSequence]:
        """Who is scored, and which face of each frame (or the whole frame) is cropped for
        them (``faces`` mode, then the policy; module docstring): one :class:`FaceSequence`
        per person scored, without crops, in the runtime's order; sequences the no-face rule
        left empty are left out (an empty list: nothing to crop). With ``all``, each person is
        cropped on their own frames only (no-face rule ``drop``)."""
        from preprocess.tracking import main_track, tracks_to_score

        n = len(frame_shapes)
        plans: list[tuple[int | None, list[Face | None] | None]]
        if self.faces == "per-frame":
            plans = [(None, None)]
        else:
            main = main_track(tracks)
            scored = [main] if self.faces == "main" else tracks_to_score(tracks, len(frame_indices))
            if main is None:  # no face anywhere: the no-face rule for every frame
                plans = [(None, [None] * n)]
            else:
                plans = [(t.track_id, [t.face_at(i) for i in frame_indices]) for t in scored]
        out = []
        for track_id, chosen in plans:
            policy = self.policy
            if self.faces == "all" and track_id is not None:
                # each person on their own frames: another person's whole frame is not evidence
                policy = FacePolicy(policy.face, policy.crop_style, policy.margin, no_face="drop")
            sel = policy.select(frame_shapes, faces, chosen=chosen)
            if sel.positions:
                out.append(
                    FaceSequence(
                        track_id,
                        list(sel.positions),
                        [frame_indices[p] for p in sel.positions],
                        list(sel.boxes),
                        sel.found,
                        reused=sel.reused,
                        dropped=sel.dropped,
                        faces=list(sel.faces),
                    )
                )
        return out

    def crop(self, frames: Sequence[np.ndarray], sequences: Sequence[FaceSequence]) -> None:
        """Fill each sequence's ``crops``: the size x size x 3 uint8 BGR crop of each of its
        frames at its box (the whole frame where the box is None)."""
        for q in sequences:
            q.crops = [self.preprocessor.crop(frames[p], b) for p, b in zip(q.positions, q.boxes)]

    # ------------------------------------------------------------------ the composition

    def extract(
        self, frames: Sequence[np.ndarray], frame_indices: Sequence[int] | None = None
    ) -> ExtractedFaces:
        """Every step on one video's decoded frames (HxWx3 uint8 BGR, in presentation order;
        ``frame_indices``: their 0-based video frame indices, default 0, 1, ...): detect,
        detector input, track, select, crop. Raises :class:`InvalidInputError` for no frames
        or indices that do not match."""
        frames = list(frames)
        if not frames:
            raise InvalidInputError("no frames to extract faces from")
        indices = list(range(len(frames))) if frame_indices is None else list(frame_indices)
        faces, choice = self.detect(frames, indices)
        shapes = [f.shape for f in frames]
        tracks, people = self.track(indices, faces, shapes)
        sequences = self.select(shapes, indices, faces, tracks)
        self.crop(frames, sequences)
        return ExtractedFaces(indices, faces, choice, tracks, people, sequences)
