"""The Pillow backend: animated WebP and APNG (see :class:`_PillowBackend`), with each frame's
duration read from the file's chunks without decoding."""

from __future__ import annotations

import itertools
import logging
import os
from collections.abc import Iterator
from typing import Any

import numpy as np

from core.errors import InvalidVideoError
from preprocess.sampling import sample_indices
from preprocess.video.common import _CannotOpenError, _import, _upright
from preprocess.video.info import VideoClip, VideoInfo, _size_warnings
from preprocess.video.sniff import _BAD_FILE_HINT, _describe

logger = logging.getLogger(__name__)


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
