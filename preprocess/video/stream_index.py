"""The demux index of a video stream (one pass over its packets, no decoding) and what is read
from it: the presented frames, where timestamps restart or jump (joined streams), the span of
the presented frames, the header's duration, whether pts-based seeking can be trusted, and the
keyframe a seek starts from."""

from __future__ import annotations

import bisect
import itertools
from dataclasses import dataclass
from typing import Any

# A forward dts jump at a keyframe longer than this is a join too (for the corrupt flags).
_JUMP_S = 1.0


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
