"""The PyAV backend: probe, read (``first`` from the packets the demux pass kept; ``uniform``
by seeking to keyframes, or one sequential decode), iterate and sample frames (see the package's
documentation, :mod:`preprocess.video`)."""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from preprocess.colour import DeinterlaceGapError, Deinterlacer, FrameConverter
from preprocess.sampling import sample_indices
from preprocess.video.common import _import, _native_logs
from preprocess.video.h264 import _h264_is_disposable, _h264_nal_length_size
from preprocess.video.info import VideoClip, VideoInfo, _size_warnings
from preprocess.video.pyav_session import _PyAVSession, _SeekFailedError
from preprocess.video.stream_index import (
    _header_duration,
    _seek_unsafe,
    _shown_duration,
    _start_keyframe,
    _StreamIndex,
    _timestamp_breaks,
)

logger = logging.getLogger(__name__)

# Corrupt flags this many packets (or fewer) before a timestamp restart belong to the join.
_JOIN_SLACK = 4
# Continue decoding instead of seeking when the target's keyframe is at most this many packets
# ahead: a seek flushes the decoder and refills its thread pipeline, which costs about as much.
_SEEK_MARGIN = 8
# Packets kept from the demux pass beyond the N first frames, for the decoder's delay (B-frame
# reordering, up to 16 in H.264, plus one frame per frame-decoding thread). When they are not
# enough, the file is opened again and demuxing goes on after them (_PyAVSession._after_kept).
_REPLAY_SLACK = 48


class _PyAVBackend:
    name = "pyav"

    def __init__(self) -> None:
        self.av = _import("av", "av")
        _native_logs(self.av)  # our errors report a file that cannot be read

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
        """Seek to the keyframe before each far target and decode forward to it (package doc).

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
