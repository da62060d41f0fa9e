"""The video path of one model, as a chain of public stages.

``decode -> detect -> track -> select faces -> crop -> classify -> reduce``; each step is one
object implemented once elsewhere and composed here:

=================  ==========================================================================
stage              implementation
=================  ==========================================================================
decode / sample    :meth:`preprocess.face_extraction.FaceExtractor.read`
                   (:func:`preprocess.video.read_video`)
detect             the face extractor's steps: the detector's default input on the frames of
                   several videos at once (:meth:`~preprocess.face_extraction.FaceExtractor.
                   detect_default`), then per video the input choice and fast mode's filling
                   (:meth:`~preprocess.face_extraction.FaceExtractor.complete_detection`)
track              :meth:`~preprocess.face_extraction.FaceExtractor.track` (one face track per
                   person)
select faces       :meth:`~preprocess.face_extraction.FaceExtractor.select`: who is scored
                   (``faces``: the main track, every track, or the face rule per frame), then
                   :class:`preprocess.faces.FacePolicy` (crop style, margin, no-face rule)
crop / preprocess  :meth:`~preprocess.face_extraction.FaceExtractor.crop`, then
                   :class:`preprocess.crop.Preprocessor` (the model sidecar's input spec)
classify           :class:`core.classifier.ClassifierRunner` (batching, sequence head)
reduce             :func:`core.reduce.score_video` (the sidecar's reduction and labels)
=================  ==========================================================================

The face steps are those of :class:`preprocess.face_extraction.FaceExtractor`, the one face
chain that ``dfe train``, INT8 calibration, ``dfe preprocess`` and ``dfe detect`` also run; the
pipeline calls them one by one (detection batched across videos, stages overlapped in threads)
in the order :meth:`~preprocess.face_extraction.FaceExtractor.extract` composes them.

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

from core.classifier import ClassifierOutput, ClassifierRunner
from core.config import DEFAULT_DETECTOR_INPUT_SHAPE, FACES_MODES, EngineConfig
from core.errors import EngineError, InvalidInputError
from core.reduce import VideoScore, fake_index, score_video
from core.sidecar import ModelSpec
from core.verdict import Verdict, combine, decide, logit_margin, reason_text
from engine.allocator import release_free_memory
from engine.records import Prediction
from preprocess.crop import Preprocessor, resize_pil
from preprocess.face_extraction import DecodeOptions, FaceExtractor, FaceSequence
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
    # the input file's identity when it was read (engine.provenance.input_identity)
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
    # time.perf_counter() when its first stage began (begin()); None before: the time a job
    # waits for a slot or a decoding thread is not its own
    started: float | None = None

    def begin(self) -> None:
        """Note that a stage of this job begins (the first call counts; later ones keep it).
        Each stage calls it, so ``started`` is the start of the first stage the job went
        through: decoding for a video, detection for frames, classification for crops."""
        if self.started is None:
            self.started = time.perf_counter()

    @property
    def size(self) -> int:
        """Frames this job carries into the next stage (for batching)."""
        return len(self.frames) or sum(len(q.crops) for q in self.sequences)


#: One sequence the classifier scores: a person's frames, boxes and crops
#: (:class:`preprocess.face_extraction.FaceSequence`; ``positions`` index the job's decoded
#: frames).
ScoredSequence = FaceSequence


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
    p_fake, the quality of its evidence and its verdict (:mod:`core.verdict`)."""

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
        self.preprocessor = Preprocessor(spec.input)
        self.backend = backend
        self.precision = precision
        self._provenance = provenance
        self.hash_inputs = hash_inputs
        self.detector_input_shape = detector_input_shape
        # the face chain: decode, detect, detector input, track, select, crop (the one
        # implementation; the face options below are its own)
        self.extractor = FaceExtractor(
            detector,
            policy,
            self.preprocessor,
            faces=faces,
            size_probe=size_probe,
            detect_every=int(detect_every),
            decode=DecodeOptions(decode_backend, decode_threads, colour, deinterlace),
        )
        self.notes = self._notes()

    # the face options, as the face chain holds them (read by records, notes, the timeline)

    @property
    def policy(self) -> FacePolicy:
        """Face rule, crop style, margin and no-face rule."""
        return self.extractor.policy

    @property
    def faces(self) -> str:
        """Who is scored: ``main``, ``all`` or ``per-frame``."""
        return self.extractor.faces

    @property
    def size_probe(self) -> bool:
        """Whether the detector input is chosen per video."""
        return self.extractor.size_probe

    @property
    def detect_every(self) -> int:
        """K: the detector runs on every K-th sampled frame (1: every frame, exact mode)."""
        return self.extractor.detect_every

    @property
    def decode_backend(self) -> str:
        """The video decoder (``auto``, ``pyav``, ``opencv``)."""
        return self.extractor.decode.backend

    @property
    def decode_threads(self) -> int:
        """FFmpeg threads per video decoded (0: FFmpeg's choice)."""
        return self.extractor.decode.threads

    @property
    def colour(self) -> str:
        """Frame colour: ``bt709`` or ``keep``."""
        return self.extractor.decode.colour

    @property
    def deinterlace(self) -> str:
        """Interlaced video: ``auto`` or ``off``."""
        return self.extractor.decode.deinterlace

    def _notes(self) -> list[str]:
        """Warnings every record of this pipeline carries (what its score rests on)."""
        notes = []
        if self.spec.demo:
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
        record = self.spec.graphs.classifier_int8
        if self.precision == "int8" and record is not None:
            accuracy = record.accuracy
            if accuracy is not None and accuracy.within_bound is False:
                notes.append(
                    "the INT8 graph is outside its agreement bound (built with --force): max "
                    f"|delta p_fake| {accuracy.max_abs_delta_p_fake} against fp32 on "
                    "held-out frames; scores may differ from fp32 by that much"
                )
            trt_form = record.tensorrt_form_accuracy
            if self.backend == "tensorrt" and trt_form and trt_form.within_bound is False:
                notes.append(
                    "the TensorRT form of the INT8 graph (signed symmetric activations) was "
                    "outside the agreement bound in the CPU check: max |delta p_fake| "
                    f"{trt_form.max_abs_delta_p_fake}; --backend ort runs the Q/DQ graph "
                    "that met it"
                )
            calibration = record.calibration
            calibrated = calibration.policy if calibration is not None else None
            if calibrated is not None and calibrated != self.policy.describe():
                notes.append(
                    f"the INT8 graph was calibrated and checked on crops made with {calibrated}, "
                    f"but this run crops with {self.policy.describe()}: its accuracy bound was "
                    "measured for the former (rebuild with dfe build --precision int8 and the "
                    "same options)"
                )
            # None: built before it was recorded
            calibrated_faces = calibration.faces if calibration is not None else None
            if calibrated_faces is not None and calibrated_faces != self.faces:
                notes.append(
                    f"the INT8 graph was calibrated and checked on the crops of --faces "
                    f"{calibrated_faces}, but this run scores --faces {self.faces}: its accuracy "
                    "bound was measured for the former"
                )
        return notes

    @property
    def detector(self) -> Detector:
        return self._detector()

    # ------------------------------------------------------------------ the stages

    def decode(self, job: VideoJob, n: int, sampling: str) -> None:
        """Read ``n`` frames of ``job.source`` chosen by ``sampling``."""
        from engine.provenance import input_identity

        job.begin()
        t = time.perf_counter()
        job.input = input_identity(job.source, content=self.hash_inputs)
        clip = self.extractor.read(job.source, n, sampling)
        job.frames, job.frame_indices = clip.frames, clip.indices
        # ``interlaced``: the share of the frames read that came from interlaced video, woven
        # or deinterlaced (a deinterlaced frame interpolates half its lines: not what the
        # model was trained on either); ``deinterlaced``: whether bwdif ran
        seen = clip.frames_seen
        interlaced = (clip.interlaced_frames or 0) + (clip.deinterlaced or 0)
        bpp = clip.info.bits_per_pixel
        if bpp is not None and clip.changes_size:  # over the mean size of the frames read
            first = clip.info.width * clip.info.height
            mean = sum(w * h for w, h in clip.frame_sizes) / len(clip.frame_sizes)
            bpp = bpp * first / mean
        job.source_quality = {
            "interlaced": min(interlaced / seen, 1.0) if seen else None,
            "deinterlaced": bool(clip.deinterlaced),
            "bits_per_pixel": bpp,
            "codec": clip.info.codec,
        }
        if clip.backend == "opencv":
            job.warnings.append(
                "decoded with OpenCV, which reports neither interlacing nor compression nor "
                "size changes: the INTERLACED_SOURCE and HEAVY_COMPRESSION checks did not run, "
                "and frames of another size were scaled to the first's (--decode-backend pyav "
                "does all three)"
            )
        if clip.colour is not None:
            job.colour = colour_record(clip.colour)
        job.decode = decode_record(clip)
        job.warnings.extend(clip.warnings)
        job.timings["decode"] = time.perf_counter() - t

    def detect(self, jobs: Sequence[VideoJob]) -> None:
        """Every face of every frame of ``jobs``: the frames of all jobs in shared detector
        batches at the detector's default input (the time is shared out per frame), then, per
        video, the input choice (small faces in large frames, faces filling the frame),
        detecting again only where it is not the default, and in fast mode (``detect_every``
        K > 1: the detector ran on every K-th sampled frame and the last) the faces followed
        along their tracks in between: the face extractor's
        :meth:`~preprocess.face_extraction.FaceExtractor.detect_default` and
        :meth:`~preprocess.face_extraction.FaceExtractor.complete_detection`."""
        todo = [j for j in jobs if j.error is None and j.detect]
        for j in todo:
            j.begin()
        if not any(j.frames for j in todo):
            return
        extractor = self.extractor
        picks = {id(j): extractor.detected_positions(len(j.frames)) for j in todo}
        frames = [j.frames[p] for j in todo for p in picks[id(j)]]
        _ = extractor.detector  # loaded (once) before the clock starts
        t = time.perf_counter()
        faces = extractor.detect_default(frames)
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
                j.faces, j.detector_input = extractor.complete_detection(
                    j.frames, j.frame_indices, j.faces, picks[id(j)]
                )
            except Exception as exc:  # this video only
                j.error = error_text(exc)
            j.timings["detect"] += time.perf_counter() - t

    def track(self, job: VideoJob) -> None:
        """Link the faces of the sampled frames into face tracks, one per person
        (:meth:`preprocess.face_extraction.FaceExtractor.track`)."""
        if not job.detect or job.error is not None:
            return
        if job.faces is None:
            raise InvalidInputError(f"{job.name}: track() before detect()")
        t = time.perf_counter()
        # each frame's own size: faces are linked where they are on screen across a size change
        sizes = [f.shape for f in job.frames] if len(job.frames) == len(job.faces) else None
        job.tracks, job.people = self.extractor.track(job.frame_indices, job.faces, sizes)
        job.timings["track"] = time.perf_counter() - t

    def select(self, job: VideoJob) -> None:
        """Who is scored, and which face of each frame (or the whole frame) is cropped for
        them: one :class:`ScoredSequence` per person scored (see the module docstring;
        :meth:`preprocess.face_extraction.FaceExtractor.select`)."""
        if not job.detect or job.error is not None:
            return
        if job.faces is None:
            raise InvalidInputError(f"{job.name}: select() before detect()")
        shapes = [f.shape for f in job.frames]
        job.sequences = self.extractor.select(shapes, job.frame_indices, job.faces, job.tracks)
        if not job.sequences:
            raise InvalidInputError(
                f"{job.name}: no face in any of the {len(job.frames)} frames read, and "
                "no_face='drop' leaves nothing to classify; use no_face='full_frame' to classify "
                "whole frames as the original did"
            )

    def crop(self, job: VideoJob) -> None:
        """Cut and resize each sequence's faces; release the full frames (unless kept)."""
        if not job.detect or job.error is not None:
            return
        if not job.sequences:
            raise InvalidInputError(f"{job.name}: crop() before select()")
        t = time.perf_counter()
        self.extractor.crop(job.frames, job.sequences)
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
        for j in jobs:
            j.begin()
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
        verdict (:func:`core.verdict.decide`)."""
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
                keypoints=[f.kps if f is not None else None for f in q.faces] or None,
                input_size=self.preprocessor.size,
                interlaced=job.source_quality.get("interlaced"),
                deinterlaced=job.source_quality.get("deinterlaced"),
                bits_per_pixel=job.source_quality.get("bits_per_pixel"),
                codec=job.source_quality.get("codec"),
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
        it is, else UNCERTAIN if anyone is, else REAL (:func:`core.verdict.combine`);
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
        """The job's :class:`Prediction` (an error record when it failed). Its
        ``timings["total"]`` is this job's wall time in seconds, from the start of its first
        stage (:meth:`VideoJob.begin`) to now: its stages and its waits between them (for a
        batch, a worker), not the time before its first stage (0 for a job that reached no
        stage)."""
        release_free_memory()  # the video's frames are freed: keep a long job's RSS flat
        timings = {k: round(v, 6) for k, v in job.timings.items()}
        now = time.perf_counter()
        timings["total"] = round(now - (now if job.started is None else job.started), 6)
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
        """The record's ``provenance`` (:mod:`engine.provenance`): the engine's part
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
        """The calibration holds for the settings it was fitted with: say which of this
        run's score-changing settings differ from them (frames per video, sampling, the face
        options, the detector, the precision ...; the timeline's are not the first frames')."""
        from engine.provenance import flag_for

        fitted = self.spec.calibration.fitted_on.get("settings") or {}
        if not fitted:
            return []
        now: dict[str, Any] = {}
        if self._provenance is not None:
            now = dict(self._provenance()["settings"])
        now.update(seq_len=n, sampling=sampling)
        skip = {"detector", "timeline", "timeline_fps", "backend", "checkpoint"}
        differ = [
            f"{flag_for(key)} {fitted[key]!r} there, {now[key]!r} here"
            for key in fitted
            if key not in skip and key in now and now[key] is not None and fitted[key] != now[key]
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
        record = self.spec.graphs.classifier_int8
        accuracy = record.accuracy if record is not None else None
        measured = list(accuracy.seq_lens) if accuracy is not None else []
        if accuracy is None or not measured or frames >= min(measured):
            return []
        return [
            f"INT8 was checked against fp32 at N={measured} (max |delta p_fake| "
            f"{accuracy.max_abs_delta_p_fake} per video); this video was scored on "
            f"{frames} frames, which average out less of its per-frame error (up to "
            f"{accuracy.max_abs_delta_p_fake_frame} on held-out frames): use fp32 or more "
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
