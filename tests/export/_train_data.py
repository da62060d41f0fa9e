"""Small training inputs for the ``dfe train`` tests: synthetic face clips (as ``dfe preprocess``
writes them: 112x112 MJPEG) and a tiny module with ``DeepfakeModel``'s parts, so a resume test
runs in seconds. torch is imported inside :func:`tiny_module` only."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import av
import numpy as np

from export.onnx_export import synthetic_crops


def write_clip(path: Path, crops: np.ndarray, *, fps: int = 30) -> Path:
    """112x112 BGR crops -> an MJPEG clip, encoded as
    ``preprocess.face_clips.write_face_clip`` does."""
    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("mjpeg", rate=fps)
        stream.width = stream.height = crops.shape[1]
        stream.pix_fmt = "yuvj444p"
        stream.bit_rate = 20_000_000
        for crop in crops:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(crop, format="bgr24")))
        container.mux(stream.encode())
    return path


def face_clip_set(directory: Path, *, per_class: int = 3, frames: int = 5) -> Path:
    """``per_class`` FAKE and REAL synthetic face clips in ``directory`` and their
    ``labels.csv`` (no header, lower-case labels: the CSV reader's tolerance is exercised)."""
    directory.mkdir(parents=True, exist_ok=True)
    rows = []
    for k in range(2 * per_class):
        label = "fake" if k < per_class else "real"
        crops = synthetic_crops(frames, seed=10 + k)
        if label == "real":  # a brighter set, so the classes differ
            crops = np.clip(crops.astype(np.int16) + 40, 0, 255).astype(np.uint8)
        write_clip(directory / f"clip{k}.mp4", crops)
        rows.append(f"clip{k}.mp4,{label}")
    labels = directory / "labels.csv"
    labels.write_text("\n".join(rows) + "\n")
    return labels


def tiny_module(variant: str = "original", *, seed: int = 0) -> Any:
    """A module with ``DeepfakeModel``'s parts at toy size: a 28x28-stride conv with BatchNorm
    (so BatchNorm statistics are part of what a resume must restore), average pool, an 8-unit
    LSTM laid out as the variant's, dropout and ``linear1``."""
    import torch
    from torch import nn

    torch.manual_seed(seed)
    sequence = variant == "sequence"

    class Tiny(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = nn.Sequential(nn.Conv2d(3, 8, 28, stride=28), nn.BatchNorm2d(8), nn.ReLU())
            self.avgpool = nn.AdaptiveAvgPool2d(1)
            self.lstm = nn.LSTM(8, 8, 1, sequence, batch_first=sequence)
            self.dp = nn.Dropout(0.4)
            self.linear1 = nn.Linear(8, 2)

    return Tiny()
