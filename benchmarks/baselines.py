"""What users would run instead of this engine, reimplemented faithfully for side-by-side runs.

``OriginalPipeline``: the original project's prediction path (its Django view and Predict
notebook): OpenCV decode from frame 0, dlib HOG (``face_recognition.face_locations``, upsample 1)
on every full-resolution BGR frame, the first face cropped tightly or the whole frame when none,
torchvision ``ToPILImage -> Resize((112,112)) -> ToTensor -> Normalize``, then the eager PyTorch
model on (1, N, 3, 112, 112). HOG comes from the prebuilt ``dlib-bin`` wheel (``baseline`` extra).

``StraightforwardPipeline``: what a careful user would write today: OpenCV decode, InsightFace's
own ``SCRFD.detect`` frame by frame at 640, the same crop and transforms, the eager model.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from core.deps import require
from core.errors import MissingDependencyError


def _transforms() -> Any:
    transforms = require("torchvision").transforms
    return transforms.Compose(
        [
            transforms.ToPILImage(),
            transforms.Resize((112, 112)),
            transforms.ToTensor(),
            transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
        ]
    )


def read_first_frames(path: str | Path, n: int) -> list[np.ndarray]:
    import cv2

    cap = cv2.VideoCapture(str(path))
    frames = []
    while len(frames) < n:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    return frames


def hog_locations() -> Any:
    try:
        import face_recognition
    except ImportError as exc:
        raise MissingDependencyError(
            "the original pipeline's HOG detector needs face_recognition on dlib-bin: "
            "make bench installs it (pip install '.[dlib]' then pip install --no-deps "
            f"face_recognition) ({exc})"
        ) from exc
    return face_recognition.face_locations


class _EagerModel:
    def __init__(self, checkpoint: Path) -> None:
        from network.checkpoint import build_model, load_checkpoint

        self.torch = require("torch")
        self.model = build_model(load_checkpoint(checkpoint))
        self.transform = _transforms()

    def probs(self, crops: list[np.ndarray]) -> np.ndarray:
        torch = self.torch
        x = torch.stack([self.transform(c) for c in crops]).unsqueeze(0)
        with torch.no_grad():
            _, logits = self.model(x)
        return torch.softmax(logits, dim=1)[0].numpy()


class _Pipeline:
    """Decode the first N frames with OpenCV, crop one face per frame, run the eager model."""

    name = ""
    model: _EagerModel

    def crop(self, frame: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def run(self, path: str | Path, n: int) -> dict[str, Any]:
        t0 = time.perf_counter()
        frames = read_first_frames(path, n)
        t1 = time.perf_counter()
        crops = [self.crop(frame) for frame in frames]
        t2 = time.perf_counter()
        probs = self.model.probs(crops)
        t3 = time.perf_counter()
        return {
            "p_fake": float(probs[0]),
            "frames": len(frames),
            "decode_s": t1 - t0,
            "detect_s": t2 - t1,
            "classify_s": t3 - t2,
        }


class OriginalPipeline(_Pipeline):
    name = "original (OpenCV + dlib HOG full frame + eager PyTorch)"

    def __init__(self, checkpoint: Path) -> None:
        self.locate = hog_locations()
        self.model = _EagerModel(checkpoint)

    def crop(self, frame: np.ndarray) -> np.ndarray:
        faces = self.locate(frame)  # HOG, on the BGR frame, as the original did
        if not faces:
            return frame
        top, right, bottom, left = faces[0]
        return frame[top:bottom, left:right, :]


class StraightforwardPipeline(_Pipeline):
    name = "straightforward (OpenCV + InsightFace SCRFD per frame + eager PyTorch)"

    def __init__(self, checkpoint: Path, detector: Path) -> None:
        scrfd = require("insightface", purpose="the straightforward baseline").model_zoo.scrfd
        self.det = scrfd.SCRFD(model_file=str(detector))
        self.det.prepare(-1, input_size=(640, 640), det_thresh=0.5)
        self.model = _EagerModel(checkpoint)

    def crop(self, frame: np.ndarray) -> np.ndarray:
        dets, _ = self.det.detect(frame, input_size=(640, 640))
        if not len(dets):
            return frame
        h, w = frame.shape[:2]
        x1, y1, x2, y2 = (int(np.floor(v + 0.5)) for v in dets[0][:4])
        return frame[max(y1, 0) : min(y2, h), max(x1, 0) : min(x2, w)]
