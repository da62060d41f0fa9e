"""Face crop, resize and normalisation exactly as the original model saw its input.

Crop convention (tight, as the original): the integer box is SCRFD's float box with each
coordinate rounded to the nearest pixel (halves round up: ``floor(v + 0.5)``), then clipped to
the frame; the crop is ``frame[y1:y2, x1:x2]``. An optional ``margin`` (a fraction of the box's
width and height added on each side) is applied to the float box before rounding.

Resize: the original used torchvision ``Resize((112, 112))`` on a PIL image, i.e. Pillow's
bilinear filter with its antialiasing support (aspect not kept). We call Pillow itself, so the
pixels are identical (max difference 0, pinned by a test against torchvision). OpenCV's bilinear
resize differs (no antialiasing when shrinking) and moves p_fake measurably.

Normalisation: the frames stay BGR, as OpenCV read them in the original; each channel is scaled
to [0, 1] and normalised with ImageNet's *RGB* mean/std in channel order, so channel 0 (blue)
uses 0.485/0.229. That mismatch is what the published checkpoints were trained on.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from PIL import Image

from engine.errors import InvalidInputError

INPUT_SIZE = 112
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
_MEAN = np.asarray(MEAN, dtype=np.float32).reshape(1, 3, 1, 1)
_STD = np.asarray(STD, dtype=np.float32).reshape(1, 3, 1, 1)

Box = tuple[int, int, int, int]


def _round_half_up(v: float) -> int:
    return math.floor(v + 0.5)


def crop_box(
    box: Sequence[float], frame_shape: Sequence[int], *, margin: float = 0.0
) -> Box | None:
    """Integer crop box (x1, y1, x2, y2) of a float detector box, or None if it is empty
    inside the frame. ``frame_shape`` is (height, width, ...)."""
    if margin < 0:
        raise InvalidInputError(f"margin must be >= 0, got {margin}")
    h, w = int(frame_shape[0]), int(frame_shape[1])
    x1, y1, x2, y2 = (float(v) for v in box)
    if margin:
        mx, my = (x2 - x1) * margin, (y2 - y1) * margin
        x1, y1, x2, y2 = x1 - mx, y1 - my, x2 + mx, y2 + my
    ix1 = min(max(_round_half_up(x1), 0), w)
    iy1 = min(max(_round_half_up(y1), 0), h)
    ix2 = min(max(_round_half_up(x2), 0), w)
    iy2 = min(max(_round_half_up(y2), 0), h)
    if ix2 <= ix1 or iy2 <= iy1:
        return None
    return ix1, iy1, ix2, iy2


def resize_pil(image: np.ndarray, size: int = INPUT_SIZE) -> np.ndarray:
    """Resize an HxWx3 uint8 image to size x size with Pillow's bilinear filter, as
    torchvision ``Resize((size, size))`` did on a PIL image."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise InvalidInputError(
            f"expected an HxWx3 uint8 image, got shape {image.shape} dtype {image.dtype}"
        )
    if image.shape[0] == size and image.shape[1] == size:
        return np.ascontiguousarray(image)
    pil = Image.fromarray(np.ascontiguousarray(image), mode="RGB")
    return np.asarray(pil.resize((size, size), Image.Resampling.BILINEAR))


def face_crop(frame: np.ndarray, box: Box | None, *, size: int = INPUT_SIZE) -> np.ndarray:
    """The size x size BGR crop of ``frame`` at integer ``box``; the whole frame when None
    (the original's fallback for a frame without a face)."""
    if box is None:
        return resize_pil(frame, size)
    x1, y1, x2, y2 = box
    return resize_pil(frame[y1:y2, x1:x2], size)


def normalize(crops: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
    """N x size x size x 3 uint8 BGR crops -> N x 3 x size x size float32, ImageNet-normalised
    in channel order (no BGR->RGB swap), as ToTensor + Normalize did."""
    batch = np.asarray(crops)
    if batch.ndim == 3:
        batch = batch[None]
    if batch.ndim != 4 or batch.shape[-1] != 3 or batch.dtype != np.uint8:
        raise InvalidInputError(
            f"expected N x H x W x 3 uint8 crops, got shape {batch.shape} dtype {batch.dtype}"
        )
    x = batch.transpose(0, 3, 1, 2).astype(np.float32) / np.float32(255.0)
    return np.ascontiguousarray((x - _MEAN) / _STD)
