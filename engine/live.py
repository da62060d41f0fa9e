"""Live video: rolling per-person verdicts on a stream, a camera or a call, as frames arrive.

:class:`LiveStream` runs two threads joined by a bounded queue (``dfe watch``,
:meth:`engine.api.Engine.stream`):

* **the reader** opens the source and decodes every frame in presentation order (inter-coded
  video needs them all), timestamps it in *stream seconds* and keeps the frames
  :func:`engine.timeline.time_sampler` picks (the first at or after each multiple of ``1 /
  fps``); only those are converted to BGR (the same conversion as ``dfe predict``'s decoder:
  colour, deinterlacing, rotation) and put on the queue with their arrival time. Sources:
  anything FFmpeg opens as a live input (``rtsp://``, ``rtmp://``, ``srt://``, ``http(s)://``,
  ``tcp://``, ``udp://``, ...; PyAV with open and read timeouts), standard input (``-``), a
  V4L2 camera (``/dev/videoN``), a file (as fast as it decodes, or ``realtime``: frames
  released at their presentation times), or the caller's own frames (an iterator of ``(time_s,
  frame)`` or of frames with ``input_fps``).
* **the scorer** (the thread iterating the stream) takes what is queued and runs the
  runtime's face chain on it as a stream (the pipeline's
  :class:`~preprocess.face_extraction.FaceExtractor`, :meth:`~preprocess.face_extraction.
  FaceExtractor.stream`): the faces of those frames in one detector batch (the detector input
  chosen on the first batch), linked into people as they come
  (:class:`~preprocess.face_extraction.OnlineTracker`: the rule of
  :func:`preprocess.tracking.track_faces`, run over the recent frames, its links kept), every
  face cropped with the face policy; then it classifies the crops in one classifier batch (per
  face: the logits, or the features of a sequence-head model). Every
  ``hop`` seconds of stream time it gives one :class:`PersonVerdict` per person in the last
  ``window`` seconds: ``seq_len`` of the person's frames spread over the window, reduced and
  calibrated exactly as ``dfe predict`` reduces a person's frames
  (:func:`core.reduce.score_video`, the sidecar's calibration), their crops' quality
  (:func:`preprocess.quality.measure`) and :func:`core.verdict.decide`. So a line's
  ``frame_p_fake``, ``boxes`` and ``p_fake_calibrated`` are those ``Engine.predict`` gives for
  the same frames.

Guarantees: the queue holds at most ``queue`` frames. A live source (network, camera, pipe,
``realtime``, ``live=True``) never waits for the scorer: when the queue is full its oldest frame
is dropped and counted (every line carries ``dropped`` so far). A file or the caller's frames
wait instead (nothing dropped). The scorer keeps the crops and scores of the last ``window``
seconds and the detections of the last :data:`TRACK_HISTORY_S` seconds (at most
:data:`TRACK_HISTORY_FRAMES`), never frames, so memory stays flat however long the stream
runs; latency statistics are over the last :data:`LATENCY_SAMPLES` lines. A network source that
drops is reopened with back-off (1 s, 2 s, 4 s, ... up to ``reconnect_max_s``, at most
``reconnect`` attempts in a row); each drop and reconnection is an event with the gap in
seconds. The stream ends with a :class:`StreamSummary` at the end of the source, on
:meth:`LiveStream.stop` (``dfe watch``: SIGINT, SIGTERM), or when a dropped source cannot be
reopened.
"""

from __future__ import annotations

import errno
import logging
import math
import os
import re
import sys
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from core.classifier import FEATURES, LOGITS
from core.errors import ArtifactNotFoundError, EngineError, InvalidInputError
from core.reduce import fake_index, score_video
from core.verdict import VERDICTS, decide, logit_margin
from engine.allocator import release_free_memory
from engine.timeline import next_step_after, time_sampler
from preprocess.face_extraction import TRACK_HISTORY_FRAMES

if TYPE_CHECKING:
    from engine.pipeline import VideoPipeline
    from preprocess.face_extraction import FaceStream
    from preprocess.scrfd import Face

log = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_FPS",
    "DEFAULT_HOP_S",
    "DEFAULT_QUEUE",
    "DEFAULT_RECONNECT",
    "DEFAULT_WINDOW_S",
    "LIVE_SEQ_LEN",
    "LiveOptions",
    "LiveStream",
    "Notice",
    "PersonVerdict",
    "StreamSummary",
    "source_kind",
]

#: Frames scored per second of stream time.
DEFAULT_FPS = 4.0
#: Seconds of stream time a verdict looks back over.
DEFAULT_WINDOW_S = 4.0
#: Seconds of stream time between two rounds of verdicts.
DEFAULT_HOP_S = 1.0
#: Frames per verdict when neither ``seq_len`` nor the model says.
LIVE_SEQ_LEN = 8
#: Sampled frames the queue between the reader and the scorer holds (1 s at the default rate).
DEFAULT_QUEUE = 4
#: Seconds FFmpeg waits to open a network source, and for its next data.
DEFAULT_TIMEOUT_S = 10.0
#: Attempts in a row to reopen a dropped network source.
DEFAULT_RECONNECT = 5
#: The longest wait between two attempts (the back-off doubles from 1 s up to this).
DEFAULT_RECONNECT_MAX_S = 30.0
#: Seconds of detections the tracker links new faces against, and at most
#: :data:`~preprocess.face_extraction.TRACK_HISTORY_FRAMES` (64) sampled frames of them.
TRACK_HISTORY_S = 10.0
#: Lines whose latency the summary's median and p95 are computed over (the most recent).
LATENCY_SAMPLES = 10_000
#: URL schemes read as network sources (reopened when they drop).
NETWORK_SCHEMES = frozenset(
    ("rtsp", "rtsps", "rtmp", "rtmps", "rtmpt", "rtmpe", "rtmpte", "rtmpts", "srt", "http",
     "https", "tcp", "tls", "udp", "udplite", "rtp", "srtp", "mms", "mmsh", "mmst", "rist",
     "hls", "ftp", "sftp", "unix", "gopher", "gophers", "ipfs", "ipns")
)  # fmt: skip
FACES = ("all", "main")
END_REASONS = ("eof", "stopped", "source_lost", "error")


# --------------------------------------------------------------------------- options


#: Bounds of the options: a verdict at most every 0.1 s, a window of at most 10 minutes (its
#: frames are held in memory), at most 120 frames scored per second, 256 frames queued.
MIN_HOP_S = 0.1
MAX_WINDOW_S = 600.0
MAX_FPS = 120.0
MAX_QUEUE = 256


@dataclass(frozen=True)
class LiveOptions:
    """How a live stream is read and scored (``dfe watch``'s flags; see the module docstring).

    ``fps``: frames scored per second of stream time; ``window``: seconds a verdict looks back
    over; ``hop``: seconds between verdicts; ``seq_len``: frames per verdict, spread over the
    window (None: the model's N, else :data:`LIVE_SEQ_LEN`); ``queue``: frames the reader may
    hold ahead of the scorer; ``realtime``: release a file's frames at their presentation times;
    ``live``: drop frames when behind (None: for network, camera, pipe and ``realtime``
    sources); ``reconnect``: attempts in a row to reopen a dropped network source, waiting 1, 2,
    4 ... s up to ``reconnect_max_s``; ``timeout``: seconds FFmpeg waits to open and for data;
    ``format``: FFmpeg's input format (``v4l2``, ``mpegts``; None: guessed); ``ffmpeg_options``:
    FFmpeg input options (``{"rtsp_transport": "tcp"}``); ``input_fps``: the rate of a
    caller's bare frames; ``faces``: ``all`` (one line per person) or ``main`` (the person
    present most)."""

    fps: float = DEFAULT_FPS
    window: float = DEFAULT_WINDOW_S
    hop: float = DEFAULT_HOP_S
    seq_len: int | None = None
    queue: int = DEFAULT_QUEUE
    realtime: bool = False
    live: bool | None = None
    reconnect: int = DEFAULT_RECONNECT
    reconnect_max_s: float = DEFAULT_RECONNECT_MAX_S
    timeout: float = DEFAULT_TIMEOUT_S
    format: str | None = None
    ffmpeg_options: Mapping[str, str] = field(default_factory=dict)
    input_fps: float | None = None
    faces: str = "all"

    def __post_init__(self) -> None:
        for name in ("fps", "window", "hop", "timeout", "reconnect_max_s"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise InvalidInputError(f"{name} must be a number > 0, got {value!r}")
            if not (math.isfinite(value) and value > 0):
                raise InvalidInputError(f"{name} must be a number > 0, got {value!r}")
        if self.input_fps is not None and not (
            isinstance(self.input_fps, (int, float))
            and not isinstance(self.input_fps, bool)
            and math.isfinite(self.input_fps)
            and self.input_fps > 0
        ):
            raise InvalidInputError(f"input_fps must be a number > 0, got {self.input_fps!r}")
        for name, low in (("queue", 1), ("reconnect", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise InvalidInputError(f"{name} must be an integer >= {low}, got {value!r}")
        if self.seq_len is not None and (
            isinstance(self.seq_len, bool) or not isinstance(self.seq_len, int) or self.seq_len < 1
        ):
            raise InvalidInputError(f"seq_len must be a positive integer, got {self.seq_len!r}")
        for name, low, high in (
            ("hop", MIN_HOP_S, MAX_WINDOW_S),
            ("window", MIN_HOP_S, MAX_WINDOW_S),
            ("fps", 0.0, MAX_FPS),
        ):
            value = getattr(self, name)
            if not (low <= value <= high):
                raise InvalidInputError(
                    f"{name} must be between {low:g} and {high:g}, got {value!r} (a verdict per "
                    f"hop, over a window whose frames are held in memory)"
                )
        if self.queue > MAX_QUEUE:
            raise InvalidInputError(
                f"queue must be at most {MAX_QUEUE} (frames held in memory), got {self.queue}"
            )
        if self.window < self.hop:
            raise InvalidInputError(
                f"window ({self.window} s) must be at least hop ({self.hop} s): every frame "
                "scored should count in some verdict"
            )
        if self.faces not in FACES:
            raise InvalidInputError(
                f"faces={self.faces!r} is not supported live; supported values are "
                f"{', '.join(FACES)} (live video follows people as tracks, so the per-frame rule "
                "does not apply)"
            )
        if not isinstance(self.ffmpeg_options, Mapping):
            raise InvalidInputError(
                "ffmpeg_options must be a mapping of option names to values, e.g. "
                f"{{'rtsp_transport': 'tcp'}}, got {type(self.ffmpeg_options).__name__}"
            )
        for key, value in self.ffmpeg_options.items():
            if not isinstance(key, str) or not key.strip() or "\0" in key:
                raise InvalidInputError(
                    f"an FFmpeg option needs a name (text, not empty, no NUL), got {key!r}"
                )
            if (
                isinstance(value, bool)
                or not isinstance(value, (str, int, float))
                or (isinstance(value, str) and "\0" in value)
            ):
                raise InvalidInputError(
                    f"FFmpeg option {key!r} needs a text (without NUL) or number value (FFmpeg "
                    f"reads text: '1', 'tcp'), got {type(value).__name__}"
                )


def parse_ffmpeg_options(pairs: Iterable[str]) -> dict[str, str]:
    """``["KEY=VALUE", ...]`` (``dfe watch --option``) as a dict; raises InvalidInputError
    for a pair without ``=`` or a name given twice."""
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise InvalidInputError(
                f"--option takes KEY=VALUE (an FFmpeg input option, e.g. rtsp_transport=tcp), "
                f"got {pair!r}"
            )
        if key in out:  # one would silently win
            raise InvalidInputError(f"--option {key} is given twice: give it once")
        out[key] = value
    return out


# --------------------------------------------------------------------------- events


@dataclass(frozen=True)
class Notice:
    """A line that is not a verdict: ``start`` (the settings), ``opened`` (the source, with
    its format, codec and size), ``disconnected``, ``retry``, ``reconnected`` (with
    ``gap_s``)."""

    event: str
    data: dict[str, Any]

    def to_record(self) -> dict[str, Any]:
        return {"event": self.event, **self.data}


@dataclass(frozen=True)
class PersonVerdict:
    """One person's verdict over the window that ends at stream time ``time`` (``track``
    None and ``NO_FACE`` when nobody was in it). ``start``/``end``: the stream times of the
    first and last frame used; ``frame_indices`` (0-based, in the order frames were decoded,
    counted across reconnections), ``frame_times``, ``boxes`` (crop boxes in frame pixels) and
    ``frame_p_fake`` (as ``dfe predict``'s) per frame used; ``present``: the window's sampled
    frames with this person's face, of ``sampled``; ``latency_ms``: from the arrival of the
    window's newest frame (the one that closed the hop, at ``time``) to this line;
    ``read``/``dropped``: frames read and dropped so far."""

    source: str
    time: float
    track: int | None
    verdict: str
    reasons: tuple[str, ...]
    p_fake_calibrated: float | None
    p_fake: float | None
    label: str | None
    confidence: float | None
    frames: int
    present: int
    sampled: int
    start: float | None
    end: float | None
    frame_indices: list[int]
    frame_times: list[float]
    boxes: list[list[int]]
    frame_p_fake: list[float]
    quality: dict[str, Any] | None
    latency_ms: float
    read: int
    dropped: int
    wall: float
    event: str = "verdict"

    def to_record(self) -> dict[str, Any]:
        """The ``dfe watch`` line (times rounded to the millisecond)."""
        return {
            "event": self.event,
            "source": self.source,
            "time": round(self.time, 3),
            "track": self.track,
            "verdict": self.verdict,
            "reasons": list(self.reasons),
            "p_fake_calibrated": _round(self.p_fake_calibrated),
            "p_fake": _round(self.p_fake),
            "label": self.label,
            "confidence": self.confidence,
            "frames": self.frames,
            "present": self.present,
            "sampled": self.sampled,
            "start": None if self.start is None else round(self.start, 3),
            "end": None if self.end is None else round(self.end, 3),
            "frame_indices": list(self.frame_indices),
            "frame_times": [round(t, 3) for t in self.frame_times],
            "boxes": [list(b) for b in self.boxes],
            "frame_p_fake": list(self.frame_p_fake),
            "quality": self.quality,
            "latency_ms": round(self.latency_ms, 2),
            "read": self.read,
            "dropped": self.dropped,
            "wall": round(self.wall, 3),
        }


@dataclass(frozen=True)
class StreamSummary:
    """The last line: why the stream ended (``end``: ``eof``, ``stopped``, ``source_lost`` or
    ``error``, with ``error``), the frames read, sampled, scored and dropped, the people seen,
    the lines per verdict, the latency (median, p95, max over the last
    :data:`LATENCY_SAMPLES` lines, ms), reconnections, and the most frames the queue and the
    window buffer held."""

    source: str
    end: str
    error: str | None
    seconds: float
    stream_s: float | None
    frames_read: int
    frames_sampled: int
    frames_scored: int
    frames_dropped: int
    people: int
    lines: int
    verdicts: dict[str, int]
    latency_ms: dict[str, float | None]
    reconnections: int
    queue: int
    queue_max: int
    buffer_max: int
    event: str = "summary"

    def to_record(self) -> dict[str, Any]:
        return {
            "event": self.event,
            "source": self.source,
            "end": self.end,
            "error": self.error,
            "seconds": round(self.seconds, 3),
            "stream_s": None if self.stream_s is None else round(self.stream_s, 3),
            "frames_read": self.frames_read,
            "frames_sampled": self.frames_sampled,
            "frames_scored": self.frames_scored,
            "frames_dropped": self.frames_dropped,
            "people": self.people,
            "lines": self.lines,
            "verdicts": dict(self.verdicts),
            "latency_ms": dict(self.latency_ms),
            "reconnections": self.reconnections,
            "queue": self.queue,
            "queue_max": self.queue_max,
            "buffer_max": self.buffer_max,
        }


LiveEvent = Notice | PersonVerdict | StreamSummary


def _round(value: float | None) -> float | None:
    return None if value is None else round(float(value), 6)


# --------------------------------------------------------------------------- the queue


@dataclass
class LiveFrame:
    """A sampled frame on its way to the scorer: its index (decode order), stream time, BGR
    pixels and arrival (``time.monotonic()`` when the reader had it)."""

    index: int
    time: float
    image: np.ndarray
    arrival: float


@dataclass(frozen=True)
class _End:
    reason: str
    error: BaseException | None = None


class FrameQueue:
    """The bounded queue between the reader and the scorer: at most ``capacity`` frames (the
    source's notices travel in it too, in order, and are never dropped). A live source's
    :meth:`put` drops the oldest frame when full (``dropped`` counts them); otherwise it waits
    for room."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._items: deque[Any] = deque()
        self._frames = 0
        self._cond = threading.Condition()
        self.dropped = 0
        self.high_water = 0

    def put(self, frame: LiveFrame, *, drop: bool, stop: threading.Event) -> None:
        with self._cond:
            while self._frames >= self.capacity:
                if drop:
                    for k, item in enumerate(self._items):
                        if isinstance(item, LiveFrame):
                            del self._items[k]
                            break
                    self._frames -= 1
                    self.dropped += 1
                    break
                if stop.is_set():
                    return
                self._cond.wait(0.1)
            self._items.append(frame)
            self._frames += 1
            self.high_water = max(self.high_water, self._frames)
            self._cond.notify_all()

    def put_notice(self, item: Notice | _End) -> None:
        with self._cond:
            self._items.append(item)
            self._cond.notify_all()

    def take(self, timeout: float) -> list[Any]:
        """Everything queued (waiting up to ``timeout`` s for something)."""
        with self._cond:
            if not self._items:
                self._cond.wait(timeout)
            items = list(self._items)
            self._items.clear()
            self._frames = 0
            self._cond.notify_all()
            return items


# --------------------------------------------------------------------------- sources


def source_kind(source: Any) -> str:
    """``network``, ``pipe`` (``-``), ``device`` (``/dev/video*``), ``file`` or ``frames``
    (anything else: the caller's iterator)."""
    if isinstance(source, (str, os.PathLike)):
        text = os.fspath(source)
        if text == "-":
            return "pipe"
        scheme, sep, _ = text.partition("://")
        if sep and scheme.lower() in NETWORK_SCHEMES:
            return "network"
        if text.startswith("/dev/video"):
            return "device"
        return "file"
    return "frames"


class SourceOpenError(EngineError, OSError):
    """A source that could not be opened (or reopened). ``retry``: whether opening again may
    help (False for what cannot change: a missing protocol, an argument FFmpeg refuses)."""

    def __init__(self, message: str, *, retry: bool = True) -> None:
        super().__init__(message)
        self.retry = retry


@dataclass
class _ReadState:
    """What the reader counts (written by the reader thread, read by the scorer)."""

    read: int = 0
    sampled: int = 0
    reconnections: int = 0
    last_time: float | None = None


class _Reader:
    """Decodes a source in a thread and feeds the queue (see the module docstring)."""

    def __init__(
        self,
        source: Any,
        kind: str,
        opts: LiveOptions,
        queue: FrameQueue,
        stop: threading.Event,
        *,
        colour: str,
        deinterlace: str,
        threads: int,
    ) -> None:
        if kind == "frames" and (opts.ffmpeg_options or opts.format):
            raise InvalidInputError(
                "ffmpeg_options and format are for sources FFmpeg opens (a URL, a file, a "
                "camera, standard input), not for frames the caller gives"
            )
        self.source, self.kind, self.opts = source, kind, opts
        self.name = _source_name(source, kind)
        self.queue, self.stop = queue, stop
        self.colour, self.deinterlace, self.threads = colour, deinterlace, threads
        #: whether frames are dropped when the scorer is behind (else the reader waits)
        self.live = (
            opts.live
            if opts.live is not None
            else (opts.realtime or kind not in ("file", "frames"))
        )
        self.state = _ReadState()
        self.keep = time_sampler(opts.fps)
        self.thread = threading.Thread(target=self._run, name="dfe-live-reader", daemon=True)

    def _run(self) -> None:
        frames = self._iter_frames() if self.kind == "frames" else self._av_frames()
        try:
            for item in frames:
                self.state.sampled += 1
                self.queue.put(item, drop=self.live, stop=self.stop)
                if self.stop.is_set():
                    break
            self.queue.put_notice(_End("stopped" if self.stop.is_set() else "eof"))
        except _SourceLost as lost:
            self.queue.put_notice(_End("source_lost", lost.cause))
        except BaseException as exc:  # the scorer reports it
            self.queue.put_notice(_End("error", exc))
        finally:
            frames.close()

    def _notice(self, event: str, **data: Any) -> None:
        self.queue.put_notice(Notice(event, {"source": self.name, **data}))

    # ----- the caller's frames

    def _iter_frames(self) -> Iterator[LiveFrame]:
        opts = self.opts
        pace = _Pacer(self.stop) if opts.realtime else None
        try:
            iterator = iter(self.source)
        except TypeError:
            raise InvalidInputError(
                "stream() takes a source (URL, device, '-', file) or an iterator of "
                f"(time_s, HxWx3 uint8 BGR frame) or of frames, got {type(self.source).__name__}"
            ) from None
        last = origin = None
        for i, item in enumerate(iterator):
            if self.stop.is_set():
                return
            if isinstance(item, np.ndarray):
                if opts.input_fps is None:
                    raise InvalidInputError(
                        "stream() got bare frames: pass input_fps= (their rate), or yield "
                        "(time_s, frame) pairs"
                    )
                t, image = i / opts.input_fps, item
            else:
                try:
                    t, image = item
                    t = float(t)
                except (TypeError, ValueError):
                    raise InvalidInputError(
                        f"frame {i}: expected a (time_s, frame) pair or an HxWx3 uint8 BGR "
                        f"array, got {type(item).__name__}"
                    ) from None
            if not (
                isinstance(image, np.ndarray)
                and image.ndim == 3
                and image.shape[2] == 3
                and image.dtype == np.uint8
            ):
                raise InvalidInputError(
                    f"frame {i}: expected an HxWx3 uint8 BGR array, got "
                    f"{getattr(image, 'shape', type(image).__name__)} {getattr(image, 'dtype', '')}"
                )
            if not math.isfinite(t) or (last is not None and t < last):
                raise InvalidInputError(
                    f"frame {i}: times must be finite and not decrease, got {t} after {last}"
                )
            last = t
            if origin is None:  # stream seconds start at 0 with the first frame (epoch or
                origin = t  # negative times as given by a call's clock)
            t -= origin
            if pace is not None:
                pace.wait(t)
            self.state.read += 1
            self.state.last_time = t
            if self.keep(i, t):
                yield LiveFrame(i, t, np.ascontiguousarray(image), time.monotonic())

    # ----- FFmpeg sources

    def _open(self, av: Any) -> Any:
        opts = self.opts
        fmt = opts.format or ("v4l2" if self.kind == "device" else None)
        url = "pipe:0" if self.kind == "pipe" else os.fspath(self.source)
        from preprocess.video.ffmpeg_options import check_input_options, missing_protocol

        # a name FFmpeg does not know would be ignored by it: refused here, before connecting
        check_input_options(av, opts.ffmpeg_options, f"{self.name} (--option, ffmpeg_options)")
        if self.kind == "network" and (missing := missing_protocol(av, url)):
            raise SourceOpenError(f"{self.name} cannot be opened: {missing}", retry=False)
        try:
            container = av.open(
                url,
                format=fmt,
                options={str(k): str(v) for k, v in opts.ffmpeg_options.items()},
                timeout=(opts.timeout, opts.timeout),
                metadata_errors="ignore",
            )
        except UnicodeError as exc:  # (before ValueError, which it is) text FFmpeg cannot take
            raise SourceOpenError(
                f"{self.name} cannot be opened: the URL or an --option value "
                f"({', '.join(opts.ffmpeg_options) or 'none given'}) is not valid text ({exc})",
                retry=False,
            ) from exc
        except (av.error.FFmpegError, OSError) as exc:
            # (before ValueError: PyAV's ArgumentError, FFmpeg's EINVAL, is both)
            # an argument FFmpeg refuses (EINVAL, ERANGE) is refused again: not retried
            refused = getattr(exc, "errno", None) in (errno.EINVAL, errno.ERANGE)
            hints = []
            if self.kind == "network":
                hints.append("is the server up and the URL right? (--timeout sets the wait)")
            if opts.ffmpeg_options and refused:
                # FFmpeg says the same for a value it refuses; the values may hold secrets
                names = ", ".join(opts.ffmpeg_options)
                hints.append(f"if an option value is the cause, check --option {names}")
            raise SourceOpenError(
                f"{self.name} cannot be opened: FFmpeg/PyAV says "
                f"{getattr(exc, 'strerror', None) or exc!s}" + "".join(f"; {h}" for h in hints),
                retry=not refused,
            ) from exc
        except ValueError as exc:  # PyAV: an input format FFmpeg does not have
            raise SourceOpenError(
                f"{self.name} cannot be opened: {exc} (--format takes an FFmpeg demuxer name: "
                "`ffmpeg -demuxers` lists them)",
                retry=False,
            ) from exc
        videos = list(container.streams.video)
        if not videos:
            container.close()
            raise SourceOpenError(f"{self.name} has no video stream")
        stream = videos[0]
        stream.codec_context.thread_type = "AUTO"
        stream.codec_context.thread_count = self.threads
        return container

    def _connect(self, av: Any, *, first: bool) -> Any:
        """Open the source. A network source is retried with back-off (1, 2, 4 ... s, capped
        at ``reconnect_max_s``), at most ``reconnect`` times in a row; after a drop the first
        attempt comes after 1 s. Returns None when stopped while waiting; raises the open error
        (never opened) or :class:`_SourceLost` (dropped) when the attempts are spent."""
        retries = self.opts.reconnect if self.kind == "network" else 0
        attempt = 0 if first else 1
        while True:
            if attempt:
                delay = min(2.0 ** (attempt - 1), self.opts.reconnect_max_s)
                self._notice("retry", attempt=attempt, of=retries, wait_s=delay)
                if self.stop.wait(delay):
                    return None
            try:
                return self._open(av)
            except SourceOpenError as exc:
                if attempt >= retries or not exc.retry:
                    if first:
                        raise
                    raise _SourceLost(exc) from exc
                log.info("%s", exc)
                attempt += 1

    def _av_frames(self) -> Iterator[LiveFrame]:
        from core.deps import require

        require("av", purpose="reading live video (PyAV)")
        import av

        from preprocess.colour import Deinterlacer, FrameConverter

        state = self.state
        pace = _Pacer(self.stop) if self.opts.realtime else None
        index = 0
        offset = 0.0
        last_t: float | None = None
        last_wall: float | None = None
        first = True
        while not self.stop.is_set():
            container = self._connect(av, first=first)
            if container is None:
                return
            stream = container.streams.video[0]
            ctx = stream.codec_context
            info = {
                "kind": self.kind,
                "format": container.format.name,
                "codec": ctx.name,
                "width": ctx.width,
                "height": ctx.height,
                "rate": float(stream.average_rate or stream.guessed_rate or 0) or None,
            }
            if first:
                self._notice("opened", **info)
            else:
                state.reconnections += 1
                # the gap: the wall-clock seconds since the last frame read
                gap = time.monotonic() - last_wall if last_wall is not None else None
                self._notice("reconnected", time=_r3(last_t), gap_s=_r3(gap), **info)
            first = False
            converter = FrameConverter(av, self.colour, self.name)
            deinterlacer = Deinterlacer(
                av, self.deinterlace, self.name, field_order=ctx.field_order, codec=ctx.name
            )
            reformatter = av.video.reformatter.VideoReformatter()
            rate = info["rate"] or 25.0
            times: dict[int, float] = {}
            seg_raw: float | None = None
            seg_count = 0
            reason = "end of stream"

            try:
                try:
                    for frame in _decoded(container, stream, av):
                        if self.stop.is_set():
                            break
                        now = time.monotonic()
                        raw = _frame_time(frame, stream)
                        if raw is None:  # no timestamp: the stream's rate from the segment start
                            raw = (seg_raw or 0.0) + seg_count / rate
                        if seg_raw is None:
                            seg_raw = raw
                            if last_t is not None and last_wall is not None:
                                # after a reconnection, stream time goes on by the wall-clock gap
                                offset = last_t + max(now - last_wall, 1.0 / rate)
                        t = offset + (raw - seg_raw)
                        if last_t is not None and t <= last_t:
                            # timestamps went back (a restart, a wrap): go on from the last frame
                            seg_raw, offset = raw, last_t + 1.0 / rate
                            t = offset
                        seg_count += 1
                        if pace is not None:
                            pace.wait(t)
                        target = self.keep(index, t)
                        if target:
                            times[index] = t
                        for j, f in deinterlacer.feed(index, frame, target):
                            yield LiveFrame(
                                j,
                                times.pop(j, t),
                                _to_bgr(f, converter, reformatter),
                                time.monotonic(),
                            )
                        state.read += 1
                        state.last_time = t
                        last_t, last_wall = t, now
                        index += 1
                except av.error.FFmpegError as exc:
                    reason = f"FFmpeg/PyAV says {exc}"
                for j, f in deinterlacer.finish():
                    yield LiveFrame(
                        j,
                        times.pop(j, last_t or 0.0),
                        _to_bgr(f, converter, reformatter),
                        time.monotonic(),
                    )
            finally:
                deinterlacer.close()
                converter.close()
                container.close()
            if self.stop.is_set() or self.kind != "network" or self.opts.reconnect == 0:
                if reason != "end of stream":
                    log.warning("%s: reading ended early: %s", self.name, reason)
                return
            self._notice("disconnected", time=_r3(last_t), reason=reason)


def _frame_time(frame: Any, stream: Any) -> float | None:
    """``frame``'s presentation time in seconds (its pts in the stream's time base: frames
    flushed from the decoder at the end carry no time base of their own), or None."""
    pts = frame.pts
    base = frame.time_base or stream.time_base
    if pts is None or base is None:
        return None
    t = float(pts * base)
    return t if math.isfinite(t) else None


def _to_bgr(frame: Any, converter: Any, reformatter: Any) -> np.ndarray:
    """``frame`` as upright BGR uint8, as ``dfe predict``'s decoder makes it: the display
    rotation (rounded to a right angle, clockwise), the colour conversion, then swscale's
    bicubic to ``bgr24`` on one thread."""
    quarter = round(((-float(getattr(frame, "rotation", 0) or 0)) % 360.0) / 90.0) % 4
    frame = converter(frame)
    image = reformatter.reformat(
        frame, format="bgr24", interpolation="BICUBIC", threads=1
    ).to_ndarray()
    if quarter:
        image = np.rot90(image, k=-quarter)
    return np.ascontiguousarray(image)


class _SourceLost(Exception):
    def __init__(self, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.cause = cause


def _decoded(container: Any, stream: Any, av: Any) -> Iterator[Any]:
    """Every decoded frame of ``stream``, in presentation order. A packet that fails to decode
    is skipped (as FFmpeg's CLI does); a demux error (the connection reset, the read timeout)
    ends the connection: it is raised."""
    for packet in container.demux(stream):
        if packet.size == 0:
            continue
        try:
            frames = stream.codec_context.decode(packet)
        except av.error.EOFError:
            return
        except av.error.FFmpegError as exc:
            log.debug("a packet failed to decode: %s", exc)
            continue
        yield from frames
    try:
        yield from stream.codec_context.decode(None)
    except av.error.FFmpegError:
        return


class _Pacer:
    """Releases frames at their presentation times (``realtime``), from the first one on."""

    def __init__(self, stop: threading.Event) -> None:
        self.stop = stop
        self.start: tuple[float, float] | None = None  # (stream time, monotonic)

    def wait(self, t: float) -> None:
        if self.start is None:
            self.start = (t, time.monotonic())
            return
        delay = self.start[1] + (t - self.start[0]) - time.monotonic()
        if delay > 0:
            self.stop.wait(delay)


def _local_path(text: str) -> str:
    """The path of a ``file:`` URL (FFmpeg's file protocol: ``file:///a/b.mp4`` or
    ``file:b.mp4``), else ``text``."""
    if text.startswith("file:"):
        from urllib.parse import unquote, urlsplit

        return unquote(urlsplit(text).path) if text.startswith("file://") else text[5:]
    return text


#: Query parameters whose values are hidden in a source's name (tokens, keys, passwords).
_SECRET_QUERY = re.compile(r"(?i)(token|key|pass|pwd|secret|auth|sig|signature|credential)")


def redact_url(url: str) -> str:
    """``url`` with its password (``rtsp://user:PASSWORD@host``) and the values of query
    parameters named like secrets (``?token=...``, ``sig``, ``key``...) replaced by ``***``:
    a source's name goes into every line, log and error, and a camera's password must not."""
    from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, host = netloc.rpartition("@")
        user, sep, _password = userinfo.partition(":")
        netloc = f"{user}{':***' if sep else ''}@{host}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(_SECRET_QUERY.search(k) for k, _ in pairs):
            query = urlencode(
                [(k, "***" if _SECRET_QUERY.search(k) else v) for k, v in pairs], safe="*/:"
            )
    return urlunsplit(parts._replace(netloc=netloc, query=query))


def _source_name(source: Any, kind: str) -> str:
    if kind == "frames":
        return "<frames>"
    if kind == "pipe":
        return "<stdin>"
    return redact_url(os.fspath(source)) if kind == "network" else os.fspath(source)


def _r3(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


# --------------------------------------------------------------------------- scoring


@dataclass
class _Face:
    pid: int
    face: Face
    box: tuple[int, int, int, int]
    crop: np.ndarray
    row: np.ndarray  # logits, or features for a sequence-head model


@dataclass
class _Scored:
    index: int
    time: float
    arrival: float
    faces: list[_Face]


class _Scorer:
    """Detect, track and crop each batch of frames (the pipeline's face chain as a stream:
    :class:`preprocess.face_extraction.FaceStream`), classify the crops; a verdict per person
    per hop."""

    def __init__(self, pipeline: VideoPipeline, opts: LiveOptions, name: str) -> None:
        self.pipeline = pipeline
        self.opts = opts
        self.name = name
        spec = pipeline.spec
        self.n = opts.seq_len or spec.seq_len or LIVE_SEQ_LEN
        self.fake = fake_index(spec.labels)
        self.runner = pipeline.classifier
        self.window: deque[_Scored] = deque()
        self.buffer_max = 0
        # the runtime's face chain (detector, input choice, policy, crops), scoring opts.faces;
        # the detector input is chosen on the first batch, as the timeline does
        self.chain: FaceStream = pipeline.extractor.replace(faces=opts.faces).stream(
            track_history=max(2, min(TRACK_HISTORY_FRAMES, math.ceil(opts.fps * TRACK_HISTORY_S)))
        )
        self.next_hop: float | None = None
        self.last_hop: float | None = None
        self.scored = 0
        self.people = 0  # people who got a line
        self._counted: set[int] = set()  # of them, those the tracker may still continue

    def add(self, batch: list[LiveFrame]) -> list[_Scored]:
        """Faces, crops, scores and person ids of ``batch`` (frames in order)."""
        found = self.chain.push([f.image for f in batch], [f.index for f in batch])
        crops = [c for got in found for c in got.crops]
        rows = iter(self._rows([c.crop for c in crops]) if crops else [])
        out = [_Scored(f.index, f.time, f.arrival, []) for f in batch]
        for scored, got in zip(out, found):
            for c in got.crops:
                assert c.track is not None  # the stream tracks: every face has its person id
                scored.faces.append(_Face(c.track, c.face, c.box, c.crop, next(rows)))
        self.scored += len(batch)
        return out

    def _rows(self, crops: list[np.ndarray]) -> list[np.ndarray]:
        x = self.pipeline.preprocessor(np.stack(crops))
        if self.runner.head is None:
            (logits,) = self.runner.run([x]).logits
            return list(np.asarray(logits))
        out = self.runner.run([x], (FEATURES,))
        return list(np.asarray(out.extra[FEATURES][0]))

    def _logits(self, rows: np.ndarray) -> np.ndarray:
        """Per-frame logits of one person's frames (the sequence head over their features)."""
        if self.runner.head is None:
            return rows
        (steps,) = self.runner.head.run([LOGITS], {FEATURES: rows[None].astype(np.float32)})
        return np.asarray(steps)[0]

    def push(self, frame: _Scored) -> bool:
        """Keep ``frame`` in the window; whether a hop ends with it."""
        self.window.append(frame)
        while self.window and self.window[0].time <= frame.time - self.opts.window + 1e-9:
            self.window.popleft()
        self.buffer_max = max(self.buffer_max, len(self.window))
        if self.next_hop is None:
            self.next_hop = frame.time + self.opts.hop
            return False
        if frame.time + 1e-9 < self.next_hop:
            return False
        self.next_hop = next_step_after(self.next_hop, self.opts.hop, frame.time, eps=1e-9)
        return True

    def pending(self) -> bool:
        """Whether frames came after the last hop (a last verdict is due at the end)."""
        return bool(self.window) and (
            self.last_hop is None or self.window[-1].time > self.last_hop + 1e-9
        )

    def verdicts(self, read: int, dropped: int) -> list[PersonVerdict]:
        """One verdict per person in the window (or one NO_FACE line when nobody is)."""
        from preprocess.quality import measure
        from preprocess.sampling import sample_indices
        from preprocess.tracking import Track

        release_free_memory()  # at most every 30 s: a long watch's heap stays flat
        spec, pre = self.pipeline.spec, self.pipeline.preprocessor
        calibration = spec.calibration
        newest = self.window[-1]
        self.last_hop = newest.time
        sampled = len(self.window)
        by_person: dict[int, list[tuple[_Scored, _Face]]] = {}
        for frame in self.window:
            for face in frame.faces:
                by_person.setdefault(face.pid, []).append((frame, face))
        tracks = [
            Track(pid, tuple(f.index for f, _ in items), tuple(x.face for _, x in items))
            for pid, items in sorted(by_person.items())
        ]
        chosen = self.chain.extractor.scored_tracks(tracks, sampled)  # opts.faces: main, all
        common = {"source": self.name, "time": newest.time, "sampled": sampled,
                  "read": read, "dropped": dropped}  # fmt: skip
        if not chosen:
            return [
                PersonVerdict(
                    track=None,
                    verdict="NO_FACE",
                    reasons=("NO_FACE_DETECTED",),
                    p_fake_calibrated=None,
                    p_fake=None,
                    label=None,
                    confidence=None,
                    frames=0,
                    present=0,
                    start=None,
                    end=None,
                    frame_indices=[],
                    frame_times=[],
                    boxes=[],
                    frame_p_fake=[],
                    quality=None,
                    wall=time.time(),
                    latency_ms=(time.monotonic() - newest.arrival) * 1000,
                    **common,
                )
            ]
        out = []
        for track in chosen:
            items = by_person[track.track_id]
            used = [items[k] for k in sample_indices(len(items), self.n, "uniform")]
            logits = self._logits(np.stack([x.row for _, x in used]))
            score = score_video(logits, spec.reduce, spec.labels)
            p_cal = calibration.p_fake(logit_margin(score.logits, self.fake))
            boxes = [x.box for _, x in used]
            quality = measure(
                [x.crop for _, x in used],
                boxes,
                keypoints=[x.face.kps for _, x in used],
                input_size=pre.size,
            )
            verdict = decide(
                p_cal,
                found=len(used),
                calibration=calibration,
                quality_reasons=quality.reasons(),
                untrained=bool(spec.demo),
            )
            if track.track_id not in self._counted:
                self._counted.add(track.track_id)
                self.people += 1
            out.append(
                PersonVerdict(
                    track=track.track_id,
                    verdict=verdict.verdict,
                    reasons=tuple(verdict.reasons),
                    p_fake_calibrated=p_cal,
                    p_fake=score.p_fake,
                    label=score.label,
                    confidence=round(score.confidence, 4),
                    frames=len(used),
                    present=len(items),
                    start=used[0][0].time,
                    end=used[-1][0].time,
                    frame_indices=[f.index for f, _ in used],
                    frame_times=[f.time for f, _ in used],
                    boxes=[list(b) for b in boxes],
                    frame_p_fake=[round(p, 6) for p in score.frame_p_fake],
                    quality=quality.to_record(),
                    latency_ms=(time.monotonic() - newest.arrival) * 1000,
                    wall=time.time(),
                    **common,
                )
            )
        # an id older than every face the tracker still links against never comes back
        tracker = self.chain.tracker
        assert tracker is not None
        live = [pid for _, _, _, ids in tracker.history for pid in ids]
        oldest = min(live, default=tracker.next_id)
        self._counted = {pid for pid in self._counted if pid >= oldest}
        return out


# --------------------------------------------------------------------------- the stream


def _warm_up(pipeline: VideoPipeline) -> None:
    """Load the detector and the classifier and run each once on a blank input (a 640x640
    black frame; one zero crop), before the source is opened: ONNX Runtime's first run of a
    graph allocates and plans, and took the first second of a 720p stream at 8+ frames/s
    (4-28 frames dropped; benchmarks/live_bench.py)."""
    pipeline.extractor.detect_default([np.zeros((640, 640, 3), np.uint8)])
    size = pipeline.preprocessor.size
    crop = pipeline.preprocessor(np.zeros((1, size, size, 3), np.uint8))
    pipeline.classifier.run([crop])


class LiveStream:
    """Rolling per-person verdicts on a live source (see the module docstring). Iterate it
    (once) for its events: a ``start`` :class:`Notice`, the source's notices, one
    :class:`PersonVerdict` per person per hop, and a :class:`StreamSummary` last. :meth:`stop`
    (any thread, a signal handler) ends it after the frames already queued; a source error is
    raised after the summary (``end: "error"``). Breaking out of the loop stops the reader."""

    def __init__(
        self,
        pipeline: VideoPipeline,
        source: Any,
        options: LiveOptions | None = None,
        **kwargs: Any,
    ) -> None:
        opts = options or LiveOptions()
        if kwargs:
            opts = replace(opts, **kwargs)
        kind = source_kind(source)
        if kind == "file" and not os.path.exists(_local_path(os.fspath(source))):
            raise ArtifactNotFoundError(
                f"{os.fspath(source)} does not exist; pass a file, a URL (rtsp://, tcp://, "
                "srt://, http://, ...), a camera (/dev/video0) or - for standard input"
            )
        if kind == "device" and not os.path.exists(os.fspath(source)):
            raise ArtifactNotFoundError(f"{os.fspath(source)}: no such camera device")
        _warm_up(pipeline)  # loaded and run once now: a missing detector is an error before
        # any line, and ONNX Runtime's first runs (slow) do not make the first seconds drop frames
        self.pipeline = pipeline
        self.options = opts
        self.kind = kind
        self._stop = threading.Event()
        self._queue = FrameQueue(opts.queue)
        self._reader = _Reader(
            source,
            kind,
            opts,
            self._queue,
            self._stop,
            colour=pipeline.colour,
            deinterlace=pipeline.deinterlace,
            threads=pipeline.decode_threads,
        )
        self.name = self._reader.name
        self._scorer = _Scorer(pipeline, opts, self.name)
        self._started = False
        self.summary: StreamSummary | None = None

    def stop(self) -> None:
        """End the stream: the frames already queued are scored, then the summary comes."""
        self._stop.set()

    def __iter__(self) -> Iterator[LiveEvent]:
        if self._started:
            raise InvalidInputError("a LiveStream is iterated once; open another")
        self._started = True
        return self._events()

    def _start_notice(self) -> Notice:
        p, opts, scorer = self.pipeline, self.options, self._scorer
        return Notice(
            "start",
            {
                "source": self.name,
                "kind": self.kind,
                "model": str(p.spec.directory.resolve()),
                "backend": p.backend,
                "precision": p.precision,
                "seq_len": scorer.n,
                "fps": opts.fps,
                "window_s": opts.window,
                "hop_s": opts.hop,
                "queue": opts.queue,
                "drops": self._reader.live,
                "faces": opts.faces,
                "calibration": p.spec.calibration.to_record(),
                "warnings": self._warnings(),
            },
        )

    def _warnings(self) -> list[str]:
        """The pipeline's notes that hold live, and what live scoring does differently."""
        p = self.pipeline
        out = [n for n in p.notes if not n.startswith("fast mode: faces were detected")]
        if p.detect_every > 1:
            out.append(
                "live scoring detects faces on every sampled frame: --detect-every is not used "
                "(--fps sets the cost)"
            )
        if p.spec.calibration.calibrated:
            out.append(
                "the model's calibration was fitted on whole videos "
                f"({p.spec.calibration.fitted_on.get('settings') or 'settings not recorded'}); "
                f"live verdicts use {self._scorer.n} frames over {self.options.window} s, so its "
                "probabilities and thresholds may hold less well"
            )
        return out

    def _events(self) -> Iterator[LiveEvent]:
        scorer, queue = self._scorer, self._queue
        started = time.monotonic()
        latencies: deque[float] = deque(maxlen=LATENCY_SAMPLES)
        counts = dict.fromkeys(VERDICTS, 0)
        lines = 0
        end, error = "eof", None
        yield self._start_notice()
        self._reader.thread.start()

        def emit() -> Iterator[PersonVerdict]:
            nonlocal lines
            for line in scorer.verdicts(self._reader.state.read, queue.dropped):
                latencies.append(line.latency_ms)
                counts[line.verdict] = counts.get(line.verdict, 0) + 1
                lines += 1
                yield line

        try:
            done = False
            while not done:
                items = queue.take(0.1)
                if not items and self._stop.is_set():
                    end = "stopped"
                    break
                batch: list[LiveFrame] = []
                for item in [*items, None]:
                    if isinstance(item, LiveFrame):
                        batch.append(item)
                        continue
                    if batch:
                        try:
                            scored = scorer.add(batch)
                        except Exception as exc:  # the summary says so, then it is raised
                            end, error, done = "error", exc, True
                            break
                        for frame in scored:
                            if scorer.push(frame):
                                yield from emit()
                        batch = []
                    if isinstance(item, Notice):
                        yield item
                    elif isinstance(item, _End):
                        end, error = item.reason, item.error
                        done = True
            if scorer.pending() and end != "error":
                yield from emit()
        finally:
            self._stop.set()
            self._reader.thread.join(timeout=2.0)
        lat = sorted(latencies)
        state = self._reader.state
        self.summary = StreamSummary(
            source=self.name,
            end=end,
            error=None if error is None else _error_text(error),
            seconds=time.monotonic() - started,
            stream_s=state.last_time,
            frames_read=state.read,
            frames_sampled=state.sampled,
            frames_scored=scorer.scored,
            frames_dropped=queue.dropped,
            people=scorer.people,
            lines=lines,
            verdicts=counts,
            latency_ms={
                "median": _quantile(lat, 0.5),
                "p95": _quantile(lat, 0.95),
                "max": round(lat[-1], 2) if lat else None,
            },
            reconnections=state.reconnections,
            queue=queue.capacity,
            queue_max=queue.high_water,
            buffer_max=scorer.buffer_max,
        )
        yield self.summary
        if end == "error" and error is not None:
            raise error


def _quantile(values: list[float], q: float) -> float | None:
    """The ``q`` quantile of sorted ``values`` (linear interpolation), rounded to 0.01 ms."""
    if not values:
        return None
    return round(float(np.quantile(np.asarray(values), q)), 2)


def _error_text(exc: BaseException) -> str:
    if isinstance(exc, EngineError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


def write_lines(events: Iterable[LiveEvent], out: Any = None) -> StreamSummary | None:
    """Write each event of ``events`` as one JSON line to ``out`` (default: standard output),
    flushed at once; returns the summary. An output closed by its reader (``dfe watch ... |
    head``) stops the stream and raises ``BrokenPipeError``."""
    import json

    out = out or sys.stdout
    summary = None
    it = iter(events)
    try:
        for event in it:
            out.write(json.dumps(event.to_record(), separators=(",", ":")) + "\n")
            out.flush()
            if isinstance(event, StreamSummary):
                summary = event
    finally:
        close = getattr(it, "close", None)
        if close is not None:
            close()  # the reader stops with the stream
    return summary
