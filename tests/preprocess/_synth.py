"""Synthetic test videos encoded with PyAV: each frame shows its own index as a block pattern.

The index is written as 8 bits, one per block of a 4x2 grid, black or white; block means survive
any codec here (including GIF's palette and low-bitrate MPEG-4), so ``read_index`` recovers which
frame a decoded picture is, whatever the codec did to its pixels.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np

GRID_COLS, GRID_ROWS = 4, 2


def pattern(index: int, width: int, height: int) -> np.ndarray:
    """BGR frame showing ``index`` (0..255) as 8 black/white blocks, plus a coloured corner."""
    img = np.full((height, width, 3), 16, np.uint8)
    bw, bh = width // GRID_COLS, height // GRID_ROWS
    for bit in range(GRID_COLS * GRID_ROWS):
        if index >> bit & 1:
            r, c = divmod(bit, GRID_COLS)
            img[r * bh : (r + 1) * bh, c * bw : (c + 1) * bw] = 235
    # A red square at the top-left corner tells orientation apart (kept off the block centres).
    img[: max(2, bh // 6), : max(2, bw // 6)] = (0, 0, 235)
    return img


def read_index(img: np.ndarray) -> int:
    """Inverse of :func:`pattern`: the index shown by an upright decoded frame."""
    height, width = img.shape[:2]
    bw, bh = width // GRID_COLS, height // GRID_ROWS
    value = 0
    for bit in range(GRID_COLS * GRID_ROWS):
        r, c = divmod(bit, GRID_COLS)
        block = img[
            r * bh + bh // 3 : (r + 1) * bh - bh // 3, c * bw + bw // 3 : (c + 1) * bw - bw // 3
        ]
        if block.mean() > 128:
            value |= 1 << bit
    return value


def encode_video(
    path: Path,
    *,
    codec: str,
    frames: int = 40,
    size: tuple[int, int] = (176, 144),
    rate: int = 25,
    pix_fmt: str | None = None,
    options: dict[str, str] | None = None,
    fmt: str | None = None,
    container_options: dict[str, str] | None = None,
    pts: list[int] | None = None,
    time_base: Fraction | None = None,
    rotation: int = 0,
    gop: int | None = 10,
    max_b_frames: int | None = None,
    audio: bool = False,
    start: int = 0,
) -> Path:
    """Encode ``frames`` pattern frames; ``pts`` (in ``time_base``) gives a variable frame rate.

    ``rotation`` is PyAV's ``set_display_rotation`` angle (counter-clockwise); frame ``i``
    shows ``start + i``.
    """
    width, height = size
    with av.open(str(path), "w", format=fmt, options=container_options or {}) as container:
        stream = container.add_stream(codec, rate=rate, options=options or {})
        stream.width, stream.height = width, height
        if pix_fmt:
            stream.pix_fmt = pix_fmt
        if gop is not None:
            stream.codec_context.gop_size = gop
        if max_b_frames is not None:
            stream.codec_context.max_b_frames = max_b_frames
        if time_base is not None:
            stream.codec_context.time_base = time_base
            stream.time_base = time_base
        if rotation:
            stream.set_display_rotation(rotation)
        audio_stream = container.add_stream("aac", rate=16000, layout="mono") if audio else None
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(pattern(start + i, width, height), format="bgr24")
            if pts is not None:
                frame.pts = pts[i]
                frame.time_base = time_base
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
        if audio_stream is not None:
            _write_tone(container, audio_stream, seconds=frames / rate)
    return path


def encode_audio(path: Path, *, codec: str, seconds: float = 0.5, fmt: str | None = None) -> Path:
    """An audio-only file (a 440 Hz tone)."""
    with av.open(str(path), "w", format=fmt) as container:
        stream = container.add_stream(codec, rate=16000, layout="mono")
        _write_tone(container, stream, seconds=seconds)
    return path


_SAMPLE_TYPES = {
    "s16": (np.int16, 32767),
    "s32": (np.int32, 2**31 - 1),
    "flt": (np.float32, 1.0),
    "dbl": (np.float64, 1.0),
}


def _write_tone(container: av.container.OutputContainer, stream, *, seconds: float) -> None:
    rate = stream.codec_context.sample_rate
    fmt = stream.codec_context.format.name
    layout = stream.codec_context.layout.name
    chunk = stream.codec_context.frame_size or 1024
    total = int(seconds * rate)
    t = np.arange(total) / rate
    tone = (0.2 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    for start in range(0, total, chunk):
        part = tone[start : start + chunk]
        dtype, scale = _SAMPLE_TYPES[fmt.rstrip("p")]
        data = (part * scale).astype(dtype)[None, :]
        frame = av.AudioFrame.from_ndarray(data, format=fmt, layout=layout)
        frame.sample_rate = rate
        frame.pts = start
        for packet in stream.encode(frame):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)
