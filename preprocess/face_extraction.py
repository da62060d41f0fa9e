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
detect`` (:mod:`preprocess.face_clips`), the whole-video timeline
(:func:`engine.timeline.build_timeline`), live streams (:class:`engine.live.LiveStream`:
``Engine.stream``, ``dfe watch``, the web page's live mode) and the benchmarks (through those).
``tests/engine/test_face_extraction_users.py`` pins that their crops are equal.

:meth:`FaceExtractor.extract` is the composition for one video; the step methods
(:meth:`~FaceExtractor.detected_positions`, :meth:`~FaceExtractor.detect_default`,
:meth:`~FaceExtractor.complete_detection`, :meth:`~FaceExtractor.track`,
:meth:`~FaceExtractor.select`, :meth:`~FaceExtractor.crop`) are what it composes, in that order.

A stream (the timeline's one decoding pass, a live source) has no end to wait for:
:meth:`FaceExtractor.stream` gives a :class:`FaceStream`, the same steps batch by batch
(:meth:`FaceStream.push`): detect at the default input, the detector input chosen on the first
batch (as for a video's frames) and kept, every face cropped at the policy's box, and with a
track history each face's person id as frames arrive (:class:`OnlineTracker`: the rule of
:func:`preprocess.tracking.track_faces` over the recent frames, started again at a change of
picture size). Who is scored among the tracks is :meth:`FaceExtractor.scored_tracks`, as in
:meth:`~FaceExtractor.select`. A stream detects on every frame pushed (``detect_every`` is not
used: the caller's sampling rate sets the cost).
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from core.config import FACES_MODES
from core.errors import InvalidInputError
from preprocess.crop import Box, Preprocessor
from preprocess.faces import FacePolicy

if TYPE_CHECKING:
    from core.config import EngineConfig
    from preprocess.detector_input import DetectorInput
    from preprocess.faces import Detector
    from preprocess.scrfd import Face
    from preprocess.tracking import Track
    from preprocess.video import VideoClip

__all__ = [
    "TRACK_HISTORY_FRAMES",
    "DecodeOptions",
    "ExtractedFaces",
    "FaceExtractor",
    "FaceSequence",
    "FaceStream",
    "OnlineTracker",
    "StreamFace",
    "StreamFrame",
    "chooses_input",
]

#: Sampled frames an :class:`OnlineTracker` links new faces against, by default.
TRACK_HISTORY_FRAMES = 64


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
        """The decode options of an :class:`~core.config.EngineConfig`
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
        """The extractor of an :class:`~core.config.EngineConfig`: its ``faces``,
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

    def replace(self, **changes: Any) -> FaceExtractor:
        """A copy with some settings changed (the constructor's keywords: ``detector``,
        ``policy``, ``preprocessor``, ``faces``, ``size_probe``, ``detect_every``, ``decode``);
        the others, the detector (or its function) included, are this one's. Raises
        :class:`InvalidInputError` for another name, and as the constructor does."""
        settings: dict[str, Any] = {
            "detector": self._detector if self._factory is None else self._factory,
            "policy": self.policy,
            "preprocessor": self.preprocessor,
            "faces": self.faces,
            "size_probe": self.size_probe,
            "detect_every": self.detect_every,
            "decode": self.decode,
        }
        unknown = sorted(set(changes) - set(settings))
        if unknown:
            raise InvalidInputError(
                f"FaceExtractor has no setting {', '.join(unknown)}; settings: "
                f"{', '.join(settings)}"
            )
        settings.update(changes)
        return FaceExtractor(settings.pop("detector"), **settings)

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

    def sample(
        self, path: str | os.PathLike[str], keep: Callable[[int, float], bool]
    ) -> Iterator[tuple[int, float, np.ndarray]]:
        """One decoding pass over ``path`` yielding ``(index, time_s, frame)`` for the frames
        ``keep(index, time_s)`` accepts (0-based video frame index, presentation time in
        seconds, HxWx3 uint8 BGR), decoded with :attr:`decode`
        (:func:`preprocess.video.sample_frames`: only the kept frames are converted; its
        errors)."""
        from preprocess.video import sample_frames

        d = self.decode
        return sample_frames(
            path,
            keep,
            backend=d.backend,
            threads=d.threads,
            colour=d.colour,
            deinterlace=d.deinterlace,
        )

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
        n = len(frame_shapes)
        plans: list[tuple[int | None, list[Face | None] | None]]
        if self.faces == "per-frame":
            plans = [(None, None)]
        else:
            scored = self.scored_tracks(tracks, len(frame_indices))
            if not scored:  # no face anywhere: the no-face rule for every frame
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

    def scored_tracks(self, tracks: Sequence[Track], sampled_frames: int) -> list[Track]:
        """Who is scored among the face ``tracks`` of ``sampled_frames`` frames: ``main``, the
        main track (:func:`preprocess.tracking.main_track`; none without a track); ``all``,
        every track present in enough frames and the main one
        (:func:`preprocess.tracking.tracks_to_score`, in id order). Raises
        :class:`InvalidInputError` for ``per-frame`` (the face rule scores no track) and as
        :func:`~preprocess.tracking.tracks_to_score` does."""
        from preprocess.tracking import main_track, tracks_to_score

        if self.faces == "main":
            main = main_track(tracks)
            return [main] if main is not None else []
        if self.faces == "all":
            return tracks_to_score(tracks, sampled_frames)
        raise InvalidInputError(
            f"faces={self.faces!r} scores the face rule's face of each frame, not face tracks"
        )

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

    # ------------------------------------------------------------------ streams

    def stream(self, track_history: int | None = None) -> FaceStream:
        """The face chain over a stream of frames, batch by batch (:class:`FaceStream`).
        ``track_history``: with a number of sampled frames (>= 1), each face gets its person
        id as it arrives (:class:`OnlineTracker` over that many recent frames); None: no ids
        (the caller tracks the whole stream at its end with :meth:`track`)."""
        return FaceStream(self, track_history)


@dataclass
class StreamFace:
    """One face of a streamed frame that has a crop: the detected ``face`` (frame pixels,
    keypoints), its person id ``track`` (:class:`OnlineTracker`; None without a track
    history), its integer crop ``box`` (x1, y1, x2, y2; the policy's, as the runtime crops that
    face) and its size x size x 3 uint8 BGR ``crop``."""

    face: Face
    track: int | None
    box: Box
    crop: np.ndarray


@dataclass
class StreamFrame:
    """What :meth:`FaceStream.push` found in one frame: its 0-based ``index``, its ``shape``
    (height, width, channels), every face detected (highest score first) and, in their order,
    the ``crops`` of those the policy gives a box (a face whose box is empty in the frame has
    none)."""

    index: int
    shape: tuple[int, ...]
    faces: list[Face]
    crops: list[StreamFace]


class FaceStream:
    """:class:`FaceExtractor`'s steps over a stream, batch by batch (:meth:`FaceExtractor.
    stream`): what a caller that cannot wait for a video's end (the timeline's one decoding
    pass, a live source) needs, holding no frame between batches.

    Each :meth:`push` detects its frames at the detector's default input in one call
    (:meth:`FaceExtractor.detect_default`); the detector input is chosen on the first batch, as
    :meth:`FaceExtractor.complete_detection` chooses it on a video's frames (``size_probe`` and
    a detector that :func:`chooses_input`), kept for the rest of the stream
    (:attr:`detector_input`), and its faces detected again where it is not the default. Then,
    with a track history, each face's person id (:attr:`tracker`, state kept across batches;
    a new picture size starts new people), and every face with a box is cropped
    (:meth:`preprocess.faces.FacePolicy.box`, :meth:`preprocess.crop.Preprocessor.crop`).
    ``detect_every`` is not used: every frame pushed is detected. Not thread-safe (one caller
    pushes, in presentation order).
    """

    def __init__(self, extractor: FaceExtractor, track_history: int | None = None) -> None:
        self.extractor = extractor
        self.tracker = OnlineTracker(track_history) if track_history is not None else None
        self.detector_input: DetectorInput | None = None
        self._chosen = False

    def detect(
        self, frames: Sequence[np.ndarray], frame_indices: Sequence[int]
    ) -> list[list[Face]]:
        """Every face of each HxWx3 uint8 BGR frame of one batch (frame pixels, highest score
        first), at the stream's detector input (chosen on the first batch). Raises
        :class:`InvalidInputError` for lengths that do not match, and the detector's and
        :func:`preprocess.detector_input.choose_detector_input`'s errors."""
        frames, indices = list(frames), list(frame_indices)
        if len(indices) != len(frames):
            raise InvalidInputError(f"{len(frames)} frames but {len(indices)} frame indices")
        if not frames:
            return []
        extractor = self.extractor
        found = extractor.detect_default(frames)
        detector = extractor.detector
        if not self._chosen:
            self._chosen = True  # chosen on the first batch, as on a video's sampled frames
            if extractor.size_probe and chooses_input(detector):
                from preprocess.detector_input import detect_at_chosen_input

                found, self.detector_input = detect_at_chosen_input(
                    detector, frames, found, frame_indices=indices
                )
                return found
        choice = self.detector_input
        if choice is not None and not choice.default:
            from preprocess.detector_input import detect_with_input

            return detect_with_input(detector, frames, choice, default_faces=found)
        return [list(f) for f in found]

    def push(self, frames: Sequence[np.ndarray], frame_indices: Sequence[int]) -> list[StreamFrame]:
        """The next batch of the stream: HxWx3 uint8 BGR ``frames`` with their 0-based
        ``frame_indices`` (increasing across the stream). Returns one :class:`StreamFrame` per
        frame: its faces (:meth:`detect`), their person ids (with a track history) and the
        crops. Raises as :meth:`detect` does."""
        frames, indices = list(frames), list(frame_indices)
        found = self.detect(frames, indices)
        policy, pre = self.extractor.policy, self.extractor.preprocessor
        out = []
        for frame, index, faces in zip(frames, indices, found):
            faces = list(faces)
            ids: list[int | None] = [None] * len(faces)
            if self.tracker is not None:
                ids = list(self.tracker.update(index, faces, frame.shape))
            crops = []
            for face, pid in zip(faces, ids):
                box = policy.box(face, frame.shape)
                if box is not None:
                    box = tuple(int(v) for v in box)  # type: ignore[assignment]
                    crops.append(StreamFace(face, pid, box, pre.crop(frame, box)))
            out.append(StreamFrame(int(index), tuple(frame.shape), faces, crops))
        return out


class OnlineTracker:
    """Person ids for faces as frames arrive, by the rule of
    :func:`preprocess.tracking.track_faces`: each new frame's faces are linked by running it
    over the recent frames (at most ``history`` sampled frames); a face continuing a track
    takes the id of that track's previous face, a face starting one gets the next new id
    (0, 1, ... in order of first appearance, left to right within a frame). Ids never change
    once given. Because the rule takes frames in order and never revisits a link, this gives
    the links of one pass over the whole stream, except for a person gone longer than the
    history (a new id on return), and a change of picture size, after which every face starts
    a new track (a live size change is most often another source). Raises
    :class:`InvalidInputError` for a ``history`` below 1."""

    def __init__(self, history: int = TRACK_HISTORY_FRAMES) -> None:
        if history < 1:
            raise InvalidInputError(f"history must be >= 1, got {history!r}")
        #: (frame index, its faces, its shape, their ids) of the recent frames
        self.history: deque[tuple[int, list[Face], tuple[int, ...], list[int]]] = deque(
            maxlen=history
        )
        self.next_id = 0

    def update(self, index: int, faces: list[Face], shape: Sequence[int]) -> list[int]:
        """The person id of each face of frame ``index`` (after every earlier frame; ``shape``
        the frame's (height, width, ...))."""
        from preprocess.tracking import track_faces

        if self.history and tuple(self.history[-1][2][:2]) != tuple(shape[:2]):
            # a new picture size mid-stream: most often another source (a switched camera, a
            # spliced feed), so nobody continues across it; people get new ids
            self.history.clear()
        frames = [*self.history, (index, faces, tuple(shape), [])]
        tracks = track_faces(
            [(i, f) for i, f, _, _ in frames], frame_sizes=[s for _, _, s, _ in frames]
        )
        known = {id(face): pid for _, fs, _, ps in self.history for face, pid in zip(fs, ps)}
        position = {id(face): j for j, face in enumerate(faces)}
        ids: list[int | None] = [None] * len(faces)
        taken: set[int] = set()
        for track in tracks:
            face = track.face_at(index)
            if face is None:
                continue
            previous = track.faces[-2] if len(track.faces) > 1 else None
            pid = known.get(id(previous)) if previous is not None else None
            if pid is not None and pid not in taken:
                ids[position[id(face)]] = pid
                taken.add(pid)
        for j in sorted(
            (j for j, v in enumerate(ids) if v is None),
            key=lambda j: (faces[j].box[0] + faces[j].box[2], j),
        ):
            ids[j] = self.next_id
            self.next_id += 1
        out = [int(v) for v in ids]  # type: ignore[arg-type]
        self.history.append((index, list(faces), tuple(shape), out))
        return out
