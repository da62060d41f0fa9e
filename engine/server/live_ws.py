"""Live mode of ``dfe serve``'s page: a browser's camera or shared screen over a WebSocket.

The page captures frames (a canvas, JPEG) and sends them to ``/api/v1/live``; each session runs
one :class:`engine.live.LiveStream` over the decoded frames (``Engine.stream`` of an iterator of
``(time_s, HxWx3 uint8 BGR)``, in a worker thread) and sends every event's ``to_record()`` back:
the ``dfe watch`` lines, unchanged. So a line is what ``Engine.stream`` gives for the same decoded
frames; the socket adds only its own messages (``ready``, ``ack``, ``error``, ``closed``).

Protocol (version :data:`PROTOCOL`), one WebSocket per session:

1. The client's first message is text: a JSON object of settings, every key optional:
   ``fps`` (frames per second the client sends, default the server's ``--live-fps``, at most
   ``max_fps``), ``window``, ``hop`` (seconds, as ``dfe watch``), ``seq_len`` (null: the
   model's), ``faces`` (``all`` or ``main``), ``queue`` (frames held between the socket and the
   scorer, 1 to the server's limit) and ``drop`` (true: when the scorer is behind, the oldest
   queued frame is dropped and counted, as a live source does; false: the server stops reading
   the socket until there is room, so every frame is scored, for replaying recorded frames).
   An unknown key, a value out of range or anything but a JSON object ends the session (1008).
2. The server answers ``{"event": "ready", "protocol": 1, "settings": {...}, "sampler_fps":
   ..., "limits": {...}}``, then the stream's ``start`` line.
3. The client sends frames as binary messages: an 8-byte little-endian IEEE-754 float64, the
   capture time in seconds (finite, never decreasing, gaps under :data:`MAX_GAP_S`), followed
   by the JPEG bytes. Stream time is the capture time minus the first frame's. Each frame is
   answered by ``{"event": "ack", "frame": k, "time": t, "accepted": bool, "reason": null |
   "rate", "received": n, "dropped": {"rate": a, "queue": b}}`` (``k``: the 0-based count of
   binary messages): a frame over the rate limit is dropped unread (``rate``); one dropped later
   from the full queue counts in ``queue``; frames the scorer dropped count in the lines'
   ``dropped``. The lines (``verdict``, ...) come as the stream gives them.
4. The client ends the session with the text message ``{"event": "stop"}``: the frames already
   queued are scored, the last lines and the ``summary`` come, then ``{"event": "closed",
   "code": 1000, ...}`` with the session's counts, and the server closes the socket (1000).
   Closing the socket ends it too (the lines not yet sent are dropped).

Errors come as ``{"event": "error", "message": ...}`` (never a traceback), then ``closed`` and
the close frame with its code: 1007 a frame that is not a JPEG or a bad timestamp, 1008 a
protocol or policy error (bad settings, a text message other than stop, a frame larger than
``max_side`` pixels a side, a cross-origin page, no frame for ``idle_timeout_s``), 1009 a frame
over ``max_bytes``, 1011 the stream failed, 1013 every live session is in use or the models
are not loaded (try again later), 1001 the server is shutting down.

Bounds: at most ``sessions`` sessions at once; per session at most ``max_fps`` frames a second
are read (a token bucket over wall-clock arrival, burst one second of frames: a frame over it
is dropped before it is decoded), at most ``queue`` undecoded frames wait for the scorer's
thread and ``queue`` decoded ones in the stream's own queue, and at most
:data:`MAX_PENDING_LINES` lines wait to be sent (a client that does not read them ends the
session).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import struct
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import numpy as np

from core.deps import require
from core.errors import EngineError, InvalidInputError, MissingDependencyError
from engine.live import DEFAULT_HOP_S, DEFAULT_QUEUE, DEFAULT_WINDOW_S, LiveOptions

require("fastapi", purpose="dfe serve")
from starlette.concurrency import run_in_threadpool  # noqa: E402
from starlette.websockets import WebSocket  # noqa: E402 (FastAPI reads the annotation)

if TYPE_CHECKING:
    from engine.api import Engine

log = logging.getLogger(__name__)

__all__ = [
    "HEADER",
    "MAX_GAP_S",
    "PROTOCOL",
    "FrameInbox",
    "LiveHub",
    "LiveLimits",
    "LiveSettings",
    "ProtocolError",
    "TokenBucket",
    "decode_jpeg",
    "jpeg_size",
    "pack_frame",
    "parse_settings",
    "require_websockets",
]

#: The protocol's version (the ``ready`` message says it).
PROTOCOL = 1
#: A frame message starts with the capture time: little-endian float64 seconds.
HEADER = struct.Struct("<d")
#: The longest gap between two frames' capture times (seconds): stream time is counted in
#: hops and sampler steps, so a jump of years would be counted step by step.
MAX_GAP_S = 600.0
#: The longest window a client may ask for (seconds).
MAX_WINDOW_S = 60.0
#: The longest sequence a client may ask for (frames; the upload form's limit).
MAX_SEQ_LEN = 300
#: Lines (and acks) waiting to be sent at most; past it the client is not reading.
MAX_PENDING_LINES = 256
#: The stream's sampler runs at this multiple of the client's rate, so that frames sent at
#: ``fps`` by a timer that jitters are all scored (the sampler keeps the first frame at or
#: after each multiple of its step).
SAMPLER_FACTOR = 2.0

# close codes (RFC 6455 section 7.4.1; 1013 from the IANA registry)
NORMAL, GOING_AWAY, INVALID_DATA, POLICY, TOO_BIG, INTERNAL, TRY_LATER = (
    1000, 1001, 1007, 1008, 1009, 1011, 1013
)  # fmt: skip

_SOF = frozenset(range(0xC0, 0xD0)) - {
    0xC4,
    0xC8,
    0xCC,
}  # start-of-frame markers (not DHT, JPG, DAC)
_DONE = object()


# --------------------------------------------------------------------------- limits, settings


@dataclass(frozen=True)
class LiveLimits:
    """What ``dfe serve`` allows live: ``sessions`` at once (0: live mode off); ``fps``: the rate
    the page sends at (frames per second, the default setting); ``max_fps``: the most frames a
    second a session may send (None: twice ``fps``); ``max_bytes``: the largest frame message
    (bytes, the header included); ``max_side``: the largest JPEG width or height (pixels);
    ``queue``: the most frames a session may hold between the socket and the scorer;
    ``window``/``hop``: the default settings (seconds); ``settings_timeout_s``: how long the
    server waits for the settings; ``idle_timeout_s``: how long a session may send nothing
    (seconds). Raises :class:`InvalidInputError` for a value out of range."""

    sessions: int = 2
    fps: float = 4.0
    max_fps: float | None = None
    max_bytes: int = 8 * 2**20
    max_side: int = 4096
    queue: int = DEFAULT_QUEUE
    window: float = DEFAULT_WINDOW_S
    hop: float = DEFAULT_HOP_S
    settings_timeout_s: float = 10.0
    idle_timeout_s: float = 30.0

    def __post_init__(self) -> None:
        for name, low in (("sessions", 0), ("max_bytes", 1024), ("max_side", 16), ("queue", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise InvalidInputError(f"live {name} must be an integer >= {low}, got {value!r}")
        for name in ("fps", "window", "hop", "settings_timeout_s", "idle_timeout_s"):
            _positive(f"live {name}", getattr(self, name))
        if self.max_fps is not None:
            _positive("live max_fps", self.max_fps)
            if self.max_fps < self.fps:
                raise InvalidInputError(
                    f"live max_fps ({self.max_fps}) must be at least fps ({self.fps})"
                )
        if self.hop > self.window or self.window > MAX_WINDOW_S:
            raise InvalidInputError(
                f"live window must be from hop ({self.hop} s) to {MAX_WINDOW_S:g} s, got "
                f"{self.window}"
            )

    @property
    def accept_fps(self) -> float:
        """Frames a second a session may send (``max_fps``, else twice ``fps``)."""
        return self.max_fps if self.max_fps is not None else 2.0 * self.fps

    def to_record(self) -> dict[str, Any]:
        """The limits as the ``ready`` message gives them."""
        return {
            "sessions": self.sessions,
            "max_fps": self.accept_fps,
            "max_bytes": self.max_bytes,
            "max_side": self.max_side,
            "queue": self.queue,
            "idle_timeout_s": self.idle_timeout_s,
            "max_gap_s": MAX_GAP_S,
        }


def _positive(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidInputError(f"{name} must be a number > 0, got {value!r}")
    if not (math.isfinite(value) and value > 0):
        raise InvalidInputError(f"{name} must be a number > 0, got {value!r}")


class ProtocolError(Exception):
    """A client that broke the protocol or a limit: ``message`` is sent as the ``error`` line,
    then the socket is closed with ``code`` (see the module docstring)."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class LiveSettings:
    """One session's settings (the client's first message, see the module docstring):
    ``fps`` the client's rate (frames per second), ``window``/``hop`` seconds, ``seq_len``
    frames per verdict (None: the model's), ``faces`` ``all`` or ``main``, ``queue`` frames,
    ``drop`` whether frames are dropped when the scorer is behind (else the socket waits)."""

    fps: float
    window: float
    hop: float
    seq_len: int | None
    faces: str
    queue: int
    drop: bool

    def options(self) -> LiveOptions:
        """The stream's options: the sampler at :data:`SAMPLER_FACTOR` times ``fps``, frames
        dropped when behind (``drop``) or waited for."""
        return LiveOptions(
            fps=self.fps * SAMPLER_FACTOR,
            window=self.window,
            hop=self.hop,
            seq_len=self.seq_len,
            queue=self.queue,
            live=self.drop,
            faces=self.faces,
        )


SETTINGS = ("fps", "window", "hop", "seq_len", "faces", "queue", "drop")


def parse_settings(text: str | None, limits: LiveLimits) -> LiveSettings:
    """The client's settings message (a JSON object, every key optional) within ``limits``.
    Raises :class:`ProtocolError` (1008) naming what is wrong."""
    if text is None:
        raise ProtocolError(
            POLICY,
            "the first message must be text: a JSON object of settings (e.g. "
            '{"fps": 4}); frames come after the server\'s "ready"',
        )
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ProtocolError(POLICY, f"the settings are not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ProtocolError(POLICY, f"the settings must be a JSON object, got {text[:80]!r}")
    unknown = sorted(set(data) - set(SETTINGS))
    if unknown:
        raise ProtocolError(
            POLICY, f"unknown settings {unknown}; supported settings are {', '.join(SETTINGS)}"
        )

    def number(name: str, default: float, high: float) -> float:
        value = data.get(name, default)
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not (ok and math.isfinite(value) and 0 < value <= high):
            raise ProtocolError(
                POLICY, f"{name} must be a number > 0 and at most {high:g}, got {value!r}"
            )
        return float(value)

    def integer(name: str, default: int | None, high: int) -> int | None:
        value = data.get(name, default)
        if value is None and default is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= high:
            raise ProtocolError(
                POLICY, f"{name} must be an integer from 1 to {high}, got {value!r}"
            )
        return value

    fps = number("fps", limits.fps, limits.accept_fps)
    window = number("window", limits.window, MAX_WINDOW_S)
    hop = number("hop", min(limits.hop, window), window)
    seq_len = integer("seq_len", None, MAX_SEQ_LEN)
    queue = integer("queue", min(DEFAULT_QUEUE, limits.queue), limits.queue)
    faces = data.get("faces", "all")
    if faces not in ("all", "main"):
        raise ProtocolError(POLICY, f"faces must be 'all' or 'main', got {faces!r}")
    drop = data.get("drop", True)
    if not isinstance(drop, bool):
        raise ProtocolError(POLICY, f"drop must be true or false, got {drop!r}")
    settings = LiveSettings(fps, window, hop, seq_len, faces, int(queue or 1), drop)
    try:
        settings.options()
    except InvalidInputError as exc:
        raise ProtocolError(POLICY, str(exc)) from None
    return settings


def require_websockets() -> None:
    """Check that uvicorn can speak WebSocket (``wsproto`` or ``websockets`` is installed);
    raises :class:`MissingDependencyError` naming the extra otherwise (uvicorn would answer
    every live session's upgrade with an error and only log a warning)."""
    import importlib.util

    if any(importlib.util.find_spec(m) is not None for m in ("wsproto", "websockets")):
        return
    raise MissingDependencyError(
        "the page's live mode needs a WebSocket library for uvicorn (wsproto or websockets); "
        "install it with: pip install 'deepfake-engine[serve]', or pass --live-sessions 0"
    )


# --------------------------------------------------------------------------- frames


def pack_frame(time_s: float, jpeg: bytes) -> bytes:
    """A frame message: ``time_s`` (capture time, seconds) as little-endian float64, then the
    JPEG bytes."""
    return HEADER.pack(float(time_s)) + bytes(jpeg)


def jpeg_size(data: bytes) -> tuple[int, int]:
    """``(width, height)`` in pixels from a JPEG's frame header (SOFn), read without decoding.
    Raises :class:`InvalidInputError` when ``data`` is not a JPEG or has no frame header
    before its scan."""
    n = len(data)
    if n < 4 or data[0] != 0xFF or data[1] != 0xD8:
        raise InvalidInputError("not a JPEG: it does not start with the JPEG marker FF D8")
    i = 2
    while i + 4 <= n:
        if data[i] != 0xFF:
            raise InvalidInputError(f"not a valid JPEG: no marker at byte {i}")
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:  # markers without a length
            i += 2
            continue
        if marker in (0xD9, 0xDA):  # end of image, start of scan: no frame header came
            break
        length = int.from_bytes(data[i + 2 : i + 4], "big")
        if length < 2:
            raise InvalidInputError(f"not a valid JPEG: a segment of length {length} at byte {i}")
        if marker in _SOF:
            if i + 9 > n or length < 7:
                raise InvalidInputError("not a valid JPEG: its frame header is cut short")
            height = int.from_bytes(data[i + 5 : i + 7], "big")
            width = int.from_bytes(data[i + 7 : i + 9], "big")
            if not width or not height:
                raise InvalidInputError(f"not a valid JPEG: its frame header says {width}x{height}")
            return width, height
        i += 2 + length
    raise InvalidInputError("not a valid JPEG: no frame header (SOF) before the image data")


def decode_jpeg(data: bytes) -> np.ndarray:
    """A JPEG as an HxWx3 uint8 BGR array (``cv2.imdecode``, ``IMREAD_COLOR``). Raises
    :class:`InvalidInputError` when OpenCV cannot decode it."""
    import cv2

    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None or image.ndim != 3 or image.shape[2] != 3:
        raise InvalidInputError("a JPEG that OpenCV cannot decode")
    return image


class TokenBucket:
    """At most ``rate`` events a second on average, ``burst`` at once (wall clock,
    ``time.monotonic``)."""

    def __init__(self, rate: float, burst: float) -> None:
        self.rate, self.burst = rate, burst
        self.tokens = burst
        self.last = time.monotonic()

    def take(self) -> bool:
        """Whether one more event is allowed now (and count it)."""
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.last) * self.rate)
        self.last = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


class FrameInbox:
    """The bounded queue between the socket (the event loop) and the stream's reader thread:
    at most ``capacity`` undecoded frames ``(index, time_s, jpeg)``. :meth:`put` drops the
    oldest when full (``dropped`` counts them); :meth:`offer` refuses instead (the socket
    waits). :meth:`frames` is the stream's source: it decodes each frame and ends when
    :meth:`close` is called."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._items: deque[tuple[int, float, bytes]] = deque()
        self._cond = threading.Condition()
        self._closed = False
        self.dropped = 0
        self.high_water = 0

    def _append(self, item: tuple[int, float, bytes]) -> None:
        self._items.append(item)
        self.high_water = max(self.high_water, len(self._items))
        self._cond.notify_all()

    def put(self, item: tuple[int, float, bytes]) -> None:
        """Queue ``item``, dropping the oldest frame when full."""
        with self._cond:
            if len(self._items) >= self.capacity:
                self._items.popleft()
                self.dropped += 1
            self._append(item)

    def offer(self, item: tuple[int, float, bytes]) -> bool:
        """Queue ``item`` if there is room; whether it was queued."""
        with self._cond:
            if len(self._items) >= self.capacity:
                return False
            self._append(item)
            return True

    def close(self) -> None:
        """No more frames: :meth:`frames` ends after those queued."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def frames(self) -> Iterator[tuple[float, np.ndarray]]:
        """``(time_s, HxWx3 uint8 BGR)`` per queued frame, in order, until closed. Raises
        :class:`InvalidInputError` for a frame that does not decode."""
        while True:
            with self._cond:
                while not self._items and not self._closed:
                    self._cond.wait(0.5)
                if not self._items:
                    return
                index, t, jpeg = self._items.popleft()
                self._cond.notify_all()
            try:
                image = decode_jpeg(jpeg)
            except InvalidInputError as exc:
                raise InvalidInputError(f"frame {index}: {exc}") from None
            yield t, image


# --------------------------------------------------------------------------- one session


class _Session:
    """One socket's stream: the frames in, the stream's thread, the lines out."""

    def __init__(
        self, hub: LiveHub, settings: LiveSettings, stream: Any, inbox: FrameInbox
    ) -> None:
        self.hub, self.settings, self.limits = hub, settings, hub.limits
        self.stream, self.inbox = stream, inbox
        self.events: Iterator[Any] = iter(stream)
        self.bucket = TokenBucket(self.limits.accept_fps, max(1.0, self.limits.accept_fps))
        self.loop = asyncio.get_running_loop()
        self.outbox: asyncio.Queue[Any] = asyncio.Queue()
        self.thread = threading.Thread(target=self._work, name="dfe-live-session", daemon=True)
        self.received = self.accepted = self.rate_dropped = 0
        self.first: float | None = None
        self.last: float | None = None
        self.code: int | None = None  # the close code of the first failure
        self.reason = ""
        self.gone = False  # the client closed the socket
        self.stopped = False  # the client asked to stop
        self.finished = threading.Event()  # the stream's thread is done

    # ----- the stream's thread

    def _work(self) -> None:
        try:
            for event in self.events:
                self._emit(event.to_record())
        except InvalidInputError as exc:
            self._emit_failure(INVALID_DATA, str(exc))
        except EngineError as exc:
            self._emit_failure(INTERNAL, f"the live stream failed: {exc}")
        except Exception as exc:  # reported to the client in words, logged with the trace
            log.exception("a live session failed")
            self._emit_failure(INTERNAL, f"the live stream failed: {type(exc).__name__}: {exc}")
        finally:
            self.finished.set()
            self._emit(_DONE)

    def _emit(self, item: Any) -> None:
        with contextlib.suppress(RuntimeError):  # the event loop is gone (the server stopped)
            self.loop.call_soon_threadsafe(self._post, item)

    def _emit_failure(self, code: int, message: str) -> None:
        self._emit(("fail", code, message))

    # ----- the event loop

    def _post(self, item: Any) -> None:
        if isinstance(item, tuple) and item and item[0] == "fail":
            self.fail(item[1], item[2])
            return
        if item is not _DONE and self.outbox.qsize() >= MAX_PENDING_LINES:
            if self.code is None:
                self.fail(POLICY, "the client does not read the lines: the session ends")
            return
        self.outbox.put_nowait(item)

    def fail(self, code: int, message: str) -> None:
        """End the session with ``message`` as an error line and ``code`` (the first failure
        decides the code)."""
        if self.code is None:
            self.code, self.reason = code, message
        self.outbox.put_nowait({"event": "error", "message": message})
        self.end(stop=True)

    def end(self, *, stop: bool) -> None:
        """No more frames; ``stop``: also stop the stream now (after the frames it holds)."""
        self.inbox.close()
        if stop:
            self.stream.stop()

    def counts(self) -> dict[str, Any]:
        return {
            "received": self.received,
            "accepted": self.accepted,
            "dropped": {"rate": self.rate_dropped, "queue": self.inbox.dropped},
            "queue_max": self.inbox.high_water,
        }

    async def run(self, ws: WebSocket) -> None:
        """Serve the session until the stream has ended and its lines are sent (or the client
        has gone); the stream's thread is joined before it returns."""
        sender = receiver = None
        try:
            await self._send(
                ws,
                {
                    "event": "ready",
                    "protocol": PROTOCOL,
                    "settings": asdict(self.settings),
                    "sampler_fps": self.settings.fps * SAMPLER_FACTOR,
                    "limits": self.limits.to_record(),
                },
            )
            # the stream's first event (its settings) comes before its reader starts: sent
            # now, it precedes every ack
            await self._send(ws, next(self.events).to_record())
            self.thread.start()
            sender = asyncio.ensure_future(self._send_all(ws))
            receiver = asyncio.ensure_future(self._receive_all(ws))
            done, _ = await asyncio.wait({sender, receiver}, return_when=asyncio.FIRST_COMPLETED)
            if sender in done:
                receiver.cancel()
            await asyncio.gather(sender, receiver, return_exceptions=True)
        finally:
            self.end(stop=True)
            for task in (sender, receiver):
                if task is not None:
                    task.cancel()
            if self.thread.is_alive():
                await run_in_threadpool(self.thread.join, 10.0)

    async def _receive_all(self, ws: WebSocket) -> None:
        try:
            while True:
                try:
                    message = await asyncio.wait_for(ws.receive(), self.limits.idle_timeout_s)
                except asyncio.TimeoutError:
                    raise ProtocolError(
                        POLICY,
                        f"no message for {self.limits.idle_timeout_s:g} s: the session ends "
                        "(it holds one of the server's live sessions)",
                    ) from None
                if message["type"] == "websocket.disconnect":
                    self.gone = True
                    self.end(stop=True)
                    return
                data = message.get("bytes")
                if data is not None:
                    await self._frame(data)
                    continue
                if _is_stop(message.get("text")):
                    self.stopped = True
                    self.end(stop=False)  # the frames queued are scored, then the summary
                    return
                raise ProtocolError(
                    POLICY,
                    'text messages after the settings must be {"event": "stop"}; frames are '
                    f"binary messages, got {str(message.get('text'))[:80]!r}",
                )
        except ProtocolError as exc:
            self.fail(exc.code, exc.message)

    async def _frame(self, data: bytes) -> None:
        k = self.received
        self.received += 1
        limits = self.limits
        if len(data) > limits.max_bytes:
            raise ProtocolError(
                TOO_BIG,
                f"frame {k} is {len(data):,} bytes, over the limit of {limits.max_bytes:,} "
                "bytes: send a smaller JPEG (a lower resolution or quality)",
            )
        if len(data) <= HEADER.size:
            raise ProtocolError(
                INVALID_DATA,
                f"frame {k} is {len(data)} bytes: a frame is an 8-byte little-endian float64 "
                "capture time in seconds followed by the JPEG",
            )
        (t,) = HEADER.unpack_from(data)
        if not math.isfinite(t):
            raise ProtocolError(INVALID_DATA, f"frame {k}: the capture time {t} is not finite")
        if self.last is not None and t < self.last:
            raise ProtocolError(
                INVALID_DATA,
                f"frame {k}: capture times must not decrease, got {t} after {self.last}",
            )
        if self.last is not None and t - self.last > MAX_GAP_S:
            raise ProtocolError(
                INVALID_DATA,
                f"frame {k}: {t - self.last:.0f} s after the last frame, over the limit of "
                f"{MAX_GAP_S:g} s between frames",
            )
        self.last = t
        if self.first is None:
            self.first = t
        jpeg = bytes(memoryview(data)[HEADER.size :])
        try:
            width, height = jpeg_size(jpeg)
        except InvalidInputError as exc:
            raise ProtocolError(INVALID_DATA, f"frame {k}: {exc}") from None
        if max(width, height) > limits.max_side:
            raise ProtocolError(
                POLICY,
                f"frame {k} is {width}x{height} px, over the limit of {limits.max_side} px a "
                "side: scale it down",
            )
        if not self.bucket.take():
            self.rate_dropped += 1
            self._ack(k, t, "rate")
            return
        item = (k, t - self.first, jpeg)
        if self.settings.drop:
            self.inbox.put(item)
        else:
            while not self.inbox.offer(item):  # wait for room: the socket is not read meanwhile
                if self.finished.is_set():
                    return
                await asyncio.sleep(0.01)
        self.accepted += 1
        self._ack(k, t, None)

    def _ack(self, k: int, t: float, reason: str | None) -> None:
        self._post(
            {
                "event": "ack",
                "frame": k,
                "time": t,
                "accepted": reason is None,
                "reason": reason,
                "received": self.received,
                "dropped": {"rate": self.rate_dropped, "queue": self.inbox.dropped},
            }
        )

    async def _send_all(self, ws: WebSocket) -> None:
        while True:
            item = await self.outbox.get()
            if item is _DONE:
                break
            await self._send(ws, item)
        code = self.code or (GOING_AWAY if self.hub.closing else NORMAL)
        if self.reason:
            reason = self.reason
        elif self.hub.closing:
            reason = "the server is shutting down"
        else:
            reason = "stopped by the client" if self.stopped else "the stream ended"

        await self._send(ws, {"event": "closed", "code": code, "reason": reason, **self.counts()})
        if not self.gone:
            try:
                await ws.close(code, _short(reason))
            except Exception:  # the client went away meanwhile
                self.gone = True

    async def _send(self, ws: WebSocket, record: dict[str, Any]) -> None:
        if self.gone:
            return
        try:
            await ws.send_text(json.dumps(record, separators=(",", ":")))
        except Exception:  # closed by the client: the rest is dropped
            self.gone = True
            self.end(stop=True)


def _is_stop(text: str | None) -> bool:
    try:
        data = json.loads(text or "")
    except ValueError:
        return False
    return isinstance(data, dict) and data.get("event") == "stop"


def _short(reason: str) -> str:
    """A close reason within the 123 bytes a close frame holds."""
    raw = reason.encode()[:120]
    return raw.decode("utf-8", "ignore")


# --------------------------------------------------------------------------- the hub


class LiveHub:
    """The live sessions of one app: the WebSocket endpoint (:meth:`endpoint`), the count of
    sessions against ``limits.sessions``, and :meth:`close` for the app's shutdown.
    ``ready()`` says whether the models are loaded, and why not: ``(ok, reason)``."""

    def __init__(
        self,
        engine: Engine,
        limits: LiveLimits | None = None,
        *,
        ready: Callable[[], tuple[bool, str]] = lambda: (True, ""),
    ) -> None:
        self.engine = engine
        self.limits = limits or LiveLimits()
        self.ready = ready
        self.closing = False
        self._lock = threading.Lock()
        self._sessions: set[_Session] = set()
        self._active = 0

    @property
    def active(self) -> int:
        """Sessions open now."""
        return self._active

    def page_settings(self) -> dict[str, Any]:
        """What the page's live section needs: whether live mode is on (and why not), the rate
        it sends at, the window and hop, and the limits."""
        on = self.limits.sessions > 0
        return {
            "enabled": on,
            "reason": "" if on else "live mode is off on this server (dfe serve --live-sessions 0)",
            "fps": self.limits.fps,
            "window": self.limits.window,
            "hop": self.limits.hop,
            "max_side": self.limits.max_side,
            "max_bytes": self.limits.max_bytes,
        }

    def _acquire(self) -> bool:
        with self._lock:
            if self.closing or self._active >= self.limits.sessions:
                return False
            self._active += 1
            return True

    def _release(self) -> None:
        with self._lock:
            self._active -= 1

    async def endpoint(self, websocket: WebSocket) -> None:
        """The ``/api/v1/live`` WebSocket (the protocol: the module docstring)."""
        await websocket.accept()
        refusal = self._refusal(websocket)
        if refusal is not None:
            await _refuse(websocket, *refusal)
            return
        if not self._acquire():
            limit = self.limits.sessions
            await _refuse(
                websocket,
                TRY_LATER,
                "the server is shutting down"
                if self.closing
                else f"all {limit} live session{'s' if limit != 1 else ''} of this server are in "
                "use; try again later",
            )
            return
        session: _Session | None = None
        try:
            try:
                settings = await self._settings(websocket)
                if self.closing:
                    raise ProtocolError(GOING_AWAY, "the server is shutting down")
                inbox = FrameInbox(settings.queue)
                try:  # loads the model for seq_len: one that cannot load refuses the session
                    stream = await run_in_threadpool(
                        self.engine.stream, inbox.frames(), options=settings.options()
                    )
                except EngineError as exc:
                    raise ProtocolError(POLICY, f"the stream cannot start: {exc}") from None
            except ProtocolError as exc:
                await _refuse(websocket, exc.code, exc.message)
                return
            session = _Session(self, settings, stream, inbox)
            with self._lock:
                self._sessions.add(session)
            await session.run(websocket)
        finally:
            if session is not None:
                with self._lock:
                    self._sessions.discard(session)
            self._release()

    def _refusal(self, websocket: WebSocket) -> tuple[int, str] | None:
        """Why this connection is refused before it takes a session, or None."""
        if self.limits.sessions == 0:
            return POLICY, "live mode is off on this server (dfe serve --live-sessions 0)"
        origin = websocket.headers.get("origin")
        host = websocket.headers.get("host")
        if origin and urlsplit(origin).netloc.lower() != (host or "").lower():
            return POLICY, (
                f"cross-origin live sessions are refused (the page is {origin}, the server "
                f"{host}): open the page this server serves"
            )
        ok, reason = self.ready()
        if not ok:
            return TRY_LATER, f"the models are not ready: {reason}"
        return None

    async def _settings(self, websocket: WebSocket) -> LiveSettings:
        timeout = self.limits.settings_timeout_s
        try:
            message = await asyncio.wait_for(websocket.receive(), timeout)
        except asyncio.TimeoutError:
            raise ProtocolError(
                POLICY, f"no settings within {timeout:g} s: send a JSON object of settings first"
            ) from None
        if message["type"] == "websocket.disconnect":
            raise ProtocolError(NORMAL, "the client closed the socket")
        return parse_settings(message.get("text"), self.limits)

    def close(self, timeout: float = 10.0) -> None:
        """Refuse new sessions and end the open ones (their frames queued are scored, the
        summary and a ``closed`` line with code 1001 are sent); wait up to ``timeout`` s for
        their threads."""
        with self._lock:
            self.closing = True
            sessions = list(self._sessions)
        for session in sessions:
            session.end(stop=True)
        deadline = time.monotonic() + timeout
        for session in sessions:
            if session.thread.is_alive():
                session.thread.join(max(0.0, deadline - time.monotonic()))


async def _refuse(websocket: WebSocket, code: int, message: str) -> None:
    """Send ``message`` as an error line and a ``closed`` line, then close with ``code``."""
    try:
        await websocket.send_text(json.dumps({"event": "error", "message": message}))
        await websocket.send_text(json.dumps({"event": "closed", "code": code, "reason": message}))
        await websocket.close(code, _short(message))
    except Exception:  # the client went away meanwhile
        log.debug("a refused live client closed first")
