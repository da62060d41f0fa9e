"""Read frames from a video file: PyAV (FFmpeg, threaded) first, OpenCV as the fallback.

Frames come out as HxWx3 uint8 BGR (the channel order the model was trained on), upright (the
display matrix is applied as ffmpeg's CLI and OpenCV do) and, by default, in 8-bit BT.709 SDR
colour (wide-gamut and HDR video converted with FFmpeg's own filters, see
:mod:`preprocess.colour`; ``colour="keep"`` skips that).

Frames are the ones a player presents, indexed in presentation order: index ``i`` is the
``i``-th frame a full sequential decode gives, i.e. the ``i``-th smallest pts among the packets a
player shows. Packets flagged discard are not shown: an MP4/MOV edit list (a stream-copied cut,
``ffmpeg -ss 1 -i in.mp4 -c copy out.mp4``, keeps the GOP from its keyframe and hides the leading
pictures) makes FFmpeg flag them, and the decoder drops their frames after using them as
references. A stream whose timestamps restart (transport streams joined with ``cat``) is
presented segment after segment. ``VideoInfo.frame_count`` counts those frames from the demux
index; when frames fail to decode while sampling ``uniform`` (corrupt data mid-file), the whole
video is decoded once to count the decodable frames, indices are over those, and
``VideoInfo.frame_count_source`` says ``"decode"``.

How frames are chosen (see :func:`preprocess.sampling.sample_indices`):

- ``first``: decode from the start and stop once ``n`` frames are in hand.
- ``uniform`` with PyAV: one cheap demux pass (no decoding) gives the exact frame count, every
  packet's pts, dts and discard flag (frame ``i`` is the ``i``-th smallest pts of the shown
  packets) and the keyframes. For each
  target the reader starts decoding at the last keyframe that precedes it in both decode and
  presentation order (so open-GOP leading pictures are never taken) and decodes forward to it.
  It does not seek when that keyframe was already decoded in the current run or is at most
  ``_SEEK_MARGIN`` packets ahead. A seek asks for the keyframe's smaller timestamp, drops any
  packets before the keyframe if the demuxer landed earlier, and retries from an earlier keyframe
  if it landed later. H.264 pictures that no other picture references (``nal_ref_idc == 0``,
  about half the frames of the DFDC clips) are not decoded unless they are targets.
  Every step is checked (landing position, that the decoder gives exactly the expected pts); on
  any surprise, or when pts are missing or duplicated (some AVI/FLV files), the timestamps
  restart, or the stream does not start on a keyframe, the reader falls back to one sequential
  decode that picks the targets and stops after the last (logged at debug level). Either way the
  frames are pixel-identical to a full decode's at the same indices. If a frame fails to decode
  on the way, the reader counts the decodable frames with one full decode (no colour
  conversion) and picks the targets over those in a second sequential decode; both run on one
  decoder thread, because frame-threaded decoding of damaged data is not reproducible.
- ``uniform`` with OpenCV: a ``grab()`` pass counts the frames exactly (OpenCV's frame count is
  only an estimate), then a second pass grabs every frame and converts only the targets.

Rotation: ``VideoInfo.rotation`` is the clockwise angle applied to the decoded pictures (as in
ffmpeg's CLI, OpenCV's ``CAP_PROP_ORIENTATION_META`` and the old mp4 ``rotate`` tag), rounded to a
right angle. Mirroring in a display matrix is ignored, as OpenCV ignores it.

Colour with OpenCV: OpenCV does not report a stream's colour description and cannot convert
it, so its frames are always as decoded (``VideoInfo.colour`` and ``VideoClip.colour`` are None).

Size changes: a video whose pictures change size mid-stream (WebRTC recordings, screen
captures; any number of changes, up or down, of aspect too, from the first frame on) gives each
frame at its own size, as a player shows it, with a warning naming the sizes and
``VideoClip.size_changes``; ``VideoInfo.width``/``height`` are the first frame's. OpenCV's
FFmpeg backend scales every frame to the first one's size and cannot tell.

Interlacing (``deinterlace="auto"``, the default; see :class:`preprocess.colour.Deinterlacer`):
frames the decoder flags interlaced (woven fields, e.g. 576i/480i broadcast, MPEG-2 or H.264
PAFF/MBAFF; both field orders, each frame's own flag), and the frames of a stream whose codec
flags none but whose container declares a field order, go through FFmpeg's ``bwdif`` in
``send_frame`` mode (one frame per frame: indices and counts do not change). bwdif reads the
previous and next frames too, so those are decoded with each target (``uniform`` seeks to the
keyframe before the previous frame and never skips them); the frames are exactly those of one
``bwdif`` over the whole stream. Progressive frames, and every frame with ``"off"``, are
untouched. OpenCV cannot deinterlace.

Animated WebP and APNG are read with Pillow (see :class:`_PillowBackend`); a still image
(JPEG, PNG, WebP of one frame) is refused with an error that says so.
"""

from __future__ import annotations

import bisect
import importlib
import itertools
import logging
import math
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from engine.core.errors import (
    ArtifactNotFoundError,
    InvalidInputError,
    InvalidVideoError,
    MissingDependencyError,
)
from preprocess.colour import (
    COLOUR_MODES,
    DEINTERLACE_MODES,
    ColourConversion,
    ColourDescription,
    DeinterlaceGapError,
    Deinterlacer,
    FrameConverter,
    check_colour,
    check_deinterlace,
    describe_frame,
)
from preprocess.sampling import (
    SAMPLING_MODES,
    as_int,
    check_count,
    check_sampling,
    sample_indices,
)

logger = logging.getLogger(__name__)

__all__ = [
    "BACKENDS",
    "COLOUR_MODES",
    "DEINTERLACE_MODES",
    "SAMPLING_MODES",
    "VideoClip",
    "VideoInfo",
    "is_animated_image",
    "iter_frames",
    "probe_video",
    "read_video",
    "sample_indices",
]

# "pillow" reads animated WebP and APNG (chosen by "auto" for those files; see _PillowBackend).
BACKENDS = ("auto", "pyav", "opencv", "pillow")

# Corrupt flags this many packets (or fewer) before a timestamp restart belong to the join.
_JOIN_SLACK = 4
# A forward dts jump at a keyframe longer than this is a join too (for the corrupt flags).
_JUMP_S = 1.0
# Continue decoding instead of seeking when the target's keyframe is at most this many packets
# ahead: a seek flushes the decoder and refills its thread pipeline, which costs about as much.
_SEEK_MARGIN = 8
# Packets kept from the demux pass beyond the N first frames, for the decoder's delay (B-frame
# reordering, up to 16 in H.264, plus one frame per frame-decoding thread). When they are not
# enough, the file is opened again and demuxing goes on after them (_PyAVSession._after_kept).
_REPLAY_SLACK = 48
_BAD_FILE_HINT = (
    "Pass a video file (mp4, webm, avi, mkv, gif, ...); if it is one, it is probably truncated "
    "or corrupt: re-create or re-download it"
)
# FFmpeg demuxers that read still images or text; such a file is not a video for this engine.
_NOT_VIDEO_FORMATS = frozenset({"image2", "tty"})


@dataclass(frozen=True)
class VideoInfo:
    """What a video holds. ``width``/``height`` are those of the frames returned (upright).

    ``frame_count``: the frames a player presents (packets not flagged discard, e.g. hidden by
    an MP4 edit list), from the demux index (``frame_count_source == "index"``), or counted by a
    full decode when frames failed to decode during ``uniform`` sampling (``"decode"``); OpenCV
    counts by ``grab()`` (``"decode"``) or not at all (None, ``"none"``).
    ``duration_s``: the stream duration the container states, as ffprobe reports it (for an
    edit-list cut, the edit's), else (no header duration, a truncated file, restarting
    timestamps) the span of the presented frames, summed over the segments.
    ``colour``: the source's colour description (from the first decoded frame; None with OpenCV).
    ``width``/``height`` are the first frame's: a video that changes size mid-stream gives each
    frame at its own size (see :attr:`VideoClip.size_changes`).
    ``field_order``: the stream's declared field order (``tff``, ``bff``, ``progressive`` or
    ``unknown``; None with OpenCV and Pillow); each frame also carries its own flag.
    """

    path: str
    width: int
    height: int
    fps: float | None
    frame_count: int | None
    duration_s: float | None
    rotation: int  # clockwise degrees applied to the decoded pictures: 0, 90, 180 or 270
    codec: str
    container: str  # FFmpeg demuxer name with PyAV, "unknown" with OpenCV
    colour: ColourDescription | None = None
    frame_count_source: str = "index"  # "index" (demuxed), "decode" (counted), "none"
    video_bytes: int | None = None  # bytes of the video stream's packets (None with OpenCV)
    field_order: str | None = None

    @property
    def bits_per_pixel(self) -> float | None:
        """Compressed bits per pixel of the video stream (its packets' bytes x 8 over width x
        height x frames): how hard it was compressed. None when unknown (OpenCV)."""
        if not self.video_bytes or not self.frame_count or not self.width or not self.height:
            return None
        return self.video_bytes * 8 / (self.width * self.height * self.frame_count)


@dataclass(frozen=True, eq=False)
class VideoClip:
    """Frames read from a video, with the presentation-order index of each.

    ``colour`` says what was done to the colours (see :class:`preprocess.colour.ColourConversion`;
    None with OpenCV); when something was converted or kept unconverted, its sentence is also in
    ``warnings``.

    Frames are each at their own size: a video that changes size mid-stream (WebRTC recordings,
    screen captures) gives each frame as decoded, upright, never rescaled to another frame's
    size (``frame_sizes``, ``size_changes``, and a warning naming the sizes).

    Interlaced video (``deinterlace="auto"``, the default) is deinterlaced as a player does it:
    FFmpeg's ``bwdif``, one frame per frame (``deinterlace`` names the filter that ran,
    ``deinterlaced`` counts the frames returned deinterlaced). ``interlaced_frames`` counts the
    frames returned that were flagged interlaced and are still interlaced (woven fields: 0 after
    deinterlacing, the flagged frames with ``deinterlace="off"``), out of ``frames_seen``.
    """

    info: VideoInfo
    frames: list[np.ndarray]  # each HxWx3 uint8 BGR, C-contiguous
    indices: list[int]
    backend: str  # "pyav" or "opencv"
    warnings: tuple[str, ...]  # problems met while reading; the frames returned are still right
    # Cost: video packets sent to the decoder (PyAV) or grab() calls (OpenCV), all passes.
    frames_decoded: int = 0
    colour: ColourConversion | None = None
    # frames returned still interlaced (flagged interlaced by the decoder and not deinterlaced:
    # woven fields) out of those converted (``frames_seen``); None with OpenCV, which does not say
    interlaced_frames: int | None = None
    frames_seen: int | None = None
    # frames returned deinterlaced, and the filter that did it (None: none was); None/None with
    # OpenCV (which cannot) and Pillow (animated images are progressive)
    deinterlaced: int | None = None
    deinterlace: str | None = None
    # presentation time in seconds of each frame returned, where the container gives one
    times: tuple[float | None, ...] | None = None

    @property
    def frame_sizes(self) -> list[tuple[int, int]]:
        """``(width, height)`` of each frame returned."""
        return [(int(f.shape[1]), int(f.shape[0])) for f in self.frames]

    @property
    def size_changes(self) -> list[tuple[int, tuple[int, int]]]:
        """``(frame index, (width, height))`` where a size starts among the frames returned:
        the first frame's, then one entry per change (a single entry: one size throughout)."""
        return _size_runs(self.indices, self.frames)[1]

    @property
    def changes_size(self) -> bool:
        """Whether the frames returned are not all of one size."""
        return len(self.size_changes) > 1


# --------------------------------------------------------------------------- public functions


def probe_video(path: str | os.PathLike[str], *, backend: str = "auto") -> VideoInfo:
    """Describe a video: size, rate, exact frame count, rotation, codec, colour description.

    With PyAV this demuxes the file (no decoding) and decodes one frame. With OpenCV the exact
    frame count costs a ``grab()`` pass over the whole video. Raises ``ArtifactNotFoundError``
    for a missing file and ``InvalidVideoError`` for what is not a readable video.
    """
    name = _check_backend(backend)
    file = _check_file(path)
    return _dispatch(name, file, lambda b: b.probe(file))


def read_video(
    path: str | os.PathLike[str],
    n: int,
    *,
    sampling: str = "first",
    backend: str = "auto",
    threads: int = 0,
    colour: str = "bt709",
    deinterlace: str = "auto",
) -> VideoClip:
    """Read ``n`` frames of a video chosen by ``sampling`` (``"first"`` or ``"uniform"``).

    A video shorter than ``n`` frames gives all its frames (no padding) and a warning in
    ``VideoClip.warnings``. ``threads`` is the decoder's thread count (0: FFmpeg's choice).
    ``colour``: ``"bt709"`` (default) converts wide-gamut and HDR video to 8-bit BT.709 SDR
    with FFmpeg's filters; ``"keep"`` returns the pixels as decoded (see
    :mod:`preprocess.colour`). ``deinterlace``: ``"auto"`` (default) deinterlaces interlaced
    video with FFmpeg's ``bwdif`` as a player does, one frame per frame; ``"off"`` keeps the
    woven fields. What was done is in ``VideoClip.colour``, ``VideoClip.deinterlace`` and
    ``warnings``. Animated WebP and APNG are read with Pillow (``backend="auto"``).
    Raises ``InvalidInputError`` for a bad option, ``ArtifactNotFoundError`` for a missing file
    and ``InvalidVideoError`` for what is not a readable video.
    """
    n = check_count(n, name="n", what="frames to read")
    check_sampling(sampling)
    check_colour(colour)
    check_deinterlace(deinterlace)
    threads = _check_threads(threads)
    name = _check_backend(backend)
    file = _check_file(path)
    return _dispatch(name, file, lambda b: b.read(file, n, sampling, threads, colour, deinterlace))


def iter_frames(
    path: str | os.PathLike[str],
    *,
    backend: str = "auto",
    threads: int = 0,
    colour: str = "bt709",
    deinterlace: str = "auto",
) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(index, frame)`` for every frame, in presentation order, BGR.

    The file is opened at once, so a bad file raises here rather than on the first ``next()``.
    A packet that fails to decode is skipped (as ffmpeg's CLI does); such problems, and any
    colour conversion or deinterlacing (``colour`` and ``deinterlace`` as in
    :func:`read_video`), are logged as warnings once the iteration ends.
    """
    check_colour(colour)
    check_deinterlace(deinterlace)
    threads = _check_threads(threads)
    name = _check_backend(backend)
    file = _check_file(path)
    return _dispatch(name, file, lambda b: b.iter(file, threads, colour, deinterlace))


def sample_frames(
    path: str | os.PathLike[str],
    keep: Callable[[int, float], bool],
    *,
    backend: str = "auto",
    threads: int = 0,
    colour: str = "bt709",
    deinterlace: str = "auto",
) -> Iterator[tuple[int, float, np.ndarray]]:
    """Yield ``(index, time, frame)`` for the frames ``keep(index, time)`` selects, in
    presentation order, streaming: one pass over the video, every frame decoded (as inter-coded
    video needs) but only the kept ones converted to BGR, so memory does not grow with the
    video's length. ``time`` is the frame's presentation time in seconds from the stream's
    start (PyAV: its timestamp; the other decoders: its index over the stream's frame rate).
    ``keep`` is called once per frame, in presentation order. Errors as :func:`iter_frames`."""
    check_colour(colour)
    check_deinterlace(deinterlace)
    threads = _check_threads(threads)
    name = _check_backend(backend)
    file = _check_file(path)

    def op(b: Any) -> Iterator[tuple[int, float, np.ndarray]]:
        if isinstance(b, _PyAVBackend):
            return b.sample(file, threads, colour, deinterlace, keep)
        return _sample_by_rate(b, file, threads, colour, deinterlace, keep)

    return _dispatch(name, file, op)


def _sample_by_rate(
    b: Any, path: str, threads: int, colour: str, deinterlace: str, keep: Any
) -> Iterator[tuple[int, float, np.ndarray]]:
    """:func:`sample_frames` for decoders without timestamps: time = index / frame rate."""
    fps = b.probe(path).fps or 25.0
    for i, frame in b.iter(path, threads, colour, deinterlace):
        t = i / fps
        if keep(i, t):
            yield i, t, frame


# --------------------------------------------------------------------------- validation


def _check_backend(backend: str) -> str:
    if backend not in BACKENDS:
        raise InvalidInputError(
            f"backend={backend!r} is not supported; supported values are "
            f"{', '.join(repr(b) for b in BACKENDS)}"
        )
    return backend


def _check_threads(threads: object) -> int:
    value = as_int(threads)
    if value is None or value < 0:
        raise InvalidInputError(
            f"threads must be an integer >= 0 (0 lets FFmpeg choose), got {threads!r}"
        )
    return value


def _check_file(path: str | os.PathLike[str]) -> str:
    """Reject what is not a readable, non-empty file with an error that says what was found."""
    try:
        p = Path(os.fspath(path))
    except TypeError as exc:
        raise InvalidInputError(f"path must be a str or os.PathLike, got {path!r}") from exc
    if not p.exists():
        raise ArtifactNotFoundError(
            f"video file not found: '{p}' (working directory: {Path.cwd()}); check the path"
        )
    if p.is_dir():
        raise InvalidVideoError(f"'{p}' is a directory; pass the path of a video file")
    size = p.stat().st_size
    if size == 0:
        raise InvalidVideoError(
            f"'{p}' is empty (0 bytes), so there is nothing to decode; the file was probably not "
            "fully written or copied: re-create or re-download it"
        )
    kind, still = _sniff(p, size)
    if still and not is_animated_image(p):
        one = " (a still image: one frame)" if kind in ("a WebP image", "a PNG image") else ""
        raise InvalidVideoError(
            f"'{p}' is {kind}{one}, not a video; pass a video file (mp4, webm, avi, mkv, gif, "
            "animated WebP or PNG, ...)"
        )
    return str(p)


def is_animated_image(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` declares an animation: a WebP whose VP8X header has the animation flag,
    or a PNG with an acTL chunk before its image data (APNG). Read from the headers only; the
    Pillow backend then decodes it, or says why it cannot."""
    try:
        with Path(path).open("rb") as f:
            head = f.read(21)
            if head[:4] == b"RIFF" and head[8:16] == b"WEBPVP8X":
                return len(head) > 20 and bool(head[20] & 0x02)
            if not head.startswith(b"\x89PNG\r\n\x1a\n"):
                return False
            f.seek(8)
            for _ in range(64):  # acTL must come before the first IDAT
                chunk = f.read(8)
                if len(chunk) < 8 or chunk[4:8] in (b"IDAT", b"IEND"):
                    return False
                if chunk[4:8] == b"acTL":
                    return True
                f.seek(int.from_bytes(chunk[:4], "big") + 4, os.SEEK_CUR)
    except OSError:
        return False
    return False


def _sniff(p: Path, size: int) -> tuple[str, bool]:
    """(what the file looks like, whether it is a still image) from its first bytes."""
    try:
        with p.open("rb") as f:
            head = f.read(512)
    except OSError as exc:
        return f"an unreadable file ({exc})", False
    if head.startswith(b"\xff\xd8\xff"):
        return "a JPEG image", True
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "a PNG image", True
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "a WebP image", True
    if head[4:8] == b"ftyp":
        boxes = _mp4_boxes(p, size)
        if "moov" not in boxes:
            return (
                f"an MP4/MOV file without its 'moov' index (top-level boxes: {', '.join(boxes)}), "
                "which happens when the file was cut short or is still being written",
                False,
            )
        return f"an MP4/MOV file (top-level boxes: {', '.join(boxes)})", False
    signatures = (
        (b"\x1a\x45\xdf\xa3", "a Matroska/WebM file"),
        (b"%PDF", "a PDF document"),
        (b"PK\x03\x04", "a ZIP archive"),
        (b"ID3", "an MP3 audio file"),
        (b"fLaC", "a FLAC audio file"),
        (b"OggS", "an Ogg file"),
        (b"GIF8", "a GIF image"),
    )
    for magic, kind in signatures:
        if head.startswith(magic):
            return kind, False
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        return "a WAV audio file", False
    if head[:4] == b"RIFF":
        return f"a RIFF file of type {head[8:12].decode('latin-1')!r}", False
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if text.startswith((b"<!doctype html", b"<html")) or b"<html" in text:
        return "an HTML document", False
    decoded = head.decode("utf-8", errors="replace").rstrip("\ufffd")  # may cut a character
    if decoded and all(c.isprintable() or c in "\t\r\n" for c in decoded):
        return "a text file", False
    return f"unrecognised data (first bytes: {head[:8].hex(' ')})", False


def _mp4_boxes(p: Path, size: int) -> list[str]:
    """Names of the top-level ISO-BMFF boxes; a box that runs past the end is marked 'cut'."""
    boxes: list[str] = []
    offset = 0
    with p.open("rb") as f:
        while offset + 8 <= size and len(boxes) < 32:
            f.seek(offset)
            header = f.read(16)
            box_size = int.from_bytes(header[:4], "big")
            name = header[4:8].decode("latin-1")
            if box_size == 1 and len(header) >= 16:
                box_size = int.from_bytes(header[8:16], "big")
            elif box_size == 0:
                box_size = size - offset
            if box_size < 8:
                boxes.append(f"{name} (bad size)")
                break
            boxes.append(name if offset + box_size <= size else f"{name} (cut)")
            offset += box_size
    return boxes


def _describe(path: str) -> str:
    p = Path(path)
    try:
        size = p.stat().st_size
    except OSError as exc:
        return f"the file cannot be read ({exc})"
    return f"found {_sniff(p, size)[0]}, {size} bytes"


# --------------------------------------------------------------------------- backends


class _CannotOpenError(InvalidVideoError):
    """A backend could not open the file at all: with ``backend="auto"`` the next one is tried."""


def _import(module: str, package: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependencyError(
            f"the {package!r} package is needed for this video backend but `import {module}` "
            f"failed ({exc}); install it with: pip install {package} (a dependency of "
            f"deepfake-engine), or pass another backend= of {', '.join(repr(b) for b in BACKENDS)}"
        ) from exc


def _rotation_cw(ccw_degrees: float) -> tuple[int, str | None]:
    """Clockwise right angle to apply for a display matrix rotating ``ccw_degrees`` CCW."""
    cw = (-float(ccw_degrees)) % 360.0
    quarter = round(cw / 90.0) % 4
    note = None
    if abs(((cw - 90.0 * quarter) + 180.0) % 360.0 - 180.0) > 1.0:
        note = f"display rotation of {cw:.1f} degrees rounded to {90 * quarter}"
    return 90 * quarter, note


def _upright(image: np.ndarray, rotation: int) -> np.ndarray:
    if rotation:
        image = np.rot90(image, k=-(rotation // 90))  # np.rot90 turns counter-clockwise
    return np.ascontiguousarray(image)


@dataclass(frozen=True)
class _StreamIndex:
    """What one demux pass (no decoding) tells about the video stream."""

    pts: tuple[int | None, ...]  # per packet, in decode order
    dts: tuple[int | None, ...]
    keyframes: tuple[int, ...]  # decode-order positions of keyframe packets
    disposable: frozenset[int]  # positions of H.264 pictures no other picture references
    discard: frozenset[int]  # positions of packets flagged discard (decoded, never shown)
    seek_unsafe: str | None  # why pts-based seeking can't be trusted; None when it can
    fps: float | None
    duration_s: float | None
    codec: str
    container: str
    warnings: tuple[str, ...]
    video_bytes: int = 0  # bytes of the video packets

    @property
    def count(self) -> int:
        """Frames a player presents: packets not flagged discard."""
        return len(self.pts) - len(self.discard)

    def shown_pts(self) -> list[int]:
        """pts of the presented frames in presentation order (only when seeking is safe)."""
        shown = (p for i, p in enumerate(self.pts) if i not in self.discard)
        return sorted(shown)  # type: ignore[type-var]  # no None: seek_unsafe checked that


class _SeekFailedError(Exception):
    """Internal: seeking did not behave as the demux index predicted; decode sequentially."""


class _PyAVSession:
    """One opened container + video stream, decoding with error accounting."""

    def __init__(self, av: Any, path: str, threads: int) -> None:
        self.av = av
        self.path = path
        try:
            self.container = av.open(path, metadata_errors="ignore")
        except (av.error.FFmpegError, UnicodeDecodeError, OSError) as exc:
            reason = getattr(exc, "strerror", None) or str(exc)
            raise _CannotOpenError(
                f"'{path}' cannot be read as a video: FFmpeg/PyAV says {reason!r}; "
                f"{_describe(path)}. {_BAD_FILE_HINT}"
            ) from exc
        try:
            self.stream = self._pick_stream(threads)
        except BaseException:
            self.container.close()
            raise
        self.sent = 0  # video packets sent to the decoder
        self.rotation: int | None = None
        self.errors: list[str] = []
        self.error_count = 0
        self.decode_failures = 0  # packets the decoder rejected
        self.frames_out = 0
        self.colour = FrameConverter(av, "keep")  # what bgr() does to colours; see _session
        self.deinterlacer = Deinterlacer(av, "off")  # what take() does to fields; see _session
        self.times: dict[int, float | None] = {}  # presentation time of each frame taken
        self.reformatter: Any = None  # swscale context of bgr(), made on first use
        self.source_colour: ColourDescription | None = None
        # Packets kept from the demux pass, decoded instead of demuxing again (see replay).
        self.kept: list[Any] | None = None
        self.kept_all = False  # the kept packets are the whole stream
        self.more: Any = None  # the container opened again when the kept packets ran out

    def _pick_stream(self, threads: int) -> Any:
        av, path, container = self.av, self.path, self.container
        fmt = container.format.name
        if fmt in _NOT_VIDEO_FORMATS or fmt.endswith("_pipe"):
            raise InvalidVideoError(
                f"'{path}' was read by FFmpeg's {fmt!r} demuxer (a still image or text), "
                f"not as a video; {_describe(path)}. Pass a video file"
            )
        attached = av.stream.Disposition.attached_pic
        videos = [s for s in container.streams.video if not s.disposition & attached]
        if not videos:
            found = ", ".join(
                f"{s.type} ({s.codec_context.name if s.codec_context else 'unknown codec'})"
                for s in container.streams
            )
            raise InvalidVideoError(
                f"'{path}' has no video stream (found: {found or 'no stream at all'}); it is "
                "probably an audio-only file. Pass a file that contains video"
            )
        stream = videos[0]
        if stream.codec_context is None:
            raise _CannotOpenError(
                f"'{path}': this FFmpeg build has no decoder for its video codec; install a "
                "PyAV/FFmpeg build with that decoder or convert the video (e.g. to H.264 mp4)"
            )
        stream.codec_context.thread_type = "AUTO"
        stream.codec_context.thread_count = threads
        return stream

    def close(self) -> None:
        if self.more is not None:
            self.more.close()
        self.deinterlacer.close()
        self.colour.close()
        self.container.close()

    def __enter__(self) -> _PyAVSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def replay(self, kept: list[Any], whole: bool) -> None:
        """Decode ``kept`` (the first video packets of this container's demux pass, in
        decode order) instead of demuxing the file again: :meth:`packets` yields them and
        then ends when they are the whole stream (``whole``), else goes on with
        :meth:`_after_kept`."""
        self.kept, self.kept_all = kept, whole

    def packets(self) -> Iterator[Any]:
        """Non-empty video packets; a demux error ends the stream and is recorded."""
        if self.kept is not None:
            yield from self.kept
            if not self.kept_all:
                yield from self._after_kept(len(self.kept))
            return
        try:
            for packet in self.container.demux(self.stream):
                if packet.size > 0:
                    yield packet
        except self.av.error.FFmpegError as exc:
            self._error(f"demuxing stopped: {exc}")

    def _after_kept(self, skip: int) -> Iterator[Any]:
        """The packets after the first ``skip`` kept ones, when the decoder needs more (its
        delay, or frames it cannot decode): the file is opened again and demuxed from the
        start, the packets already decoded are skipped (demuxed, not decoded) and the rest go
        to the same decoder, so it sees the packet sequence of a single demux. A failure to
        open or demux ends the stream and is recorded."""
        av = self.av
        try:
            self.more = av.open(self.path, metadata_errors="ignore")
            stream = self.more.streams[self.stream.index]
            seen = 0
            for packet in self.more.demux(stream):
                if packet.size > 0:
                    seen += 1
                    if seen > skip:
                        yield packet
        except (av.error.FFmpegError, UnicodeDecodeError, OSError) as exc:
            self._error(f"demuxing stopped: {exc}")

    def decode(self, packet: Any | None) -> list[Any]:
        """Frames out after sending ``packet`` (None drains the decoder); errors are recorded."""
        if packet is not None:
            self.sent += 1
        try:
            frames = self.stream.codec_context.decode(packet)
        except self.av.error.EOFError:
            return []
        except self.av.error.FFmpegError as exc:
            self.decode_failures += 1
            self._error(f"decoding failed: {exc}")
            return []
        self.frames_out += len(frames)
        return frames

    def frames(self) -> Iterator[Any]:
        """Every frame from the current position, in presentation order, then drain."""
        for packet in self.packets():
            yield from self.decode(packet)
        yield from self.decode(None)

    def seek_to_keyframe(self, pts: int) -> Iterator[Any]:
        self.deinterlacer.reset()  # a new run: the frames before it are not its neighbours
        try:
            self.container.seek(pts, stream=self.stream, backward=True, any_frame=False)
        except self.av.error.FFmpegError as exc:
            raise _SeekFailedError(f"seek to pts {pts} failed: {exc}") from exc
        return self.packets()

    def take(self, index: int, frame: Any, target: bool) -> list[tuple[int, np.ndarray]]:
        """Frame ``index`` (presentation order) decoded in the current run; ``target``: it is to
        be returned. Returns the targets now ready as upright BGR ``(index, image)``, in index
        order: at once, or for a frame to deinterlace once its next frame was taken (see
        :class:`preprocess.colour.Deinterlacer`; raises its ``DeinterlaceGapError`` when a
        neighbour is missing from the run). :meth:`take_end` at the end of the stream."""
        if target:
            self.times[index] = frame.time
        return [(i, self.bgr(f)) for i, f in self.deinterlacer.feed(index, frame, target)]

    def take_end(self) -> list[tuple[int, np.ndarray]]:
        """The end of the stream: the targets still waiting for their next frame."""
        return [(i, self.bgr(f)) for i, f in self.deinterlacer.finish()]

    def bgr(self, frame: Any) -> np.ndarray:
        """The frame as upright BGR uint8, its colours converted as the session's mode says."""
        if self.rotation is None:
            self.rotation, note = _rotation_cw(frame.rotation)
            if note:
                self._error(note)
            self.source_colour = describe_frame(frame)
        # Frames needing no colour conversion (8-bit BT.709, BT.601, untagged, ...) come back
        # unchanged, so their pixels are exactly what they always were (and OpenCV's).
        frame = self.colour(frame)
        # Bicubic, as OpenCV and ffmpeg's CLI: it only matters for odd sizes, where swscale
        # takes its generic path, and it makes both backends pixel-identical there too. One
        # reformatter per video keeps swscale's context (frame.to_ndarray makes a new one per
        # frame), on one thread (its default spawns one per core): the same pixels, measured
        # 1.6-2.0 -> 0.7-1.0 ms per 1080p frame on 2 cores.
        if self.reformatter is None:
            self.reformatter = self.av.video.reformatter.VideoReformatter()
        bgr = self.reformatter.reformat(
            frame, format="bgr24", interpolation="BICUBIC", threads=1
        ).to_ndarray()
        return _upright(bgr, self.rotation)

    def _error(self, message: str) -> None:
        self.error_count += 1
        if len(self.errors) < 5:
            self.errors.append(message)

    def warnings(self) -> list[str]:
        out = list(self.errors)
        if self.error_count > len(self.errors):
            out.append(f"... and {self.error_count - len(self.errors)} more decode problems")
        return out + self.colour.warnings() + self.field_warnings()

    def field_warnings(self) -> list[str]:
        """What was done to interlaced frames: deinterlaced, or kept woven (``"off"``)."""
        d, seen = self.deinterlacer, self.colour.seen
        order = d.field_order if d.field_order in ("tff", "bff") else "read from each frame"
        if d.deinterlaced:
            return [
                f"interlaced video (field order {order}): {d.deinterlaced} of the {seen} "
                f"frames read were deinterlaced by FFmpeg's bwdif, one frame per frame, as a "
                "player shows them; pass deinterlace='off' to keep the woven fields"
            ]
        if self.colour.interlaced:
            why = "deinterlace='off'" if d.mode == "off" else "deinterlacing was not possible"
            return [
                f"{self.colour.interlaced} of the {seen} frames read are interlaced (woven "
                f"fields) and were kept so ({why}): their moving edges are combed"
            ]
        return []

    def no_frame_error(self) -> InvalidVideoError:
        why = "; ".join(self.errors) or "the video stream holds no decodable frame"
        return InvalidVideoError(
            f"'{self.path}': no frame could be decoded ({why}); {_describe(self.path)}. "
            "The file is probably truncated or corrupt: re-create or re-download it"
        )


class _PyAVBackend:
    name = "pyav"

    def __init__(self) -> None:
        self.av = _import("av", "av")

    def _session(
        self, path: str, threads: int = 0, colour: str = "keep", deinterlace: str = "off"
    ) -> _PyAVSession:
        s = _PyAVSession(self.av, path, threads)
        s.colour = FrameConverter(self.av, colour, path)
        ctx = s.stream.codec_context
        s.deinterlacer = Deinterlacer(
            self.av, deinterlace, path, field_order=ctx.field_order, codec=ctx.name
        )
        return s

    # ----- demux index

    def index(self, path: str) -> _StreamIndex:
        with self._session(path) as s:
            return self._scan(s)[0]

    def _scan(self, s: _PyAVSession, keep: int = 0) -> tuple[_StreamIndex, list[Any]]:
        """The demux index of the opened session ``s`` (one pass over its packets, no
        decoding) and, kept for decoding, its non-empty video packets from the first up to the
        ``keep``-th one not flagged discard (a prefix of the stream, in decode order)."""
        path, stream, warnings = s.path, s.stream, []
        kept: list[Any] = []
        pts: list[int | None] = []
        dts: list[int | None] = []
        durations: list[int] = []
        keyframes: list[int] = []
        disposable: set[int] = set()
        discard: set[int] = set()
        corrupt: list[int] = []
        video_bytes = 0
        nal_length = _h264_nal_length_size(stream)
        for packet in s.packets():
            i = len(pts)
            if not packet.is_discard:  # what an edit list hides is not shown, nor counted
                video_bytes += packet.size
            if packet.is_keyframe:
                keyframes.append(i)
            elif nal_length is not None and _h264_is_disposable(bytes(packet), nal_length):
                disposable.add(i)
            if packet.is_discard:
                discard.add(i)
            if i - len(discard) < keep:  # the packets up to the `keep`-th presented frame
                kept.append(packet)
            if packet.is_corrupt:
                corrupt.append(i)
            pts.append(packet.pts)
            dts.append(packet.dts)
            durations.append(packet.duration or 0)
        warnings += s.warnings()
        tb = stream.time_base
        rate = stream.average_rate or stream.guessed_rate
        fps = float(rate) if rate and rate > 0 else None
        restarts, jumps = _timestamp_breaks(dts, keyframes, tb)
        if restarts or jumps:
            logger.debug(
                "%s: timestamps restart at packets %s and jump at %s (joined streams?)",
                path,
                restarts,
                jumps,
            )
        # A transport stream joined to another with `cat` restarts its continuity counters,
        # and FFmpeg flags the PES in progress at the join corrupt although its bytes are
        # whole: corrupt flags just before a keyframe that starts new timestamps are the join.
        keys = set(keyframes)
        joins = [r for r in (*restarts, *jumps) if r in keys]
        corrupt = [c for c in corrupt if not any(0 < r - c <= _JOIN_SLACK for r in joins)]
        if corrupt:
            warnings.append(f"{len(corrupt)} video packet(s) flagged corrupt (truncated file?)")
        span_s = _shown_duration(pts, durations, discard, restarts, tb, fps)
        header_frames = stream.frames or 0
        truncated = header_frames > len(pts)
        if header_frames and header_frames != len(pts):
            logger.debug("%s: header says %d frames, demuxed %d", path, header_frames, len(pts))
            if truncated:
                warnings.append(
                    f"the header announces {header_frames} frames but only {len(pts)} are "
                    "in the file: it is probably truncated"
                )
        fmt = s.container.format.name
        if fmt == "mpegts" and all(Path(path).stat().st_size % k for k in (188, 192, 204)):
            warnings.append(
                "the file ends in the middle of an MPEG-TS packet: it is probably truncated"
            )
        header_s = _header_duration(stream)
        if header_s and span_s is not None and not truncated:
            slack = max(3.0 / fps if fps else 0.2, 0.02 * header_s)
            if span_s < header_s - slack:
                truncated = True
                warnings.append(
                    f"the video stream ends at {span_s:.2f} s but its header says "
                    f"{header_s:.2f} s: the file is probably truncated"
                )
        # As ffprobe: the stream duration the container states (an MP4 edit list's, for a
        # cut), unless the file is cut short or its timestamps restart (FFmpeg's estimate
        # then covers one segment); else the span of the presented frames.
        duration_s = header_s if header_s and not truncated and not restarts else span_s
        seek_unsafe = _seek_unsafe(pts, keyframes)
        if not seek_unsafe and restarts:
            seek_unsafe = f"timestamps restart at packet {restarts[0]} (joined streams?)"
        index = _StreamIndex(
            pts=tuple(pts),
            dts=tuple(dts),
            keyframes=tuple(keyframes),
            disposable=frozenset(disposable),
            discard=frozenset(discard),
            seek_unsafe=seek_unsafe,
            fps=fps,
            duration_s=duration_s,
            codec=stream.codec_context.name,
            container=fmt,
            warnings=tuple(warnings),
            video_bytes=video_bytes,
        )
        return index, kept

    @staticmethod
    def _info(
        path: str,
        index: _StreamIndex,
        s: _PyAVSession,
        first: np.ndarray,
        count: int | None = None,
    ) -> VideoInfo:
        return VideoInfo(
            path=path,
            width=int(first.shape[1]),
            height=int(first.shape[0]),
            fps=index.fps,
            frame_count=index.count if count is None else count,
            duration_s=index.duration_s,
            rotation=s.rotation or 0,
            codec=index.codec,
            container=index.container,
            colour=s.source_colour,
            frame_count_source="index" if count is None else "decode",
            video_bytes=index.video_bytes or None,
            field_order=s.deinterlacer.field_order,
        )

    # ----- public operations

    def probe(self, path: str) -> VideoInfo:
        index = self.index(path)
        for warning in index.warnings:
            logger.warning("%s: %s", path, warning)
        with self._session(path) as s:
            for frame in s.frames():
                return self._info(path, index, s, s.bgr(frame))
            raise s.no_frame_error()

    def read(
        self,
        path: str,
        n: int,
        sampling: str,
        threads: int,
        colour: str,
        deinterlace: str = "auto",
    ) -> VideoClip:
        if sampling == "first":
            # One open: the first frames are decoded from the packets the demux pass kept
            # (the same packets in the same order, so the same pixels), not demuxed again
            # (unless the decoder needs more than were kept: see _PyAVSession._after_kept).
            s = self._session(path, threads, colour, deinterlace)
            try:
                index, kept = self._scan(s, keep=n + _REPLAY_SLACK)
            except BaseException:
                s.close()
                raise
            if s.error_count:  # a demux error: decode from a fresh open, as before
                s.close()
                s = self._session(path, threads, colour, deinterlace)
            else:
                s.replay(kept, whole=len(kept) == len(index.pts))
        else:
            index = self.index(path)
            s = self._session(path, threads, colour, deinterlace)
        warnings = list(index.warnings)
        targets = sample_indices(index.count, n, sampling)
        decoded: int | None = None  # frames a full decode gave, when one was needed
        sent = 0

        def reopen(one_thread: bool) -> _PyAVSession:
            # Frame-threaded decoding of damaged data is not reproducible (which frames fail
            # and how they are concealed depends on thread timing), so once frames have failed
            # the video is decoded again on one thread, the same way in every pass.
            nonlocal sent
            sent += s.sent
            s.close()
            return self._session(path, 1 if one_thread else threads, colour, deinterlace)

        try:
            if sampling == "first" or not targets:
                picked = self._pick_sequential(s, list(range(n)))
                if s.decode_failures and threads != 1:
                    s = reopen(True)
                    picked = self._pick_sequential(s, list(range(n)))
            else:
                picked = None
                failed = False  # frames failed to decode: one thread from here on
                if index.seek_unsafe:
                    logger.debug("%s: decoding sequentially (%s)", path, index.seek_unsafe)
                else:
                    try:
                        picked = self._pick_by_seeking(s, index, targets)
                    except (_SeekFailedError, DeinterlaceGapError) as exc:
                        logger.debug("%s: seeking failed (%s); decoding sequentially", path, exc)
                    failed = s.decode_failures > 0
                    if failed:
                        picked = None
                        logger.debug("%s: frames failed to decode; decoding sequentially", path)
                    if picked is None:
                        s = reopen(failed)
                if picked is None:
                    # Uniform targets end at the last frame, so this decodes the whole video
                    # and counts what the decoder really gives.
                    picked, decoded = self._pick_sequential(s, targets, to_end=True)
                    if s.decode_failures and not failed and threads != 1:
                        failed = True
                        s = reopen(True)
                        picked, decoded = self._pick_sequential(s, targets, to_end=True)
                    if decoded == index.count:
                        decoded = None
                    else:
                        warnings.append(_count_note(index.count, decoded))
                        targets = sample_indices(decoded, n, sampling)
                        if set(targets) != set(picked):
                            s = reopen(failed)
                            picked = self._pick_sequential(s, targets)
            warnings += s.warnings()
            sent += s.sent
        finally:
            s.close()
        if not picked:
            raise s.no_frame_error()
        indices = sorted(picked)
        frames = [picked[i] for i in indices]
        count = index.count if decoded is None else decoded
        if len(frames) < n:
            warnings.append(
                f"asked for {n} frames ({sampling}) but the video gives {len(frames)}"
                + (f" of its {count}" if count != len(frames) else "")
            )
        warnings += _size_warnings(indices, frames)
        return VideoClip(
            info=self._info(path, index, s, frames[0], decoded),
            frames=frames,
            indices=indices,
            backend=self.name,
            warnings=tuple(warnings),
            frames_decoded=sent,
            colour=s.colour.conversion,
            interlaced_frames=s.colour.interlaced,
            frames_seen=s.colour.seen,
            deinterlaced=s.deinterlacer.deinterlaced,
            deinterlace=s.deinterlacer.filters if s.deinterlacer.deinterlaced else None,
            times=tuple(s.times.get(i) for i in indices),
        )

    def iter(
        self, path: str, threads: int, colour: str, deinterlace: str = "auto"
    ) -> Iterator[tuple[int, np.ndarray]]:
        return self._iter(self._session(path, threads, colour, deinterlace))

    @staticmethod
    def _iter(s: _PyAVSession) -> Iterator[tuple[int, np.ndarray]]:
        with s:
            i = -1
            for i, frame in enumerate(s.frames()):
                yield from s.take(i, frame, True)
            yield from s.take_end()
            if i < 0:
                raise s.no_frame_error()
            for warning in s.warnings():
                logger.warning("%s: %s", s.path, warning)

    def sample(
        self, path: str, threads: int, colour: str, deinterlace: str, keep: Any
    ) -> Iterator[tuple[int, float, np.ndarray]]:
        """:func:`sample_frames` on PyAV: one pass, only the kept frames converted."""
        s = self._session(path, threads, colour, deinterlace)
        rate = s.stream.average_rate or s.stream.guessed_rate
        spacing = 1.0 / float(rate) if rate and rate > 0 else 0.04
        times: dict[int, float] = {}  # presentation time of each kept frame, from the first
        with s:
            i = -1
            start: float | None = None
            last = -spacing
            for i, frame in enumerate(s.frames()):
                t = frame.time
                if t is None or not math.isfinite(t):  # no timestamp (frames drained at the
                    t = (start or 0.0) + last + spacing  # end): one frame after the last
                if start is None:
                    start = t
                # monotonic: a timestamp that does not move on counts one frame's spacing
                last = t - start if t - start > last else last + spacing
                target = keep(i, last)
                if target:
                    times[i] = last  # only the kept frames' (a deinterlaced one comes later)
                for j, image in s.take(i, frame, target):
                    yield j, times.pop(j, last), image
            for j, image in s.take_end():
                yield j, times.pop(j, last), image
            if i < 0:
                raise s.no_frame_error()
            for warning in s.warnings():
                logger.warning("%s: %s", s.path, warning)

    # ----- frame picking

    @staticmethod
    def _pick_sequential(s: _PyAVSession, targets: list[int], *, to_end: bool = False) -> Any:
        """Decode from the start and keep the frames at ``targets`` (presentation indices).

        Stops after the last target, or with ``to_end`` decodes to the end and also returns
        how many frames the decoder gave: ``(picked, count)``.
        """
        wanted, last = set(targets), max(targets)
        picked: dict[int, np.ndarray] = {}
        count = 0
        for i, frame in enumerate(s.frames()):
            count = i + 1
            picked.update(s.take(i, frame, i in wanted))
            if i >= last and last in picked and not to_end:
                break
        else:  # the stream ended: a frame to deinterlace may still wait for its next frame
            picked.update(s.take_end())
        return (picked, count) if to_end else picked

    @staticmethod
    def _pick_by_seeking(
        s: _PyAVSession, index: _StreamIndex, targets: list[int]
    ) -> dict[int, np.ndarray]:
        """Seek to the keyframe before each far target and decode forward to it (see module doc).

        In a stream whose field order says it is interlaced (``deinterlace="auto"``), each
        target's previous and next frames are decoded in the same run as the target, as bwdif
        reads them (see :class:`preprocess.colour.Deinterlacer`); elsewhere a frame flagged
        interlaced without them makes the caller decode sequentially (DeinterlaceGapError)."""
        pts_sorted = index.shown_pts()  # all ints: seek_unsafe is None
        position = {p: i for i, p in enumerate(index.pts)}
        shown = {p: k for k, p in enumerate(pts_sorted)}  # pts -> presentation index
        wanted = set(targets)
        fields = s.deinterlacer.expects_fields
        needed = wanted
        if fields:
            needed = {k for t in targets for k in (t - 1, t, t + 1) if 0 <= k < len(pts_sorted)}
        needed_pts = {pts_sorted[k] for k in needed}
        picked: dict[int, np.ndarray] = {}
        # The run being decoded (None: decoder drained). The file starts with a keyframe whose
        # pts is the smallest (checked by _seek_unsafe), so the first run needs no seek.
        packets: Iterator[Any] | None = s.packets()
        current = -1  # decode position of the last packet read in this run
        start_pos = 0  # decode position of the keyframe this run started from
        for target in targets:
            if target in picked:
                continue
            target_pts = pts_sorted[target]
            first_pts = pts_sorted[target - 1] if fields and target > 0 else target_pts
            key = _start_keyframe(index, position[first_pts], first_pts)
            if packets is None or key - current > _SEEK_MARGIN:
                packets, start_pos = _PyAVBackend._seek(s, index, position, key)
                current = start_pos - 1
            start_pts = index.pts[start_pos]
            while target not in picked:
                packet = next(packets, None) if packets is not None else None
                if packet is None:
                    frames, packets = s.decode(None), None
                else:
                    current = position.get(packet.pts, -2)
                    if current < 0:
                        raise _SeekFailedError(f"packet with unknown pts {packet.pts}")
                    if current in index.disposable and packet.pts not in needed_pts:
                        continue  # no other picture needs it: skipping it changes no pixel
                    frames = s.decode(packet)
                for frame in frames:
                    pts = frame.pts
                    if pts is None:
                        raise _SeekFailedError(f"decoder gave a frame without pts at {target}")
                    k = shown.get(pts)
                    if k is not None and pts >= start_pts and position[pts] >= start_pos:
                        picked.update(s.take(k, frame, k in wanted and k not in picked))
                    if pts > target_pts and target not in picked:
                        raise _SeekFailedError(f"decoder skipped frame {target} (got pts {pts})")
                if packets is None:
                    picked.update(s.take_end())  # the last frame: its own next frame
                    if target not in picked:
                        raise _SeekFailedError(f"frame {target} not decoded before the end")
        return picked

    @staticmethod
    def _seek(
        s: _PyAVSession, index: _StreamIndex, position: dict[Any, int], key: int
    ) -> tuple[Iterator[Any], int]:
        """Seek so that decoding starts exactly at keyframe ``key``.

        Demuxers seek on dts (mp4, mpeg-ts) or pts (Matroska), and some only roughly (ASF), so
        the seek asks for the smaller of the two and checks where it landed. A landing after
        ``key`` is retried from earlier keyframes; packets between an earlier landing and ``key``
        are dropped unread by the decoder (a keyframe is a valid place to start decoding).
        Returns the packet iterator, starting with ``key``'s packet, and ``key``.
        """
        keys = index.keyframes
        k = keys.index(key)
        for attempt in range(3):
            pos = keys[max(k - attempt, 0)]
            pts, dts = index.pts[pos], index.dts[pos]
            target = min(pts, dts) if dts is not None else pts  # type: ignore[type-var]
            packets = s.seek_to_keyframe(target)  # type: ignore[arg-type]
            landed = None
            for packet in packets:
                landed = position.get(packet.pts)
                if landed is None or landed >= key:
                    break
            if landed == key:
                return itertools.chain([packet], packets), key
            logger.debug("seek to keyframe %d (attempt %d) landed at %s", pos, attempt, landed)
        raise _SeekFailedError(f"seeks to keyframe {key} did not land before it")


def _h264_nal_length_size(stream: Any) -> int | None:
    """NAL length-prefix size of an H.264 stream (0 for Annex B start codes); None if not H.264."""
    if stream.codec_context.name != "h264":
        return None
    extradata = stream.codec_context.extradata or b""
    if len(extradata) >= 7 and extradata[0] == 1:  # avcC: lengthSizeMinusOne in byte 4
        return (extradata[4] & 3) + 1
    return 0


def _h264_nal_headers(data: bytes, length_size: int) -> list[int] | None:
    """First byte of each NAL unit of an H.264 access unit, or None if the packet does not
    parse cleanly as ``length_size``-prefixed NAL units (0: Annex B start codes)."""
    headers: list[int] = []
    if length_size:
        i = 0
        while i < len(data):
            size = int.from_bytes(data[i : i + length_size], "big")
            i += length_size
            if size == 0 or i + size > len(data):
                return None
            headers.append(data[i])
            i += size
        return headers
    if not data.startswith((b"\x00\x00\x01", b"\x00\x00\x00\x01")):
        return None
    i = data.find(b"\x00\x00\x01")
    while 0 <= i < len(data) - 3:
        headers.append(data[i + 3])
        i = data.find(b"\x00\x00\x01", i + 3)
    return headers


def _h264_is_disposable(data: bytes, length_size: int) -> bool:
    """True for a picture that no other picture references: every slice has nal_ref_idc 0, and
    the packet carries no parameter set or extension NAL that later pictures could need. Any
    doubt (a packet that does not parse) answers False, which only costs decoding time."""
    headers = _h264_nal_headers(data, length_size)
    if not headers:
        return False
    slices = 0
    for header in headers:
        nal_type, ref_idc = header & 0x1F, (header >> 5) & 3
        if header & 0x80:  # forbidden_zero_bit: not H.264 as we understand it
            return False
        if 1 <= nal_type <= 5:  # coded slice (or data partition), 5 = IDR
            if ref_idc or nal_type == 5:
                return False
            slices += 1
        elif nal_type in (7, 8, 13, 14, 15, 20, 21):  # SPS, PPS, SPS ext, prefix, subset SPS, MVC
            return False
    return slices > 0


def _header_duration(stream: Any) -> float | None:
    """The video stream's duration as the container header states it, if it does."""
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    tag = stream.metadata.get("DURATION") or stream.metadata.get("duration")
    if tag:  # Matroska: "HH:MM:SS.nnnnnnnnn"
        try:
            h, m, sec = tag.split(":")
            return int(h) * 3600 + int(m) * 60 + float(sec)
        except ValueError:
            return None
    return None


def _seek_unsafe(pts: list[int | None], keyframes: list[int]) -> str | None:
    if not pts:
        return "no video packets"
    if any(p is None for p in pts):
        return "some packets have no pts"
    if len(set(pts)) != len(pts):
        return "some packets share a pts"
    if not keyframes or keyframes[0] != 0:
        return "the first packet is not a keyframe"
    if min(pts) != pts[0]:  # type: ignore[type-var]
        return "frames before the first keyframe in presentation order (open GOP at the start)"
    return None


def _start_keyframe(index: _StreamIndex, position: int, pts: int) -> int:
    """Last keyframe at or before ``position`` in decode order and ``pts`` in presentation order."""
    j = bisect.bisect_right(index.keyframes, position) - 1
    while j > 0 and index.pts[index.keyframes[j]] > pts:  # type: ignore[operator]
        j -= 1
    return index.keyframes[max(j, 0)]


def _timestamp_breaks(
    dts: list[int | None], keyframes: list[int], time_base: Any
) -> tuple[list[int], list[int]]:
    """Decode positions where the dts go backwards (``restarts``: a new segment, as in
    transport streams joined with ``cat``) and where they jump forward by more than
    ``_JUMP_S`` seconds at a keyframe (``jumps``)."""
    restarts: list[int] = []
    jumps: list[int] = []
    keys = set(keyframes)
    limit = _JUMP_S / float(time_base) if time_base else None
    prev: int | None = None
    for i, d in enumerate(dts):
        if d is None:
            continue
        if prev is not None:
            if d < prev:
                restarts.append(i)
            elif limit is not None and i in keys and d - prev > limit:
                jumps.append(i)
        prev = d
    return restarts, jumps


def _shown_duration(
    pts: list[int | None],
    durations: list[int],
    discard: set[int],
    restarts: list[int],
    time_base: Any,
    fps: float | None,
) -> float | None:
    """Seconds spanned by the presented frames, summed over segments (see _timestamp_breaks).

    A segment spans from its smallest pts to its largest plus that frame's duration (one frame
    at ``fps`` when the container gives none), as ffprobe's stream duration.
    """
    if not time_base:
        return None
    bounds = [0, *restarts, len(pts)]
    total, found = 0.0, False
    for start, end in itertools.pairwise(bounds):
        shown = [(pts[i], durations[i]) for i in range(start, end) if i not in discard]
        shown = [(p, d) for p, d in shown if p is not None]
        if not shown:
            continue
        found = True
        first = min(p for p, _ in shown)
        last, last_dur = max(shown)
        total += float((last - first + last_dur) * time_base)
        if not last_dur and fps:
            total += 1.0 / fps
    return total if found else None


def _size_runs(
    indices: list[int], frames: list[np.ndarray]
) -> tuple[list[tuple[tuple[int, int], int, int]], list[tuple[int, tuple[int, int]]]]:
    """Runs of one frame size among the frames read: ``((width, height), first index, last
    index)``, and where each run starts: ``(first index, (width, height))``."""
    runs: list[tuple[tuple[int, int], int, int]] = []
    for i, frame in zip(indices, frames):
        size = (int(frame.shape[1]), int(frame.shape[0]))
        if runs and runs[-1][0] == size:
            runs[-1] = (size, runs[-1][1], i)
        else:
            runs.append((size, i, i))
    return runs, [(a, size) for size, a, _ in runs]


def _size_warnings(indices: list[int], frames: list[np.ndarray]) -> list[str]:
    """A warning naming the sizes when the frames read are not all of one size."""
    runs, _ = _size_runs(indices, frames)
    if len(runs) < 2:
        return []
    parts = ", ".join(
        f"{w}x{h} (frame{f' {a}' if a == b else f's {a}-{b}'})" for (w, h), a, b in runs
    )
    sizes = len({size for size, _, _ in runs})
    return [
        f"the video changes size {len(runs) - 1} time(s) among the frames read ({sizes} sizes: "
        f"{parts}); each frame is used at its own size, as a player shows it, and its face "
        "boxes are in its own pixels"
    ]


def _count_note(listed: int, decoded: int) -> str:
    if decoded < listed:
        return (
            f"{listed - decoded} of the {listed} frames in the file could not be decoded; "
            f"frame_count and indices count the {decoded} decodable frames"
        )
    return (
        f"the decoder gave {decoded} frames where the file lists {listed}; frame_count and "
        "indices count the decoded frames"
    )


class _OpenCVBackend:
    name = "opencv"

    def __init__(self) -> None:
        self.cv2 = _import("cv2", "opencv-python-headless")

    def _open(self, path: str, threads: int = 0) -> Any:
        cv2 = self.cv2
        params = [cv2.CAP_PROP_N_THREADS, threads] if threads else []
        try:
            cap = cv2.VideoCapture(path, cv2.CAP_FFMPEG, params)
            opened = cap.isOpened()
            if opened:  # upright frames, as ffmpeg's CLI shows them (OpenCV's default too)
                cap.set(cv2.CAP_PROP_ORIENTATION_AUTO, 1)
        except cv2.error as exc:
            raise _CannotOpenError(f"'{path}' could not be opened by OpenCV ({exc})") from exc
        if not opened:
            cap.release()
            raise _CannotOpenError(
                f"'{path}' cannot be read as a video by OpenCV; {_describe(path)}. {_BAD_FILE_HINT}"
            )
        return cap

    def _grab(self, cap: Any) -> bool:
        try:
            return bool(cap.grab())
        except self.cv2.error as exc:
            logger.warning("OpenCV grab() failed: %s", exc)
            return False

    def _retrieve(self, cap: Any) -> np.ndarray | None:
        try:
            ok, image = cap.retrieve()
        except self.cv2.error as exc:
            logger.warning("OpenCV retrieve() failed: %s", exc)
            return None
        return np.ascontiguousarray(image) if ok and image is not None else None

    def _count(self, path: str, threads: int) -> tuple[int, Any]:
        """Exact frame count by a grab() pass (decodes, no colour conversion)."""
        cap = self._open(path, threads)
        try:
            count = 0
            while self._grab(cap):
                count += 1
            header = int(cap.get(self.cv2.CAP_PROP_FRAME_COUNT) or 0)
        finally:
            cap.release()
        return count, header

    def _info(self, path: str, cap: Any, count: int | None, first: np.ndarray) -> VideoInfo:
        cv2 = self.cv2
        fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0) or None
        rotation, _ = _rotation_cw(-float(cap.get(cv2.CAP_PROP_ORIENTATION_META) or 0.0))
        fourcc = int(cap.get(cv2.CAP_PROP_FOURCC) or 0)
        codec = fourcc.to_bytes(4, "little").decode("latin-1").strip("\x00 ").lower()
        return VideoInfo(
            path=path,
            width=int(first.shape[1]),
            height=int(first.shape[0]),
            fps=fps,
            frame_count=count,
            duration_s=count / fps if fps and count is not None else None,
            rotation=rotation,
            codec=codec or "unknown",
            container="unknown",
            frame_count_source="decode" if count is not None else "none",  # grab() counts
        )

    def _truncation(self, count: int, header: int) -> list[str]:
        if header > 1.05 * count + 2:  # OpenCV's count is estimated from the duration
            return [
                f"the header announces about {header} frames but only {count} could be "
                "decoded: the file is probably truncated"
            ]
        return []

    def probe(self, path: str) -> VideoInfo:
        count, header = self._count(path, 0)
        for warning in self._truncation(count, header):
            logger.warning("%s: %s", path, warning)
        cap = self._open(path)
        try:
            first = self._retrieve(cap) if self._grab(cap) else None
            if first is None:
                raise self._no_frame(path)
            return self._info(path, cap, count, first)
        finally:
            cap.release()

    def read(
        self,
        path: str,
        n: int,
        sampling: str,
        threads: int,
        colour: str,
        deinterlace: str = "auto",
    ) -> VideoClip:
        # OpenCV neither reports nor converts colour: its frames are as decoded (colour=None).
        # Nor does it say which frames are interlaced, or deinterlace them (deinterlace=None).
        # A video that changes size mid-stream comes out of OpenCV's FFmpeg backend scaled to
        # the first frame's size.
        warnings: list[str] = []
        grabs = 0
        if sampling == "uniform":
            count, header = self._count(path, threads)
            grabs += count
            warnings += self._truncation(count, header)
            targets = sample_indices(count, n, sampling)
        else:
            count, targets = None, list(range(n))
        picked: dict[int, np.ndarray] = {}
        cap = self._open(path, threads)
        try:
            if targets:
                wanted, last = set(targets), max(targets)
                for i in itertools.count():
                    if not self._grab(cap):
                        break
                    grabs += 1
                    if i in wanted:
                        image = self._retrieve(cap)
                        if image is None:
                            break
                        picked[i] = image
                    if i >= last:
                        break
            if not picked:
                raise self._no_frame(path)
            indices = sorted(picked)
            frames = [picked[i] for i in indices]
            if len(frames) < n:
                warnings.append(f"asked for {n} frames ({sampling}) but got {len(frames)}")
            warnings += _size_warnings(indices, frames)
            return VideoClip(
                info=self._info(path, cap, count, frames[0]),
                frames=frames,
                indices=indices,
                backend=self.name,
                warnings=tuple(warnings),
                frames_decoded=grabs,
            )
        finally:
            cap.release()

    def iter(
        self, path: str, threads: int, colour: str, deinterlace: str = "auto"
    ) -> Iterator[tuple[int, np.ndarray]]:
        return self._iter(path, self._open(path, threads))

    def _iter(self, path: str, cap: Any) -> Iterator[tuple[int, np.ndarray]]:
        try:
            for i in itertools.count():
                image = self._retrieve(cap) if self._grab(cap) else None
                if image is None:
                    if i == 0:
                        raise self._no_frame(path)
                    return
                yield i, image
        finally:
            cap.release()

    @staticmethod
    def _no_frame(path: str) -> InvalidVideoError:
        return InvalidVideoError(
            f"'{path}': OpenCV opened the file but decoded no frame; {_describe(path)}. "
            "The file is probably truncated or corrupt, or has no video stream"
        )


def _webp_frame_durations(path: str) -> list[int] | None:
    """Each animation frame's duration (ms) from an animated WebP's ANMF chunks, without
    decoding; None when the file does not parse as RIFF/WEBP."""
    out: list[int] = []
    with open(path, "rb") as f:
        head = f.read(12)
        if head[:4] != b"RIFF" or head[8:12] != b"WEBP":
            return None
        end = 8 + int.from_bytes(head[4:8], "little")
        pos = 12
        while pos + 8 <= end:
            f.seek(pos)
            chunk = f.read(8)
            if len(chunk) < 8:
                break
            size = int.from_bytes(chunk[4:8], "little")
            if chunk[:4] == b"ANMF":
                body = f.read(16)
                if len(body) < 16:
                    break
                out.append(int.from_bytes(body[12:15], "little"))
            pos += 8 + size + (size & 1)
    return out


def _apng_frame_durations(path: str) -> list[float] | None:
    """Each animation frame's duration (ms) from an APNG's fcTL chunks (``delay_num /
    delay_den`` seconds, a zero denominator meaning 100, as the APNG specification says),
    without decoding; None when the file does not parse as PNG."""
    out: list[float] = []
    with open(path, "rb") as f:
        if f.read(8) != b"\x89PNG\r\n\x1a\n":
            return None
        while True:
            chunk = f.read(8)
            if len(chunk) < 8:
                break
            size = int.from_bytes(chunk[:4], "big")
            kind = chunk[4:8]
            if kind == b"fcTL":
                body = f.read(size)
                if len(body) < 26:
                    break
                num, den = int.from_bytes(body[20:22], "big"), int.from_bytes(body[22:24], "big")
                out.append(1000.0 * num / (den or 100))
                f.seek(4, os.SEEK_CUR)
            else:
                if kind == b"IEND":
                    break
                f.seek(size + 4, os.SEEK_CUR)
    return out


class _PillowBackend:
    """Animated WebP and APNG, decoded by Pillow.

    FFmpeg before 9.0 decodes no frame of an animated WebP, and its APNG decoder drops
    transparency rather than composite it; Pillow (libwebp's animation decoder for WebP, its own
    APNG reader) decodes both, applying each frame's disposal and blending to the canvas.

    - Frames: each animation frame once, in order (an APNG's default image that is not part
      of the animation, shown only by viewers without APNG support, is skipped), the whole
      canvas, HxWx3 uint8 BGR. Transparent pixels are composited on **black** (a video
      player's background), ``round(colour * alpha / 255)``, with a warning.
    - Timing: the durations in the file (WebP ANMF chunks, APNG fcTL delays), read without
      decoding: frame ``k`` is presented at the sum of the durations before it
      (``VideoClip.times``), ``VideoInfo.duration_s`` is their sum and ``VideoInfo.fps`` the
      frames over it (None when the durations are all zero).
    - ``first`` and ``uniform`` sampling by frame index, as for GIF through FFmpeg; frames are
      decoded in order (an animation decodes from its start) up to the last target.
    - Orientation: an EXIF orientation of 90, 180 or 270 degrees is applied (``rotation``).
    - Colour: as decoded (an embedded ICC profile is not applied; ``colour`` is None), and
      no interlacing (``deinterlaced`` is None).
    """

    name = "pillow"

    def __init__(self) -> None:
        self.image_module = _import("PIL.Image", "pillow")

    def _open(self, path: str) -> tuple[Any, list[int], list[float]]:
        """The opened image, the Pillow frame numbers of the animation's frames, and each
        one's duration in ms."""
        try:
            im = self.image_module.open(path)
        except Exception as exc:  # Pillow raises several kinds for what it cannot read
            raise _CannotOpenError(
                f"'{path}' cannot be read as an animation by Pillow ({exc}); {_describe(path)}. "
                f"{_BAD_FILE_HINT}"
            ) from exc
        count = int(getattr(im, "n_frames", 1))
        if im.format not in ("WEBP", "PNG") or count < 2:
            im.close()
            raise InvalidVideoError(
                f"'{path}' holds a single picture ({_describe(path)}): a still image, not a "
                "video; pass a video file (mp4, webm, avi, mkv, gif, animated WebP or PNG, ...)"
            )
        first = 1 if getattr(im, "default_image", False) else 0
        numbers = list(range(first, count))
        try:
            parsed = (
                _webp_frame_durations(path) if im.format == "WEBP" else _apng_frame_durations(path)
            )
        except OSError:
            parsed = None
        if parsed is None or len(parsed) != len(numbers):
            logger.debug("%s: frame durations not parsed (%s)", path, parsed)
            parsed = [0.0] * len(numbers)
        return im, numbers, [float(d) for d in parsed]

    @staticmethod
    def _rotation(im: Any) -> int:
        try:
            orientation = im.getexif().get(0x0112)
        except Exception:  # a broken EXIF block: no rotation
            return 0
        return {3: 180, 6: 90, 8: 270}.get(orientation, 0)

    def _info(self, path: str, im: Any, durations: list[float], rotation: int) -> VideoInfo:
        total = sum(durations) / 1000.0
        w, h = im.size
        if rotation in (90, 270):
            w, h = h, w
        fmt = "webp" if im.format == "WEBP" else "apng"
        return VideoInfo(
            path=path,
            width=int(w),
            height=int(h),
            fps=len(durations) / total if total > 0 else None,
            frame_count=len(durations),
            duration_s=total if total > 0 else None,
            rotation=rotation,
            codec=fmt,
            container=fmt,
            frame_count_source="index",
        )

    @staticmethod
    def _bgr(im: Any, rotation: int) -> tuple[np.ndarray, bool]:
        """The current frame as upright BGR uint8, and whether it had transparent pixels."""
        mode = im.mode
        transparent = False
        if mode.startswith("I") or mode == "F":  # 16-bit (or wider) gray: the high byte
            gray = np.asarray(im).astype(np.float64)
            scale = 257.0 if mode.startswith("I;16") or gray.max(initial=0) > 255 else 1.0
            gray = np.clip(np.floor(gray / scale + 0.5), 0, 255).astype(np.uint8)
            rgb = np.repeat(gray[..., None], 3, axis=2)
        elif "A" in mode or "a" in mode or "transparency" in im.info:
            rgba = np.asarray(im.convert("RGBA"))
            alpha = rgba[..., 3:4].astype(np.uint32)
            transparent = bool((alpha < 255).any())
            rgb = ((rgba[..., :3].astype(np.uint32) * alpha + 127) // 255).astype(np.uint8)
        else:
            rgb = np.asarray(im.convert("RGB"))
        return _upright(np.ascontiguousarray(rgb[..., ::-1]), rotation), transparent

    def _decode(
        self, path: str, im: Any, numbers: list[int], wanted: set[int], last: int
    ) -> Iterator[tuple[int, np.ndarray | None, bool]]:
        """``(index, image or None, transparent)`` for frames 0..last in order (an image for
        the wanted ones); a frame Pillow cannot decode ends the run (raised as _DecodeStop)."""
        rotation = self._rotation(im)
        for k, number in enumerate(numbers[: last + 1]):
            try:
                im.seek(number)
                im.load()
            except (EOFError, OSError, ValueError, SyntaxError) as exc:
                raise _DecodeStopError(k, str(exc)) from exc
            if k in wanted:
                image, transparent = self._bgr(im, rotation)
                yield k, image, transparent
            else:
                yield k, None, False

    def probe(self, path: str) -> VideoInfo:
        im, _, durations = self._open(path)
        with im:
            return self._info(path, im, durations, self._rotation(im))

    def read(
        self,
        path: str,
        n: int,
        sampling: str,
        threads: int,
        colour: str,
        deinterlace: str = "auto",
    ) -> VideoClip:
        im, numbers, durations = self._open(path)
        warnings: list[str] = []
        with im:
            count = len(numbers)
            targets = sample_indices(count, n, sampling)
            picked: dict[int, np.ndarray] = {}
            transparent = 0
            decoded = 0
            if targets:
                try:
                    for k, image, alpha in self._decode(
                        path, im, numbers, set(targets), max(targets)
                    ):
                        decoded += 1
                        if image is not None:
                            picked[k] = image
                            transparent += alpha
                except _DecodeStopError as stop:
                    warnings.append(
                        f"frame {stop.index} of {count} could not be decoded by Pillow "
                        f"({stop.reason}): the file is probably truncated or corrupt"
                    )
            if not picked:
                raise InvalidVideoError(
                    f"'{path}': no frame of the animation could be decoded; {_describe(path)}. "
                    "The file is probably truncated or corrupt: re-create or re-download it"
                )
            info = self._info(path, im, durations, self._rotation(im))
        indices = sorted(picked)
        frames = [picked[i] for i in indices]
        if len(frames) < n:
            warnings.append(
                f"asked for {n} frames ({sampling}) but the animation gives {len(frames)}"
                + (f" of its {count}" if count != len(frames) else "")
            )
        if transparent:
            warnings.append(
                f"{transparent} of the {len(frames)} frames read have transparent pixels: they "
                "were composited on black"
            )
        warnings += _size_warnings(indices, frames)
        starts = list(itertools.accumulate([0.0, *durations]))
        return VideoClip(
            info=info,
            frames=frames,
            indices=indices,
            backend=self.name,
            warnings=tuple(warnings),
            frames_decoded=decoded,
            times=tuple(starts[i] / 1000.0 for i in indices),
        )

    def iter(
        self, path: str, threads: int, colour: str, deinterlace: str = "auto"
    ) -> Iterator[tuple[int, np.ndarray]]:
        im, numbers, _ = self._open(path)
        return self._iter(path, im, numbers)

    def _iter(self, path: str, im: Any, numbers: list[int]) -> Iterator[tuple[int, np.ndarray]]:
        with im:
            wanted = set(range(len(numbers)))
            transparent = 0
            try:
                for k, image, alpha in self._decode(path, im, numbers, wanted, len(numbers) - 1):
                    transparent += alpha
                    yield k, image  # type: ignore[misc]
            except _DecodeStopError as stop:
                if stop.index == 0:
                    raise InvalidVideoError(
                        f"'{path}': no frame of the animation could be decoded ({stop.reason})"
                    ) from None
                logger.warning(
                    "%s: frame %d could not be decoded (%s)", path, stop.index, stop.reason
                )
            if transparent:
                logger.warning(
                    "%s: %d frames have transparent pixels: composited on black", path, transparent
                )


class _DecodeStopError(Exception):
    """Internal: Pillow could not decode animation frame ``index``."""

    def __init__(self, index: int, reason: str) -> None:
        super().__init__(f"frame {index}: {reason}")
        self.index = index
        self.reason = reason


_BACKEND_CLASSES: dict[str, type[_PyAVBackend] | type[_OpenCVBackend] | type[_PillowBackend]] = {
    "pyav": _PyAVBackend,
    "opencv": _OpenCVBackend,
    "pillow": _PillowBackend,
}


def _dispatch(backend: str, path: str, op: Any) -> Any:
    """Run ``op(backend_instance)``; with "auto", Pillow for an animated WebP or APNG, else PyAV
    then OpenCV when PyAV can't open the file."""
    if backend != "auto":
        return op(_BACKEND_CLASSES[backend]())
    if is_animated_image(path):
        return op(_PillowBackend())
    try:
        pyav = _PyAVBackend()
    except MissingDependencyError as exc:
        logger.warning("PyAV is not available (%s); reading '%s' with OpenCV", exc, path)
        return op(_OpenCVBackend())
    try:
        return op(pyav)
    except _CannotOpenError as exc:
        try:
            opencv = _OpenCVBackend()
        except MissingDependencyError:
            raise exc from None
        logger.warning("PyAV cannot open '%s' (%s); trying OpenCV", path, exc)
        try:
            return op(opencv)
        except _CannotOpenError as exc2:
            raise InvalidVideoError(f"{exc} (OpenCV cannot open it either)") from exc2
