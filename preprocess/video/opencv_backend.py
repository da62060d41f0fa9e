"""The OpenCV backend (its FFmpeg capture): the fallback when PyAV cannot open a file. Frames
as decoded (no colour description or conversion, no deinterlacing); ``uniform`` counts the
frames with a ``grab()`` pass first."""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterator
from typing import Any

import numpy as np

from core.errors import InvalidVideoError
from preprocess.sampling import sample_indices
from preprocess.video.common import _CannotOpenError, _import, _native_logs, _rotation_cw
from preprocess.video.info import VideoClip, VideoInfo, _size_warnings
from preprocess.video.sniff import _BAD_FILE_HINT, _describe

logger = logging.getLogger(__name__)


class _OpenCVBackend:
    name = "opencv"

    def __init__(self) -> None:
        self.cv2 = _import("cv2", "opencv-python-headless")
        _native_logs(self.cv2)  # our errors report a file that cannot be read

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
