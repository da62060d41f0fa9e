"""The embedded default of ``make demo``: which clips and which detector to use.

Clips: the shared test videos (``../shared/videos`` or ``$DFE_SHARED/videos``) when present,
otherwise short clips rendered from the real face photographs that ship inside the insightface
wheel (a slow zoom and pan, so every frame differs). Detector: the models directory
(``$DFE_MODELS``, or ``../shared/models`` when present), else downloaded.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from core.errors import ArtifactNotFoundError
from core.paths import env, shared_dir

log = logging.getLogger(__name__)

__all__ = ["default_models_dir", "demo_videos", "render_clip", "shared_dir"]


def default_models_dir() -> str | None:
    """``$DFE_MODELS`` when set, else the shared test models when present, else None (the
    default models directory, with downloads)."""
    if env("DFE_MODELS"):
        return env("DFE_MODELS")
    shared = shared_dir() / "models"
    return str(shared) if shared.is_dir() else None


def _insightface_images() -> list[Path]:
    import importlib.util

    spec = importlib.util.find_spec("insightface")
    if spec is None or not spec.submodule_search_locations:
        return []
    images = Path(next(iter(spec.submodule_search_locations))) / "data" / "images"
    return sorted(p for p in images.glob("*") if p.name in ("t1.jpg", "Tom_Hanks_54745.png"))


def render_clip(image_path: Path, out: Path, *, frames: int = 30, fps: int = 25) -> Path:
    """A short H.264 clip of a slow zoom and pan over a still photograph."""
    import av
    import cv2

    img = cv2.imread(str(image_path))
    if img is None:
        raise ArtifactNotFoundError(f"cannot read the demo image {image_path}")
    h, w = img.shape[:2]
    out_w, out_h = (w // 2) * 2, (h // 2) * 2
    out.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(out), "w") as container:
        stream = container.add_stream("h264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = out_w, out_h, "yuv420p"
        for i in range(frames):
            z = 1.0 + 0.1 * i / max(frames - 1, 1)
            m = np.float32([[z, 0, -(z - 1) * w / 2 + i], [0, z, -(z - 1) * h / 2]])
            frame = cv2.warpAffine(img, m, (out_w, out_h), borderMode=cv2.BORDER_REFLECT)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="bgr24")))
        container.mux(stream.encode())
    return out


def demo_videos(workdir: Path) -> list[Path]:
    videos = shared_dir() / "videos"
    found = sorted(videos.glob("*.mp4")) if videos.is_dir() else []
    if found:
        return found
    images = _insightface_images()
    if not images:
        raise ArtifactNotFoundError(
            f"no demo clips: {videos} does not exist and the insightface wheel (its face "
            "photographs) is not installed; set DFE_SHARED or pip install insightface --no-deps"
        )
    return [render_clip(p, workdir / "clips" / f"{p.stem}.mp4") for p in images]
