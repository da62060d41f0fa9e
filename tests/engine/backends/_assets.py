"""Frames and face crops from the shared test clips, for the PyTorch backend and detector tests.

Only the clips that ``benchmarks/gpu_check.py --prepare`` carries to the GPU machine are used, so
the same tests run there (``DFE_SHARED`` points at the carried copy).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

CLIP_480P = "pair480p_real.mp4"
CLIPS_1080P = ("dfdc_abofeumbvv_fake.mp4", "dfdc_abqwwspghj_fake.mp4")
CLIPS = (CLIP_480P, *CLIPS_1080P)


def gpu_model_dir(request) -> Path:
    """``$DFE_TEST_MODEL`` (an exported model whose checkpoint sits next to it, as
    ``benchmarks/gpu_check.py`` makes one on the GPU machine), else the session's exported test
    checkpoint (the ``exported_model`` fixture, which needs InsightFace)."""
    env = os.environ.get("DFE_TEST_MODEL")
    if env:
        return Path(env)
    return request.getfixturevalue("exported_model")


def missing_clips(videos: Path) -> list[str]:
    return [name for name in CLIPS if not (videos / name).is_file()]


def detector_frames(videos: Path, reference) -> list[tuple[str, np.ndarray]]:
    """Labelled test frames: two 480p frames, one 1080p frame of each 1080p clip, a 2x2 mosaic
    of 480p frames (four faces), a region of a 1080p frame without a face (the third of the
    frame farthest from the face, checked with ``reference``) and a plain grey frame."""
    from preprocess.video import read_video

    small = read_video(videos / CLIP_480P, 2).frames
    frames = [("480p-0", small[0]), ("480p-1", small[1])]
    big = []
    for name in CLIPS_1080P:
        big.append(read_video(videos / name, 1).frames[0])
        frames.append((f"1080p-{name[5:15]}", big[-1]))
    mosaic = np.concatenate(
        [np.concatenate([small[0], small[1]], 1), np.concatenate([small[1], small[0]], 1)], 0
    )
    frames.append(("mosaic-4-faces", mosaic))
    frame = big[0]
    (face,) = reference.detect([frame])[0]
    width = frame.shape[1]
    centre = (face.box[0] + face.box[2]) / 2
    region = frame[:, : width // 3] if centre > width / 2 else frame[:, 2 * width // 3 :]
    frames.append(("1080p-no-face", np.ascontiguousarray(region)))
    frames.append(("grey", np.full((480, 640, 3), 127, np.uint8)))
    return frames


def face_crops(videos: Path, reference, per_clip: int = 8) -> np.ndarray:
    """Normalised ``(N, 3, 112, 112)`` float32 face crops of the first ``per_clip`` frames of
    each clip in :data:`CLIPS` order (``per_clip`` rows per clip), made as the engine makes them
    (highest-scoring face, SCRFD box)."""
    from preprocess.crop import crop_box, face_crop, normalize
    from preprocess.video import read_video

    crops = []
    for name in CLIPS:
        frames = read_video(videos / name, per_clip).frames
        for frame, faces in zip(frames, reference.detect(frames)):
            box = crop_box(faces[0].box, frame.shape) if faces else None
            crops.append(face_crop(frame, box))
    return normalize(np.stack(crops))


def iou(a, b) -> float:
    """IoU of two (x1, y1, x2, y2) float boxes (continuous convention)."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0
