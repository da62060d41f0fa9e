"""The video path of one model, as a chain of public stages.

``decode -> detect -> select faces -> crop -> classify -> reduce``; each step is one object
implemented once elsewhere and composed here:

=================  ==========================================================================
stage              implementation
=================  ==========================================================================
decode / sample    :func:`preprocess.video.read_video`
detect             a detector with ``detect(frames)`` (:class:`preprocess.scrfd.SCRFDDetector`
                   on the backend's session)
select faces       :class:`preprocess.faces.FacePolicy` (face rule, crop style, margin,
                   no-face rule)
crop / preprocess  :class:`preprocess.crop.Preprocessor` (the model sidecar's input spec)
classify           :class:`engine.core.classifier.ClassifierRunner` (batching, sequence head)
reduce             :func:`engine.core.reduce.score_video` (the sidecar's reduction and labels)
=================  ==========================================================================

:class:`VideoPipeline` holds those stage objects for one exported model and offers each step as
a method on :class:`VideoJob` items, so :class:`engine.api.Engine` can run them one after the
other (``predict``) or overlapped in threads (:mod:`engine.executor`, ``predict_many``), and
benchmarks can time each step alone.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from engine.core.classifier import ClassifierOutput, ClassifierRunner
from engine.core.config import EngineConfig
from engine.core.errors import EngineError, InvalidInputError
from engine.core.records import Prediction
from engine.core.reduce import score_video
from engine.core.sidecar import INT8_GRAPH, ModelSpec
from preprocess.crop import Box, Preprocessor, resize_pil
from preprocess.faces import FacePolicy, FaceSelection, crop_selection

if TYPE_CHECKING:
    from preprocess.faces import Detector
    from preprocess.scrfd import Face


@dataclass
class VideoJob:
    """One video (or sequence of frames, or of the caller's own crops) going through the stages.

    The stages fill it in turn: ``frames``/``frame_indices`` (decode; frames are HxWx3 uint8
    BGR, indices 0-based in presentation order), ``faces`` (detect: every face of each frame),
    ``selection`` (which face of which frame), ``crops`` (size x size x 3 uint8 BGR, one per
    frame used) and ``boxes``. ``frames`` are released once cropped unless ``keep_frames``.
    A stage that fails sets ``error``; later stages skip the job, and its record says why.
    """

    index: int
    name: str
    source: str | os.PathLike[str] | None = None  # a video path; None for frames or crops
    detect: bool = True  # False for the caller's own crops
    keep_frames: bool = False
    frames: list[np.ndarray] = field(default_factory=list)
    frame_indices: list[int] = field(default_factory=list)
    faces: list[list[Face]] | None = None
    selection: FaceSelection | None = None
    crops: list[np.ndarray] = field(default_factory=list)
    boxes: list[Box | None] = field(default_factory=list)
    kept_frames: dict[int, np.ndarray] = field(default_factory=dict)  # index -> frame
    warnings: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)  # seconds per stage
    error: str | None = None
    started: float = field(default_factory=time.perf_counter)

    @property
    def found(self) -> int:
        """Frames used whose own face was found (all of them for the caller's crops)."""
        if not self.detect:
            return len(self.crops)
        return self.selection.found if self.selection is not None else 0

    @property
    def size(self) -> int:
        """Frames this job carries into the next stage (for batching)."""
        return len(self.frames) or len(self.crops)


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
        job.crops = [resize_pil(f, size) for f in frames]
        job.boxes = [None] * len(frames)
    else:
        job.frames = frames
    return job


class VideoPipeline:
    """The stages of one exported model (see the module docstring).

    ``detector`` is called on first use (the detector loads lazily and is shared between the
    models of a catalog). ``backend`` and ``precision`` are what the records say ran.
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
        decode_backend: str = "auto",
    ) -> None:
        self.spec = spec
        self.classifier = classifier
        self._detector = detector
        self.policy = policy
        self.preprocessor = Preprocessor(spec.input)
        self.backend = backend
        self.precision = precision
        self.decode_backend = decode_backend
        self.notes = self._notes()

    def _notes(self) -> list[str]:
        """Warnings every record of this pipeline carries (what its score rests on)."""
        notes = []
        if self.precision == "int8":
            calibration = self.spec.raw.get("graphs", {}).get(INT8_GRAPH, {}).get("calibration", {})
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
        from preprocess.video import read_video

        t = time.perf_counter()
        clip = read_video(job.source, n, sampling=sampling, backend=self.decode_backend)
        job.frames, job.frame_indices = clip.frames, clip.indices
        job.warnings.extend(clip.warnings)
        job.timings["decode"] = time.perf_counter() - t

    def detect(self, jobs: Sequence[VideoJob]) -> None:
        """Every face of every frame of ``jobs``, the frames of all jobs in shared detector
        batches (the time is shared out per frame)."""
        todo = [j for j in jobs if j.error is None and j.detect]
        frames = [f for j in todo for f in j.frames]
        if not frames:
            return
        t = time.perf_counter()
        faces = self.detector.detect(frames)
        share = (time.perf_counter() - t) / len(frames)
        pos = 0
        for j in todo:
            count = len(j.frames)
            j.faces = faces[pos : pos + count]
            j.timings["detect"] = share * count
            pos += count

    def select(self, job: VideoJob) -> None:
        """Apply the face policy: which face of each frame (or the whole frame) is cropped."""
        if not job.detect or job.error is not None:
            return
        if job.faces is None:
            raise InvalidInputError(f"{job.name}: select() before detect()")
        job.selection = self.policy.select([f.shape for f in job.frames], job.faces)
        if not job.selection.positions:
            raise InvalidInputError(
                f"{job.name}: no face in any of the {len(job.frames)} frames read, and "
                "no_face='drop' leaves nothing to classify; use no_face='full_frame' to classify "
                "whole frames as the original did"
            )

    def crop(self, job: VideoJob) -> None:
        """Cut and resize the selected faces; release the full frames (unless kept)."""
        if not job.detect or job.error is not None:
            return
        t = time.perf_counter()
        sel = job.selection
        if sel is None:
            raise InvalidInputError(f"{job.name}: crop() before select()")
        job.crops = crop_selection(job.frames, sel, self.preprocessor)
        job.boxes = list(sel.boxes)
        indices = [job.frame_indices[p] for p in sel.positions]
        if job.keep_frames:
            job.kept_frames = {job.frame_indices[p]: job.frames[p] for p in sel.positions}
        job.frame_indices = indices
        job.frames = []  # release the full-size frames early
        job.timings["crop"] = time.perf_counter() - t

    def detect_and_crop(self, jobs: Sequence[VideoJob]) -> None:
        """:meth:`detect` on all ``jobs`` in shared batches, then :meth:`select` and
        :meth:`crop` each (an error in one job's selection fails that job only)."""
        self.detect(jobs)
        for job in jobs:
            if job.error is None and job.detect:
                try:
                    self.select(job)
                    self.crop(job)
                except Exception as exc:
                    job.error = error_text(exc)

    def classify(
        self, jobs: Sequence[VideoJob], extra_outputs: Sequence[str] = ()
    ) -> ClassifierOutput:
        """Per-frame logits of each job (all frames share classifier batches), plus the
        classifier's ``extra_outputs`` per job."""
        t = time.perf_counter()
        batches = [self.preprocessor(np.stack(j.crops)) for j in jobs]
        out = self.classifier.run(batches, extra_outputs)
        share = (time.perf_counter() - t) / max(sum(len(b) for b in batches), 1)
        for j, b in zip(jobs, batches):
            j.timings["classify"] = share * len(b)
        return out

    def finish(
        self,
        job: VideoJob,
        logits: np.ndarray | None,
        *,
        n: int | None,
        sampling: str | None,
    ) -> Prediction:
        """The job's :class:`Prediction` (an error record when it failed)."""
        timings = {k: round(v, 6) for k, v in job.timings.items()}
        timings["total"] = round(time.perf_counter() - job.started, 6)
        common = {
            "video": job.name,
            "seq_len": n,
            "sampling": sampling if job.source is not None else None,
            "backend": self.backend,
            "precision": self.precision,
            "model": str(self.spec.directory),
            "reduce": self.spec.reduce,
            "crop_style": self.policy.crop_style if job.detect else None,
            "timings": timings,
            "warnings": [*job.warnings, *self.notes],
        }
        if job.error is not None or logits is None:
            return Prediction(status="error", error=job.error or "not classified", **common)
        score = score_video(logits, self.spec.reduce, self.spec.labels)
        return Prediction(
            status="ok",
            label=score.label,
            confidence=score.confidence,
            p_fake=score.p_fake,
            frames=len(job.crops),
            faces=job.found,
            frame_p_fake=score.frame_p_fake,
            frame_indices=list(job.frame_indices),
            boxes=[list(b) if b else None for b in job.boxes],
            **common,
        )

    def run(
        self,
        job: VideoJob,
        *,
        n: int,
        sampling: str,
        extra_outputs: Sequence[str] = (),
        progress: Callable[[str], None] | None = None,
    ) -> tuple[Prediction, dict[str, np.ndarray]]:
        """Every stage on one job, in order; bad input raises. Returns the prediction and the
        classifier's ``extra_outputs`` for the job."""
        step = progress or (lambda _stage: None)
        if job.source is not None:
            step("decoding")
            self.decode(job, n, sampling)
        if job.detect:
            step("detecting faces")
            self.detect([job])
            self.select(job)
            self.crop(job)
        step("classifying")
        out = self.classify([job], extra_outputs)
        pred = self.finish(job, out.logits[0], n=n, sampling=sampling)
        return pred, {name: arrays[0] for name, arrays in out.extra.items()}
