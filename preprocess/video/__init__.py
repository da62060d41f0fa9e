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

Animated WebP and APNG are read with Pillow (see :mod:`preprocess.video.pillow_backend`); a
still image (JPEG, PNG, WebP of one frame) is refused with an error that says so.

The package's modules: ``info`` (:class:`VideoInfo`, :class:`VideoClip`), ``sniff`` (file
checks, :func:`is_animated_image`), ``common`` (what the backends share), ``stream_index``
(the demux index: timestamps, keyframes, seek planning), ``h264`` (disposable pictures),
``pyav_session`` and ``pyav_backend`` (PyAV), ``opencv_backend``, ``pillow_backend``; the
public functions are here.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from core.errors import InvalidInputError, InvalidVideoError, MissingDependencyError
from preprocess.colour import COLOUR_MODES, DEINTERLACE_MODES, check_colour, check_deinterlace
from preprocess.sampling import SAMPLING_MODES, as_int, check_count, check_sampling, sample_indices
from preprocess.video.common import BACKENDS, _CannotOpenError
from preprocess.video.info import VideoClip, VideoInfo
from preprocess.video.opencv_backend import _OpenCVBackend
from preprocess.video.pillow_backend import _PillowBackend
from preprocess.video.pyav_backend import _PyAVBackend
from preprocess.video.sniff import _check_file, is_animated_image

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


# --------------------------------------------------------------------------- backends


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
        logger.info("PyAV cannot open '%s' (%s); trying OpenCV", path, exc)
        try:
            result = op(opencv)
        except _CannotOpenError as exc2:  # the error says both: no warning of its own
            raise InvalidVideoError(f"{exc} (OpenCV cannot open it either)") from exc2
        logger.warning("PyAV cannot open '%s' (%s); read with OpenCV", path, exc)
        return result
