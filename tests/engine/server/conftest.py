"""Fixtures of the ``dfe serve`` tests: one loaded Engine, TestClient apps, a live uvicorn."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from engine.server.live import live_server  # noqa: F401 (re-exported for the tests)

pytest.importorskip("fastapi", reason="dfe serve needs the `serve` extra (fastapi)")
pytest.importorskip("uvicorn", reason="dfe serve needs the `serve` extra (uvicorn)")
pytest.importorskip("multipart", reason="dfe serve needs the `serve` extra (python-multipart)")


@pytest.fixture(scope="session")
def serve_engine(tiny_model, shared_dir):
    from engine.api import Engine

    engine = Engine.load(
        tiny_model, backend="ort", models_dir=str(shared_dir / "models"), download=False
    )
    engine.prepare()
    return engine


@pytest.fixture
def make_client(serve_engine, tmp_path) -> Iterator[Callable]:
    """make_client(data_dir=None, **create_app options) -> a started TestClient."""
    from fastapi.testclient import TestClient

    from engine.server.app import create_app

    opened = []

    def make(data_dir: Path | None = None, **options):
        app = create_app(serve_engine, data_dir or tmp_path / "data", **options)
        client = TestClient(app)
        client.__enter__()
        opened.append(client)
        return client

    yield make
    for c in opened:
        c.__exit__(None, None, None)


def wait_done(get: Callable[[str], dict], job_id: str, timeout: float = 180) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = get(job_id)
        if job["status"] in ("done", "error"):
            return job
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} not finished after {timeout} s: {job}")


def no_face_video(path: Path, frames: int = 6) -> Path:
    """A small MPEG-4 clip of smooth colour gradients: decodable, with no face."""
    import av
    import numpy as np

    with av.open(str(path), "w") as out:
        stream = out.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = 160, 120, "yuv420p"
        for i in range(frames):
            img = np.zeros((120, 160, 3), np.uint8)
            img[..., 0] = np.linspace(0, 255, 160, dtype=np.uint8)[None]
            img[..., 1] = (i * 30) % 255
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="bgr24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def grayscale_video(src: Path, path: Path, frames: int = 4) -> Path:
    """The first ``frames`` of ``src`` without colour (chroma exactly neutral), MPEG-4: its
    faces read GRAYSCALE_SOURCE (preprocess.quality)."""
    import av
    import numpy as np

    with av.open(str(src)) as inp, av.open(str(path), "w") as out:
        video = inp.streams.video[0]
        w, h = video.width // 2 * 2, video.height // 2 * 2
        stream = out.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        for i, frame in enumerate(inp.decode(video)):
            if i == frames:
                break
            yuv = np.full((h * 3 // 2, w), 128, np.uint8)
            yuv[:h] = frame.to_ndarray(format="gray")[:h, :w]
            for packet in stream.encode(av.VideoFrame.from_ndarray(yuv, format="yuv420p")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def side_by_side_video(left: Path, right: Path, path: Path, frames: int = 4) -> Path:
    """The first ``frames`` of two videos side by side (each scaled to 360 px high): two people
    in one clip, MPEG-4 at a bit rate that keeps the faces sharp."""
    import av
    import cv2
    import numpy as np

    def scaled(frame) -> np.ndarray:
        img = frame.to_ndarray(format="bgr24")
        width = round(img.shape[1] * 360 / img.shape[0]) // 2 * 2
        return cv2.resize(img, (width, 360), interpolation=cv2.INTER_AREA)

    with av.open(str(left)) as a, av.open(str(right)) as b, av.open(str(path), "w") as out:
        stream = out.add_stream("mpeg4", rate=10)
        stream.bit_rate = 4_000_000
        pairs = zip(a.decode(video=0), b.decode(video=0))
        for i, (fa, fb) in enumerate(pairs):
            if i == frames:
                break
            img = np.ascontiguousarray(np.concatenate([scaled(fa), scaled(fb)], axis=1))
            if i == 0:
                stream.width, stream.height, stream.pix_fmt = img.shape[1], 360, "yuv420p"
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="bgr24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def calibrated_copy(model: Path, path: Path, *, fake_at: float, real_below: float) -> Path:
    """A copy of ``model`` whose sidecar has a calibration section (temperature 1) with these
    thresholds: a model whose verdicts a test chooses."""
    import shutil

    from core.verdict import Calibration
    from engine import calibration

    shutil.copytree(model, path)
    calibration.write(
        path, Calibration(temperature=1.0, fake_at=fake_at, real_below=real_below, calibrated=True)
    )
    return path


def thresholds_between(high: float, low: float) -> dict[str, float]:
    """``fake_at`` and ``real_below`` that make a score of ``high`` FAKE and ``low`` REAL, with a
    band of uncertainty between them."""
    assert high - low > 0.005, f"scores too close to tell apart: {high} and {low}"
    mid = (high + low) / 2
    return {"fake_at": (mid + high) / 2, "real_below": (mid + low) / 2}
