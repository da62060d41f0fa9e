"""One video opened with PyAV (FFmpeg): the container and its video stream, packets (demuxed,
or replayed from the demux pass), decoding with error accounting, seeking to a keyframe, and
frames converted to upright BGR (colour conversion, deinterlacing)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from core.errors import InvalidVideoError
from preprocess.colour import ColourDescription, Deinterlacer, FrameConverter, describe_frame
from preprocess.video.common import _CannotOpenError, _rotation_cw, _upright
from preprocess.video.sniff import _BAD_FILE_HINT, _describe

# FFmpeg demuxers that read still images or text; such a file is not a video for this engine.
_NOT_VIDEO_FORMATS = frozenset({"image2", "tty"})


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
