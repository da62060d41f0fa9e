"""The whole video as a timeline: per-person p_fake over time, and the manipulated segments.

The original model scores each frame on its own (its LSTM runs one step per frame from a zero
state), so a per-frame score over time is exactly what it can give. :func:`build_timeline`
samples the video at ``fps`` frames per second of presentation time (:func:`time_sampler`: the
first frame at or after each multiple of ``1/fps`` s), streaming: one decoding pass in which
only the sampled frames are converted, processed in chunks of :data:`CHUNK` frames, so memory
does not grow with the video's length; what is kept per sampled frame is its faces' boxes and
logits. The face steps are the runtime's face chain (the pipeline's
:class:`preprocess.face_extraction.FaceExtractor`): it decodes (:meth:`~preprocess.
face_extraction.FaceExtractor.sample`), and its :class:`~preprocess.face_extraction.FaceStream`
detects each chunk (the detector input chosen on the first chunk) and crops every face; the
crops are classified in one batch per chunk. The face tracks (:meth:`~preprocess.
face_extraction.FaceExtractor.track`) are then formed over the whole video, and each person
present in at least :data:`MIN_TRACK_FRAMES` sampled frames gets a timeline: the calibrated
p_fake of every sampled frame (``None`` where their face is absent: a gap). The crops are the
runtime's own (the face policy's box, the model's preprocessing), so a frame's p_fake is the
one ``dfe predict`` gives for that frame.

Segments (:func:`find_segments`), per person, the documented rule:

1. smooth: the mean of the person's calibrated per-frame p_fake within ``window_s`` seconds
   centred on each frame (:data:`SMOOTH_WINDOW_S`; gaps are skipped, not filled);
2. hysteresis on the calibration's thresholds: a segment opens where the smoothed score reaches
   ``fake_at`` and closes before the first frame where it falls below ``real_below``, or at a gap
   longer than two sampling steps;
3. each kept frame stands for the sampling step around it, so a segment runs from half a step
   before its first frame to half a step after its last; segments shorter than
   :data:`MIN_SEGMENT_S` are dropped. ``score`` is the highest smoothed p_fake it reached
   (its confidence, as AV-Deepfake1M's segment lists give one).

The video's verdict takes them into account (:func:`apply_segments`): a video with a
manipulated segment is not REAL (reason ``MANIPULATED_SEGMENT``). Segments are also written in
the AV-Deepfake1M challenge's form, ``[confidence, start, end]`` per segment
(:func:`av1m_segments`).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from core.errors import InvalidInputError
from core.reduce import fake_index
from core.verdict import calibrated_p_fake

if TYPE_CHECKING:
    from engine.pipeline import VideoPipeline
    from engine.records import Prediction

#: Default sampling rate of a timeline, frames per second of presentation time.
TIMELINE_FPS = 2.0
#: Width of the moving mean that smooths a person's per-frame scores, seconds.
SMOOTH_WINDOW_S = 2.0
#: Shortest segment kept, seconds.
MIN_SEGMENT_S = 1.0
#: Fewest sampled frames a face track needs to get a timeline (2 s at the default rate).
MIN_TRACK_FRAMES = 4
#: Sampled frames decoded, detected and classified together (bounds the frames in memory).
CHUNK = 32


@dataclass(frozen=True)
class Segment:
    """An interval judged manipulated: seconds from the video's start, its confidence (the
    highest smoothed calibrated p_fake in it), and the person (face track id)."""

    start: float
    end: float
    score: float
    person: int | None

    def to_record(self) -> dict[str, Any]:
        return {
            "start": round(self.start, 3),
            "end": round(self.end, 3),
            "score": round(self.score, 6),
            "person": self.person,
        }


@dataclass
class PersonTimeline:
    """One person's timeline: per sampled frame (aligned with :attr:`Timeline.times`), the
    calibrated p_fake and the crop box, ``None`` where their face is absent."""

    track: int | None
    p_fake: list[float | None]
    boxes: list[list[int] | None]

    @property
    def frames(self) -> int:
        """Sampled frames with this person's face."""
        return sum(p is not None for p in self.p_fake)


@dataclass
class Timeline:
    """A video's timeline: the sampled frames (``indices`` in presentation order, ``times`` in
    seconds), each person's scores, the segments, and the rule's parameters."""

    fps: float
    indices: list[int] = field(default_factory=list)
    times: list[float] = field(default_factory=list)
    people: list[PersonTimeline] = field(default_factory=list)
    segments: list[Segment] = field(default_factory=list)
    rule: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    def to_record(self) -> dict[str, Any]:
        """The record's ``timeline`` object."""
        return {
            "fps": self.fps,
            "frames": len(self.indices),
            "frame_indices": list(self.indices),
            "times": [round(t, 4) for t in self.times],
            "people": [
                {
                    "track": p.track,
                    "frames": p.frames,
                    "p_fake": [None if v is None else round(v, 6) for v in p.p_fake],
                    "boxes": p.boxes,
                }
                for p in self.people
            ],
            "segments": [s.to_record() for s in self.segments],
            "rule": self.rule,
            "seconds": round(self.seconds, 3),
        }


def next_step_after(start: float, step: float, t: float, *, eps: float) -> float:
    """The first of ``start``, ``start + step``, ``start + 2 step`` ... later than ``t + eps``
    (seconds), in one step whatever the gap: a stream's epoch timestamps or a jump of hours
    must not loop once per missed step."""
    ahead = start + step * (math.floor((t + eps - start) / step) + 1)
    return ahead if ahead > t + eps else ahead + step


def time_sampler(fps: float) -> Callable[[int, float], bool]:
    """A ``keep(index, time)`` predicate for :func:`preprocess.video.sample_frames`: keeps the
    first frame at or after each multiple of ``1 / fps`` seconds (frames must come in
    presentation order). Raises :class:`InvalidInputError` for a rate that is not > 0."""
    if not (isinstance(fps, (int, float)) and math.isfinite(fps) and fps > 0):
        raise InvalidInputError(f"--timeline-fps must be a number > 0, got {fps!r}")
    step = 1.0 / fps
    state = {"next": 0.0}

    def keep(_index: int, t: float) -> bool:
        if t + 1e-6 < state["next"]:
            return False
        state["next"] = next_step_after(state["next"], step, t, eps=1e-6)
        return True

    return keep


def moving_mean(times: Sequence[float], values: Sequence[float | None], window: float) -> list:
    """The mean of the non-None ``values`` within ``window`` seconds centred on each time
    (None where the value itself is None)."""
    t = np.asarray(times, dtype=np.float64)
    present = [i for i, v in enumerate(values) if v is not None]
    pt = t[present]
    pv = np.asarray([values[i] for i in present], dtype=np.float64)
    out: list[float | None] = [None] * len(values)
    half = window / 2 + 1e-9
    for i in present:
        lo, hi = np.searchsorted(pt, t[i] - half), np.searchsorted(pt, t[i] + half, "right")
        out[i] = float(pv[lo:hi].mean())
    return out


def find_segments(
    times: Sequence[float],
    p_fake: Sequence[float | None],
    *,
    fake_at: float,
    real_below: float,
    step: float,
    window_s: float = SMOOTH_WINDOW_S,
    min_s: float = MIN_SEGMENT_S,
) -> list[tuple[float, float, float]]:
    """``(start, end, score)`` of the segments of one person's timeline (the rule of the
    module docstring). ``p_fake``: calibrated, None in the gaps; ``step``: the sampling step."""
    smooth = moving_mean(times, p_fake, window_s)
    out: list[tuple[float, float, float]] = []
    run: list[int] = []
    last: int | None = None

    def close() -> None:
        if run:
            start, end = times[run[0]] - step / 2, times[run[-1]] + step / 2
            if end - start >= min_s - 1e-9:
                score = max(float(smooth[i]) for i in run)  # type: ignore[arg-type]
                out.append((max(start, 0.0), end, score))
            run.clear()

    for i, s in enumerate(smooth):
        if s is None:
            continue
        if run and last is not None and times[i] - times[last] > 2 * step + 1e-9:
            close()  # a gap: the face was absent too long to bridge
        if run:
            if s < real_below:
                close()
            else:
                run.append(i)
        elif s >= fake_at:
            run.append(i)
        last = i
    close()
    return out


def build_timeline(
    pipeline: VideoPipeline, path: str, *, fps: float = TIMELINE_FPS, chunk: int = CHUNK
) -> Timeline:
    """The timeline of the video at ``path`` with ``pipeline``'s detector, face policy,
    classifier and calibration (see the module docstring). Raises
    :class:`InvalidInputError` for a model whose scores are not per frame (the sequence
    variant) and the decoder's errors for a video it cannot read."""
    if pipeline.classifier.head is not None:
        raise InvalidInputError(
            "a timeline needs per-frame scores; this model's LSTM runs over a video's frames "
            "(the sequence variant), so a frame has no score of its own"
        )
    t0 = time.perf_counter()
    sampler = time_sampler(fps)
    seen = {"last": 0.0}  # the last frame's time: segments end there at the latest

    def keep(index: int, t: float) -> bool:
        seen["last"] = max(seen["last"], t)
        return sampler(index, t)

    extractor = pipeline.extractor  # the runtime's face chain, so the crops are dfe predict's
    pre = extractor.preprocessor
    # detect (the input chosen on the first chunk, as dfe predict chooses on its frames) and
    # crop every face, chunk by chunk; the tracks are formed over the whole video at the end
    faces_stream = extractor.stream()
    calibration = pipeline.spec.calibration
    fake = fake_index(pipeline.spec.labels)
    timeline = Timeline(fps=float(fps))
    faces_of: list[list[Any]] = []
    sizes: list[tuple[int, ...]] = []  # each sampled frame's shape (a video may change size)
    # (frame index, detector box) -> (crop box, calibrated p_fake)
    scored: dict[tuple[int, tuple[float, ...]], tuple[list[int], float]] = {}
    batch: list[tuple[int, np.ndarray]] = []

    def flush() -> None:
        found = faces_stream.push([f for _, f in batch], [timeline.indices[p] for p, _ in batch])
        crops, keys = [], []
        for (pos, _frame), got in zip(batch, found):
            faces_of[pos] = got.faces
            for c in got.crops:
                crops.append(c.crop)
                keys.append(((got.index, tuple(c.face.box)), list(c.box)))
        if crops:
            (logits,) = pipeline.classifier.run([pre(np.stack(crops))]).logits
            z = np.asarray(logits, dtype=np.float64)
            p = calibrated_p_fake(z[:, fake] - z[:, 1 - fake], calibration.temperature)
            for (key, box), value in zip(keys, np.atleast_1d(p)):
                scored[key] = (box, float(value))
        batch.clear()

    for index, t, frame in extractor.sample(path, keep):
        timeline.indices.append(index)
        timeline.times.append(float(t))
        faces_of.append([])
        sizes.append(frame.shape)
        batch.append((len(timeline.indices) - 1, frame))
        if len(batch) >= chunk:
            flush()
    if batch:
        flush()
    tracks, _ = extractor.track(timeline.indices, faces_of, sizes)
    step = 1.0 / fps
    for track in tracks:
        if track.frames < MIN_TRACK_FRAMES:
            continue
        person = PersonTimeline(track.track_id, [], [])
        for idx in timeline.indices:
            face = track.face_at(idx)
            box, p = (None, None)
            if face is not None:
                box, p = scored.get((idx, tuple(face.box)), (None, None))
            person.p_fake.append(p)
            person.boxes.append(box)
        if not person.frames:
            continue
        timeline.people.append(person)
        for start, end, score in find_segments(
            timeline.times,
            person.p_fake,
            fake_at=calibration.fake_at,
            real_below=calibration.real_below,
            step=step,
        ):
            end = max(start, min(end, seen["last"]))  # not past the video's last frame
            timeline.segments.append(Segment(start, end, score, person.track))
    timeline.segments.sort(key=lambda s: (s.start, s.person or 0))
    timeline.rule = {
        "smoothing": f"mean over {SMOOTH_WINDOW_S} s centred on each frame",
        "opens_at": calibration.fake_at,
        "closes_below": calibration.real_below,
        "min_segment_s": MIN_SEGMENT_S,
        "gap_closes_after_s": 2 * step,
        "min_track_frames": MIN_TRACK_FRAMES,
        "calibrated": calibration.calibrated,
    }
    timeline.seconds = time.perf_counter() - t0
    return timeline


def apply_segments(pred: Prediction, timeline: Timeline) -> Prediction:
    """``pred`` with its ``timeline`` and ``segments``, its verdict taking the segments into
    account: a video with a manipulated segment is not REAL. A verdict read from the first
    frames alone (REAL, NO_FACE, or UNCERTAIN only because the score sat in the band) becomes
    FAKE with ``MANIPULATED_SEGMENT`` first; an UNCERTAIN verdict for the evidence's quality
    or an untrained model stays UNCERTAIN, with the reason added."""
    record = timeline.to_record()
    timings = dict(pred.timings)
    timings["timeline"] = round(timeline.seconds, 6)
    if "total" in timings:
        timings["total"] = round(timings["total"] + timeline.seconds, 6)
    changes: dict[str, Any] = {
        "timeline": record,
        "segments": record["segments"],
        "timings": timings,
    }
    if timeline.segments and pred.ok:
        weak = pred.verdict in ("REAL", "NO_FACE") or set(pred.reasons) <= {
            "SCORE_IN_UNCERTAIN_BAND"
        }
        if weak and pred.verdict != "FAKE":
            changes.update(verdict="FAKE", reasons=["MANIPULATED_SEGMENT"])
        elif "MANIPULATED_SEGMENT" not in pred.reasons:
            changes["reasons"] = [*pred.reasons, "MANIPULATED_SEGMENT"]
        first = timeline.segments[0]
        changes["warnings"] = [
            *pred.warnings,
            f"MANIPULATED_SEGMENT: {len(timeline.segments)} segment(s) judged manipulated, "
            f"the first {first.start:.1f}-{first.end:.1f} s (person {first.person}, mean "
            f"p_fake {first.score:.2f})",
        ]
    return dataclasses.replace(pred, **changes)


def av1m_segments(record: dict[str, Any]) -> list[list[float]]:
    """A record's segments as the AV-Deepfake1M challenge lists them: ``[confidence, start,
    end]`` (seconds), most confident first."""
    segments = (record.get("timeline") or {}).get("segments") or []
    rows = [[s["score"], s["start"], s["end"]] for s in segments]
    return sorted(rows, key=lambda r: -r[0])
