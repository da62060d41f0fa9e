"""What a read gives: :class:`VideoInfo` (what a video holds) and :class:`VideoClip` (frames
read, with their indices, times and what was done to them), and the runs of one frame size
among the frames read (a video that changes size mid-stream)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from preprocess.colour import ColourConversion, ColourDescription


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
