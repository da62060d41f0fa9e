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
