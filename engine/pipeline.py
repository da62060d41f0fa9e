"""The video path of one model, as a chain of public stages.

``decode -> detect -> track -> select faces -> crop -> classify -> reduce``; each step is one
object implemented once elsewhere and composed here:

=================  ==========================================================================
stage              implementation
=================  ==========================================================================
decode / sample    :func:`preprocess.video.read_video`
detect             a detector with ``detect(frames)`` (:class:`preprocess.scrfd.SCRFDDetector`
                   on the backend's session), then the per-video input choice
                   (:func:`preprocess.detector_input.choose_detector_input`)
track              :func:`preprocess.tracking.track_faces` (one face track per person)
select faces       who is scored (``faces``: the main track, every track, or the face rule
                   per frame), then :class:`preprocess.faces.FacePolicy` (crop style, margin,
                   no-face rule)
crop / preprocess  :class:`preprocess.crop.Preprocessor` (the model sidecar's input spec)
classify           :class:`engine.core.classifier.ClassifierRunner` (batching, sequence head)
reduce             :func:`engine.core.reduce.score_video` (the sidecar's reduction and labels)
=================  ==========================================================================

A scored sequence (:class:`ScoredSequence`) is one person's frames (or, ``per-frame``, the face
rule's choice in each frame); the classifier never sees a sequence that mixes two tracks.

:class:`VideoPipeline` holds those stage objects for one exported model and offers each step as
a method on :class:`VideoJob` items, so :class:`engine.api.Engine` can run them one after the
other (``predict``) or overlapped in threads (:mod:`engine.executor`, ``predict_many``), and
benchmarks can time each step alone.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from engine.core.allocator import release_free_memory
from engine.core.classifier import ClassifierOutput, ClassifierRunner
from engine.core.config import DEFAULT_DETECTOR_INPUT_SHAPE, FACES_MODES, EngineConfig
from engine.core.errors import EngineError, InvalidInputError
from engine.core.records import Prediction
from engine.core.reduce import VideoScore, fake_index, score_video
from engine.core.sidecar import INT8_GRAPH, ModelSpec
from engine.core.verdict import Verdict, combine, decide, logit_margin, reason_text
from preprocess.crop import Box, Preprocessor, resize_pil
from preprocess.faces import FacePolicy
from preprocess.quality import Quality

if TYPE_CHECKING:
    from preprocess.detector_input import DetectorInput
    from preprocess.faces import Detector
    from preprocess.scrfd import Face
    from preprocess.tracking import Track


@dataclass
class VideoJob:
    """One video (or sequence of frames, or of the caller's own crops) going through the stages.

    The stages fill it in turn: ``frames``/``frame_indices`` (decode; frames are HxWx3 uint8
    BGR, indices 0-based in presentation order), ``faces`` (detect: every face of each frame),
    ``detector_input`` (the input chosen for this video), ``tracks`` (one face track per
    person), ``sequences`` (what is scored: one per person scored, each with its selection,
    crops (size x size x 3 uint8 BGR, one per frame used) and boxes). ``frames`` are released once
    cropped unless ``keep_frames``. A stage that fails sets ``error``; later stages skip the
    job, and its record says why.
    """

    index: int
    name: str
    source: str | os.PathLike[str] | None = None  # a video path; None for frames or crops
    detect: bool = True  # False for the caller's own crops
    keep_frames: bool = False
    frames: list[np.ndarray] = field(default_factory=list)
    frame_indices: list[int] = field(default_factory=list)  # the frames decoded
    faces: list[list[Face]] | None = None
    detector_input: DetectorInput | None = None
    colour: dict[str, Any] | None = None  # the source's colour and what was converted
    # what else the decoder did and saw: deinterlacing, the frames' sizes (decode_record)
    decode: dict[str, Any] | None = None
    # the input file's identity when it was read (engine.core.provenance.input_identity)
    input: dict[str, Any] | None = None
    # what the decoder said of the source: share of frames flagged interlaced, bits per pixel
    source_quality: dict[str, float | None] = field(default_factory=dict)
    tracks: list[Track] = field(default_factory=list)
    people: int = 0  # tracks present in enough frames to be scored
    sequences: list[ScoredSequence] = field(default_factory=list)
    kept_frames: dict[int, np.ndarray] = field(default_factory=dict)  # index -> frame
    warnings: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)  # seconds per stage
    error: str | None = None
    started: float = field(default_factory=time.perf_counter)

    @property
    def size(self) -> int:
        """Frames this job carries into the next stage (for batching)."""
        return len(self.frames) or sum(len(q.crops) for q in self.sequences)


@dataclass
class ScoredSequence:
    """One sequence the classifier scores: a person's frames (``track``: the face track's id;
    None for the per-frame rule or the caller's crops). ``positions`` index the job's decoded
    frames; ``frame_indices`` are video frame indices; ``boxes`` the crop boxes (None: whole
    frame); ``found`` the frames cropped at this person's face."""

    track: int | None
    positions: list[int]
    frame_indices: list[int]
    boxes: list[Box | None]
    found: int
    crops: list[np.ndarray] = field(default_factory=list)

    @property
    def coverage(self) -> float:
        """Fraction of the frames used that had this person's face (0 when none did)."""
        return self.found / len(self.positions) if self.positions else 0.0


def colour_record(conversion: Any) -> dict[str, Any]:
    """The record's ``colour`` of a :class:`preprocess.colour.ColourConversion`."""
    src = conversion.source
    return {
        "source": {
            "primaries": src.primaries,
            "transfer": src.transfer,
            "matrix": src.matrix,
            "range": src.range,
            "bit_depth": src.bit_depth,
            "pix_fmt": src.pix_fmt,
        },
        "conversion": conversion.kind,
        "filters": conversion.filters,
        "assumed": list(conversion.assumed),
    }


def decode_record(clip: Any) -> dict[str, Any]:
    """The record's ``decode`` of a :class:`preprocess.video.VideoClip`: ``backend`` (pyav,
    opencv, pillow), ``deinterlace`` (the filter that ran, ``"bwdif"``, or None),
    ``deinterlace_filter`` (its full FFmpeg spec), ``field_order`` (the stream's: ``tff``,
    ``bff``, ``progressive``, ``unknown``), ``deinterlaced_frames`` (frames read that were
    deinterlaced), ``interlaced_frames`` (frames read still interlaced: woven fields),
    ``frame_sizes`` (the ``[width, height]`` of the frames read, in order of appearance: more
    than one when the video changes size) and ``size_changes`` (``[frame index, width,
    height]`` where each size starts among the frames read). The decoder-specific fields are
    None where the decoder does not report them (OpenCV)."""
    spec = clip.deinterlace
    return {
        "backend": clip.backend,
        "deinterlace": spec.partition("=")[0] if spec else None,
        "deinterlace_filter": spec,
        "field_order": clip.info.field_order,
        "deinterlaced_frames": clip.deinterlaced,
        "interlaced_frames": clip.interlaced_frames,
        "frame_sizes": [list(size) for size in dict.fromkeys(clip.frame_sizes)],
        "size_changes": [[i, w, h] for i, (w, h) in clip.size_changes],
    }


def policy_for(config: EngineConfig, spec: ModelSpec) -> FacePolicy:
    """The face policy of ``config`` for model ``spec``: its face rule, margin and no-face rule,
    and its crop style, else the model's (recorded at export), else ``scrfd``."""
    return FacePolicy(
        face=config.face,
        crop_style=config.crop_style or spec.crop_style or "scrfd",
        margin=config.margin,
        no_face=config.no_face,
    )


def error_text(exc: BaseException) -> str:
    """A record's error text: an engine error's message, else ``Type: message``."""
    if isinstance(exc, EngineError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


def job_for(index: int, source: Any, *, crops: bool = False, size: int = 112) -> VideoJob:
    """A :class:`VideoJob` for a video path, a sequence of HxWx3 uint8 BGR frames, or (with
    ``crops``) the caller's own face crops (any size; resized to ``size`` x ``size``).

    Raises :class:`InvalidInputError` for anything else."""
    if isinstance(source, (str, os.PathLike)):
        return VideoJob(index=index, name=str(source), source=source)
    if isinstance(source, np.ndarray) and source.ndim == 3:
        raise InvalidInputError(
            "predict() takes a video path or a sequence of frames; got one HxWx3 image: "
            "wrap it in a list"
        )
    try:
        frames = list(source)
    except TypeError as exc:
        raise InvalidInputError(
            f"predict() takes a video path or a sequence of HxWx3 uint8 BGR frames, "
            f"got {type(source).__name__}"
        ) from exc
    for i, f in enumerate(frames):
        if not (
            isinstance(f, np.ndarray) and f.ndim == 3 and f.shape[2] == 3 and f.dtype == np.uint8
        ):
            raise InvalidInputError(
                f"frame {i}: expected an HxWx3 uint8 BGR array, got "
                f"{getattr(f, 'shape', type(f).__name__)} {getattr(f, 'dtype', '')}"
            )
    if not frames:
        raise InvalidInputError("predict() got an empty sequence of frames")
    name = f"<{'crops' if crops else 'frames'}:{len(frames)}>"
    job = VideoJob(index=index, name=name, detect=not crops)
    job.frame_indices = list(range(len(frames)))
    if crops:
        n = len(frames)
        seq = ScoredSequence(None, list(range(n)), list(range(n)), [None] * n, found=n)
        seq.crops = [resize_pil(f, size) for f in frames]
        job.sequences = [seq]
    else:
        job.frames = frames
    return job


@dataclass(frozen=True)
class SequenceResult:
    """One scored sequence: its frames and boxes, per-frame and overall scores, the calibrated
    p_fake, the quality of its evidence and its verdict (:mod:`engine.core.verdict`)."""

    sequence: ScoredSequence
    score: VideoScore
    p_fake_calibrated: float
    quality: Quality
    verdict: Verdict

    def to_record(self) -> dict[str, Any]:
        """The record's ``tracks`` entry of this sequence."""
        seq = self.sequence
        return {
            "track": seq.track,
            "frames": len(seq.positions),
            "frame_indices": list(seq.frame_indices),
            "boxes": [list(b) if b else None for b in seq.boxes],
            "p_fake": self.score.p_fake,
            "label": self.score.label,
            "confidence": self.score.confidence,
            "face_coverage": round(seq.coverage, 6),
            "verdict": self.verdict.verdict,
            "reasons": list(self.verdict.reasons),
            "p_fake_calibrated": self.p_fake_calibrated,
            "quality": self.quality.to_record(),
        }


class VideoPipeline:
    """The stages of one exported model (see the module docstring).

    ``detector`` is called on first use (the detector loads lazily and is shared between the
    models of a catalog). ``faces`` is who is scored (``main``, ``all``, ``per-frame``);
    ``size_probe`` whether the detector input is chosen per video. ``backend`` and
    ``precision`` are what the records say ran.
    """

    def __init__(
        self,
        spec: ModelSpec,
        classifier: ClassifierRunner,
        detector: Callable[[], Detector],
        *,
        policy: FacePolicy,
        backend: str,
        precision: str,
        faces: str = "main",
        size_probe: bool = True,
        detect_every: int = 1,
        decode_backend: str = "auto",
        decode_threads: int = 0,
        colour: str = "bt709",
        provenance: Callable[[], dict[str, Any]] | None = None,
        hash_inputs: bool = False,
        detector_input_shape: str = DEFAULT_DETECTOR_INPUT_SHAPE,
        deinterlace: str = "auto",
    ) -> None:
        if faces not in FACES_MODES:
            raise InvalidInputError(
                f"faces={faces!r} is not supported; supported values are {', '.join(FACES_MODES)}"
            )
        self.spec = spec
        self.classifier = classifier
        self._detector = detector
        self.policy = policy
        self.preprocessor = Preprocessor(spec.input)
        self.backend = backend
        self.precision = precision
        self.faces = faces
        self.size_probe = size_probe
        self.detect_every = int(detect_every)
        self.decode_backend = decode_backend
        self.decode_threads = decode_threads
        self.colour = colour
        self._provenance = provenance
        self.hash_inputs = hash_inputs
        self.detector_input_shape = detector_input_shape
        self.deinterlace = deinterlace
        self.notes = self._notes()

    def _notes(self) -> list[str]:
        """Warnings every record of this pipeline carries (what its score rests on)."""
        notes = []
        if self.spec.raw.get("demo"):
            notes.append(
                "untrained demo model (dfe demo): its labels and confidences mean nothing; "
                "export a trained checkpoint with dfe export"
            )
        if self.detect_every > 1:
            notes.append(
                f"fast mode: faces were detected on every {self.detect_every}th sampled frame "
                "and followed along their tracks in between (--detect-every 1 for exact mode)"
            )
        if self.detector_input_shape == "frame":
            notes.append(
                "fast mode: the detector input was shaped like the frame, so a face box near "
                "the picture's lower edge can differ from exact mode's by a pixel "
                "(--detector-input-shape square for exact mode)"
            )
        if self.precision == "int8":
            record = self.spec.raw.get("graphs", {}).get(INT8_GRAPH, {})
            accuracy = record.get("accuracy", {})
            if accuracy and not accuracy.get("within_bound", True):
                notes.append(
                    "the INT8 graph is outside its agreement bound (built with --force): max "
                    f"|delta p_fake| {accuracy.get('max_abs_delta_p_fake')} against fp32 on "
                    "held-out frames; scores may differ from fp32 by that much"
                )
            trt_form = record.get("tensorrt_form_accuracy", {})
            if self.backend == "tensorrt" and trt_form and not trt_form.get("within_bound", True):
                notes.append(
                    "the TensorRT form of the INT8 graph (signed symmetric activations) was "
                    "outside the agreement bound in the CPU check: max |delta p_fake| "
                    f"{trt_form.get('max_abs_delta_p_fake')}; --backend ort runs the Q/DQ graph "
                    "that met it"
                )
            calibration = record.get("calibration", {})
            calibrated = calibration.get("policy")
            if calibrated is not None and calibrated != self.policy.describe():
                notes.append(
                    f"the INT8 graph was calibrated and checked on crops made with {calibrated}, "
                    f"but this run crops with {self.policy.describe()}: its accuracy bound was "
                    "measured for the former (rebuild with dfe build --precision int8 and the "
                    "same options)"
                )
        return notes

    @property
    def detector(self) -> Detector:
        return self._detector()

    # ------------------------------------------------------------------ the stages

    def decode(self, job: VideoJob, n: int, sampling: str) -> None:
        """Read ``n`` frames of ``job.source`` chosen by ``sampling``."""
        from engine.core.provenance import input_identity
        from preprocess.video import read_video

        t = time.perf_counter()
        job.input = input_identity(job.source, content=self.hash_inputs)
        clip = read_video(
            job.source,
            n,
            sampling=sampling,
            backend=self.decode_backend,
            threads=self.decode_threads,
            colour=self.colour,
            deinterlace=self.deinterlace,
        )
        job.frames, job.frame_indices = clip.frames, clip.indices
        # ``interlaced``: the share of the frames read that came from interlaced video, woven
        # or deinterlaced (a deinterlaced frame interpolates half its lines: not what the
        # model was trained on either); ``deinterlaced``: whether bwdif ran
        seen = clip.frames_seen
        interlaced = (clip.interlaced_frames or 0) + (clip.deinterlaced or 0)
        job.source_quality = {
            "interlaced": min(interlaced / seen, 1.0) if seen else None,
            "deinterlaced": bool(clip.deinterlaced),
            "bits_per_pixel": clip.info.bits_per_pixel,
        }
        if clip.colour is not None:
            job.colour = colour_record(clip.colour)
        job.decode = decode_record(clip)
        job.warnings.extend(clip.warnings)
        job.timings["decode"] = time.perf_counter() - t

    def detect(self, jobs: Sequence[VideoJob]) -> None:
        """Every face of every frame of ``jobs``: the frames of all jobs in shared detector
        batches at the detector's default input (the time is shared out per frame), then, per
        video, the input choice of :func:`preprocess.detector_input.choose_detector_input`
        (small faces in large frames, faces filling the frame), detecting again only where it
        is not the default. With ``detect_every`` K > 1 (fast mode) the detector runs on every
        K-th sampled frame (and the last) only, and faces are followed along their tracks in
        between (:func:`preprocess.tracking.fill_between_detections`)."""
        todo = [j for j in jobs if j.error is None and j.detect]
        if not any(j.frames for j in todo):
            return
        picks = {id(j): self._detected_positions(len(j.frames)) for j in todo}
        frames = [j.frames[p] for j in todo for p in picks[id(j)]]
        detector = self.detector
        t = time.perf_counter()
        faces = detector.detect(frames) if frames else []
        share = (time.perf_counter() - t) / max(len(frames), 1)
        pos = 0
        for j in todo:
            count = len(picks[id(j)])
            j.faces = faces[pos : pos + count]
            j.timings["detect"] = share * count
            pos += count
        for j in todo:
            t = time.perf_counter()
            try:
                self._choose_input(j, picks[id(j)])
                if self.detect_every > 1:
                    self._fill(j, picks[id(j)])
            except Exception as exc:  # this video only
                j.error = error_text(exc)
            j.timings["detect"] += time.perf_counter() - t

    def _detected_positions(self, n: int) -> list[int]:
        """Positions of the sampled frames the detector runs on: all, or every K-th and the
        last (fast mode)."""
        k = self.detect_every
        if k <= 1 or n <= 2:
            return list(range(n))
        picks = list(range(0, n, k))
        return picks if picks[-1] == n - 1 else [*picks, n - 1]

    def _choose_input(self, job: VideoJob, picks: list[int]) -> None:
        """The per-video detector input (issue 14), on the frames the detector ran on."""
        if not self.size_probe:
            return
        detector = self.detector
        if getattr(detector, "fixed_input", False) or not hasattr(detector, "detect_prepared"):
            return  # said once per record by _notes()
        from preprocess.detector_input import choose_detector_input, detect_with_input

        frames = [job.frames[p] for p in picks]
        indices = [job.frame_indices[p] for p in picks]
        choice = choose_detector_input(detector, frames, job.faces, frame_indices=indices)
        if not choice.default:
            job.faces = detect_with_input(detector, frames, choice, default_faces=job.faces)
        job.detector_input = choice

    def _fill(self, job: VideoJob, picks: list[int]) -> None:
        """Fast mode: faces of every sampled frame from the tracks of the detected ones."""
        from preprocess.tracking import fill_between_detections, track_faces

        detected = [job.frame_indices[p] for p in picks]
        sizes = [f.shape for f in job.frames]  # each frame's own size (a video may change it)
        tracks = track_faces(list(zip(detected, job.faces)), frame_sizes=[sizes[p] for p in picks])
        job.faces = fill_between_detections(tracks, job.frame_indices, frame_sizes=sizes)

    def track(self, job: VideoJob) -> None:
        """Link the faces of the sampled frames into face tracks, one per person."""
        if not job.detect or job.error is not None:
            return
        if job.faces is None:
            raise InvalidInputError(f"{job.name}: track() before detect()")
        from preprocess.tracking import track_faces, tracks_to_score

        t = time.perf_counter()
        # each frame's own size: faces are linked where they are on screen across a size change
        sizes = [f.shape for f in job.frames] if len(job.frames) == len(job.faces) else None
        job.tracks = track_faces(list(zip(job.frame_indices, job.faces)), frame_sizes=sizes)
        job.people = len(tracks_to_score(job.tracks, len(job.frame_indices)))
        job.timings["track"] = time.perf_counter() - t

    def select(self, job: VideoJob) -> None:
        """Who is scored, and which face of each frame (or the whole frame) is cropped for
        them: one :class:`ScoredSequence` per person scored (see the module docstring)."""
        if not job.detect or job.error is not None:
            return
        if job.faces is None:
            raise InvalidInputError(f"{job.name}: select() before detect()")
        from preprocess.tracking import main_track, tracks_to_score

        shapes = [f.shape for f in job.frames]
        if self.faces == "per-frame":
            plans: list[tuple[int | None, list[Face | None] | None]] = [(None, None)]
        else:
            main = main_track(job.tracks)
            scored = (
                [main]
                if self.faces == "main"
                else tracks_to_score(job.tracks, len(job.frame_indices))
            )
            if main is None:  # no face anywhere: the no-face rule for every frame
                plans = [(None, [None] * len(shapes))]
            else:
                plans = [(t.track_id, [t.face_at(i) for i in job.frame_indices]) for t in scored]
        job.sequences = []
        for track_id, chosen in plans:
            policy = self.policy
            if self.faces == "all" and track_id is not None:
                # each person on their own frames: another person's whole frame is not evidence
                policy = FacePolicy(policy.face, policy.crop_style, policy.margin, no_face="drop")
            sel = policy.select(shapes, job.faces, chosen=chosen)
            job.sequences.append(
                ScoredSequence(
                    track_id,
                    list(sel.positions),
                    [job.frame_indices[p] for p in sel.positions],
                    list(sel.boxes),
                    sel.found,
                )
            )
        if not any(q.positions for q in job.sequences):
            raise InvalidInputError(
                f"{job.name}: no face in any of the {len(job.frames)} frames read, and "
                "no_face='drop' leaves nothing to classify; use no_face='full_frame' to classify "
                "whole frames as the original did"
            )
        job.sequences = [q for q in job.sequences if q.positions]

    def crop(self, job: VideoJob) -> None:
        """Cut and resize each sequence's faces; release the full frames (unless kept)."""
        if not job.detect or job.error is not None:
            return
        if not job.sequences:
            raise InvalidInputError(f"{job.name}: crop() before select()")
        t = time.perf_counter()
        for q in job.sequences:
            q.crops = [
                self.preprocessor.crop(job.frames[p], b) for p, b in zip(q.positions, q.boxes)
            ]
        if job.keep_frames:
            used = {p for q in job.sequences for p in q.positions}
            job.kept_frames = {job.frame_indices[p]: job.frames[p] for p in sorted(used)}
        job.frames = []  # release the full-size frames early
        job.timings["crop"] = time.perf_counter() - t

    def detect_and_crop(self, jobs: Sequence[VideoJob]) -> None:
        """:meth:`detect` on all ``jobs`` in shared batches, then :meth:`track`,
        :meth:`select` and :meth:`crop` each (an error in one job fails that job only)."""
        self.detect(jobs)
        for job in jobs:
            if job.error is None and job.detect:
                try:
                    self.track(job)
                    self.select(job)
                    self.crop(job)
                except Exception as exc:
                    job.error = error_text(exc)

    def classify(
        self, jobs: Sequence[VideoJob], extra_outputs: Sequence[str] = ()
    ) -> list[ClassifierOutput]:
        """Per-frame logits of each sequence of each job (all frames share classifier
        batches), plus the classifier's ``extra_outputs``: one :class:`ClassifierOutput` per
        job, one entry per sequence."""
        t = time.perf_counter()
        seqs = [(k, q) for k, j in enumerate(jobs) for q in j.sequences]
        batches = [self.preprocessor(np.stack(q.crops)) for _, q in seqs]
        out = self.classifier.run(batches, extra_outputs)
        share = (time.perf_counter() - t) / max(sum(len(b) for b in batches), 1)
        per_job = [ClassifierOutput([], {n: [] for n in extra_outputs}) for _ in jobs]
        for i, ((k, _q), b) in enumerate(zip(seqs, batches)):
            per_job[k].logits.append(out.logits[i])
            for name in extra_outputs:
                per_job[k].extra[name].append(out.extra[name][i])
            jobs[k].timings["classify"] = jobs[k].timings.get("classify", 0.0) + share * len(b)
        return per_job

    def results(self, job: VideoJob, logits: Sequence[np.ndarray]) -> list[SequenceResult]:
        """Each sequence's score (reduction and labels of the model's sidecar), calibrated
        p_fake (the sidecar's calibration), quality (:func:`preprocess.quality.measure`) and
        verdict (:func:`engine.core.verdict.decide`)."""
        from preprocess.quality import measure

        calibration = self.spec.calibration
        fake = fake_index(self.spec.labels)
        out = []
        for q, z in zip(job.sequences, logits):
            score = score_video(z, self.spec.reduce, self.spec.labels)
            p_cal = calibration.p_fake(logit_margin(score.logits, fake))
            quality = measure(
                q.crops,
                q.boxes if job.detect else [(0, 0, 1, 1)] * len(q.crops),
                input_size=self.preprocessor.size,
                interlaced=job.source_quality.get("interlaced"),
                deinterlaced=job.source_quality.get("deinterlaced"),
                bits_per_pixel=job.source_quality.get("bits_per_pixel"),
            )
            if not job.detect:  # the caller's own crops: faces, of a size not known here
                quality = dataclasses.replace(quality, face_px=None, upscale=None)
            verdict = decide(
                p_cal,
                found=q.found,
                calibration=calibration,
                quality_reasons=quality.reasons(),
                untrained=bool(self.spec.demo),
            )
            out.append(SequenceResult(q, score, p_cal, quality, verdict))
        return out

    @staticmethod
    def deciding(results: Sequence[SequenceResult]) -> int:
        """The position of the sequence that decides the video: a video is FAKE if anyone in
        it is, else UNCERTAIN if anyone is, else REAL (:func:`engine.core.verdict.combine`);
        among people of that verdict, the most fake; with one sequence, that one."""
        order = sorted(range(len(results)), key=lambda i: (-results[i].score.p_fake, i))
        return order[combine([results[i].verdict for i in order])]

    def finish(
        self,
        job: VideoJob,
        logits: Sequence[np.ndarray] | None,
        *,
        n: int | None,
        sampling: str | None,
    ) -> Prediction:
        """The job's :class:`Prediction` (an error record when it failed)."""
        release_free_memory()  # the video's frames are freed: keep a long job's RSS flat
        timings = {k: round(v, 6) for k, v in job.timings.items()}
        timings["total"] = round(time.perf_counter() - job.started, 6)
        common = {
            "video": job.name,
            "seq_len": n,
            "sampling": sampling if job.source is not None else None,
            "backend": self.backend,
            "precision": self.precision,
            "model": str(self.spec.directory.resolve()),
            "reduce": self.spec.reduce,
            "crop_style": self.policy.crop_style if job.detect else None,
            "faces_mode": self.faces if job.detect else None,
            "detect_every": self.detect_every if job.detect else None,
            "people": job.people,
            "detector_input": job.detector_input.to_record() if job.detector_input else None,
            "colour": job.colour,
            "decode": job.decode,
            "timings": timings,
            "provenance": self.provenance(job, n=n, sampling=sampling),
        }
        warnings = [*job.warnings, *self.notes]
        if job.error is not None or not logits:
            return Prediction(
                status="error", error=job.error or "not classified", warnings=warnings, **common
            )
        results = self.results(job, logits)
        best = results[self.deciding(results)]
        seq, score = best.sequence, best.score
        warnings += self._basis_warnings(job, best)
        warnings += self._int8_frames_warning(len(seq.positions))
        warnings += self._calibration_warning(n, sampling if job.source is not None else None)
        warnings += [
            f"{code}: {reason_text(code)}"
            for code in best.verdict.reasons
            if code not in ("NO_FACE_DETECTED", "UNTRAINED_MODEL", "SCORE_IN_UNCERTAIN_BAND")
        ]
        return Prediction(
            status="ok",
            verdict=best.verdict.verdict,
            reasons=list(best.verdict.reasons),
            label=score.label,
            confidence=score.confidence,
            p_fake=score.p_fake,
            p_fake_calibrated=best.p_fake_calibrated,
            logits=score.logits,
            quality=best.quality.to_record(),
            calibration=self.spec.calibration.to_record(),
            frames=len(seq.positions),
            faces=seq.found,
            frame_p_fake=score.frame_p_fake,
            frame_indices=list(seq.frame_indices),
            boxes=[list(b) if b else None for b in seq.boxes],
            tracks=[r.to_record() for r in results if r.sequence.track is not None],
            face_coverage=round(seq.coverage, 6),
            warnings=warnings,
            **common,
        )

    def provenance(
        self, job: VideoJob, *, n: int | None, sampling: str | None
    ) -> dict[str, Any] | None:
        """The record's ``provenance`` (:mod:`engine.core.provenance`): the engine's part
        (model, detector, settings), this job's ``seq_len`` and ``sampling``, and its input's
        identity. None when the pipeline was built without one (a test's bare pipeline)."""
        if self._provenance is None:
            return None
        prov = self._provenance()
        settings = dict(prov["settings"], seq_len=n)
        settings["sampling"] = sampling if job.source is not None else None
        detector = prov["detector"] if job.detect else None  # None: the caller's own crops
        return {**prov, "detector": detector, "settings": settings, "input": job.input}

    def _calibration_warning(self, n: int | None, sampling: str | None) -> list[str]:
        """The calibration holds for the settings it was fitted with: say when this run's
        frames per video or sampling differ."""
        fitted = self.spec.calibration.fitted_on.get("settings") or {}
        differ = [
            f"{key} {fitted[key]} there, {now} here"
            for key, now in (("seq_len", n), ("sampling", sampling))
            if key in fitted and now is not None and fitted[key] != now
        ]
        if not differ:
            return []
        return [
            "the model's calibration was fitted with other settings ("
            + "; ".join(differ)
            + "): its probabilities and thresholds may not hold here (dfe calibrate again "
            "with these settings)"
        ]

    def _int8_frames_warning(self, frames: int) -> list[str]:
        """INT8's agreement bound holds per video at the N it was measured at; a video scored
        on fewer frames averages out less of its per-frame error: say so, with that error."""
        if self.precision != "int8":
            return []
        accuracy = self.spec.raw.get("graphs", {}).get(INT8_GRAPH, {}).get("accuracy", {})
        measured = accuracy.get("seq_lens") or []
        if not measured or frames >= min(measured):
            return []
        return [
            f"INT8 was checked against fp32 at N={measured} (max |delta p_fake| "
            f"{accuracy.get('max_abs_delta_p_fake')} per video); this video was scored on "
            f"{frames} frames, which average out less of its per-frame error (up to "
            f"{accuracy.get('max_abs_delta_p_fake_frame')} on held-out frames): use fp32 or more "
            "frames for a close call"
        ]

    def _basis_warnings(self, job: VideoJob, best: SequenceResult) -> list[str]:
        """What the score rests on, when it is weak: whole frames, people left unscored."""
        out = []
        if not job.detect:
            return out
        if self.size_probe and job.detector_input is None:
            fix = (
                "a detector graph with a free input size, such as det_500m.onnx, chooses it"
                if self.backend == "ort"
                else "--backend ort chooses it"
            )
            out.append(
                f"the detector input was not chosen for this video: the {self.backend} "
                "detector runs only its fixed input, so very small or very large faces may be "
                f"missed ({fix})"
            )
        seq = best.sequence
        whole = sum(b is None for b in seq.boxes)
        if whole == len(seq.boxes):
            frames = "the frame" if whole == 1 else f"any of the {whole} frames"
            out.append(
                f"no face was found in {frames} used: the score is of whole frames, not of a "
                "face, and the verdict is NO_FACE"
            )
        elif whole:
            out.append(
                f"{whole} of {len(seq.boxes)} frames had no face of the scored person and "
                f"{'was' if whole == 1 else 'were'} classified whole (no_face=full_frame)"
            )
        scored = {q.track for q in job.sequences}
        others = job.people - len([t for t in scored if t is not None])
        if self.faces == "main" and others > 0:
            who = (
                "1 other person in the video was"
                if others == 1
                else (f"{others} other people in the video were")
            )
            out.append(f"{who} not scored (--faces all scores everyone)")
        if self.faces == "per-frame" and job.people > 1:
            out.append(
                f"{job.people} people are in the video and the per-frame rule may switch between "
                "them (--faces main follows one person)"
            )
        return out

    def run(
        self,
        job: VideoJob,
        *,
        n: int,
        sampling: str,
        extra_outputs: Sequence[str] = (),
        progress: Callable[[str], None] | None = None,
    ) -> tuple[Prediction, ClassifierOutput]:
        """Every stage on one job, in order; bad input raises. Returns the prediction and the
        classifier's output for the job's sequences (logits and ``extra_outputs``)."""
        step = progress or (lambda _stage: None)
        if job.source is not None:
            step("decoding")
            self.decode(job, n, sampling)
        if job.detect:
            step("detecting faces")
            self.detect([job])
            if job.error is not None:
                raise InvalidInputError(job.error)
            self.track(job)
            self.select(job)
            self.crop(job)
        step("classifying")
        (out,) = self.classify([job], extra_outputs)
        return self.finish(job, out.logits, n=n, sampling=sampling), out
