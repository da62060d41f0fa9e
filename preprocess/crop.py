"""Face crop, resize and normalisation exactly as the original model saw its input.

Crop convention (tight, as the original): the integer box is SCRFD's float box with each
coordinate rounded to the nearest pixel (halves round up: ``floor(v + 0.5)``), then clipped to
the frame; the crop is ``frame[y1:y2, x1:x2]``. An optional ``margin`` (a fraction of the box's
width and height added on each side) is applied to the float box before rounding.

Resize: the original used torchvision ``Resize((112, 112))`` on a PIL image, i.e. Pillow's
bilinear filter with its antialiasing support (aspect not kept). We call Pillow itself, so the
pixels are identical (max difference 0, pinned by a test against torchvision). OpenCV's bilinear
resize differs (no antialiasing when shrinking) and moves p_fake measurably.

Normalisation (:class:`Preprocessor`, driven by the model sidecar's ``input`` section): the
original's frames stay BGR, as OpenCV read them; each channel is scaled to [0, 1] and normalised
with ImageNet's *RGB* mean/std in channel order, so channel 0 (blue) uses 0.485/0.229. That
mismatch is what the published checkpoints were trained on, and what the sidecar records.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from PIL import Image

from core.config import MAX_MARGIN
from core.errors import InvalidInputError
from core.sidecar import InputSpec

_DEFAULT_INPUT = InputSpec()
INPUT_SIZE = _DEFAULT_INPUT.size
MEAN = _DEFAULT_INPUT.mean
STD = _DEFAULT_INPUT.std

Box = tuple[int, int, int, int]


def _round_half_up(v: float) -> int:
    return math.floor(v + 0.5)


def crop_box(
    box: Sequence[float], frame_shape: Sequence[int], *, margin: float = 0.0
) -> Box | None:
    """Integer crop box (x1, y1, x2, y2) of a float detector box, or None if it is empty
    inside the frame. ``frame_shape`` is (height, width, ...). Raises InvalidInputError for a
    margin outside 0 to :data:`core.config.MAX_MARGIN` (or not a number)."""
    if not (math.isfinite(margin) and 0 <= margin <= MAX_MARGIN):
        raise InvalidInputError(f"margin must be a number from 0 to {MAX_MARGIN:g}, got {margin}")
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


class Preprocessor:
    """Face crops -> the classifier's input, as the model's sidecar (:class:`InputSpec`) says.

    :meth:`crop` cuts and resizes one face (``size`` x ``size``, Pillow bilinear);
    :meth:`__call__` turns N x size x size x 3 uint8 crops in the decoder's BGR order into
    N x 3 x size x size float32: channels reordered to ``channel_order`` (no swap for BGR, the
    original's choice), scaled by ``scale`` and normalised with ``mean``/``std`` in that order,
    as torchvision's ToTensor + Normalize did.
    """

    def __init__(self, spec: InputSpec = _DEFAULT_INPUT) -> None:
        self.spec = spec
        self._mean = np.asarray(spec.mean, dtype=np.float32).reshape(1, 3, 1, 1)
        self._std = np.asarray(spec.std, dtype=np.float32).reshape(1, 3, 1, 1)
        self._scale = np.float32(spec.scale)

    @property
    def size(self) -> int:
        return self.spec.size

    def crop(self, frame: np.ndarray, box: Box | None) -> np.ndarray:
        """The ``size`` x ``size`` uint8 crop of ``frame`` at integer ``box`` (the whole frame
        when None); see :func:`face_crop`."""
        return face_crop(frame, box, size=self.spec.size)

    def __call__(self, crops: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
        batch = np.asarray(crops)
        if batch.ndim == 3:
            batch = batch[None]
        if batch.ndim != 4 or batch.shape[-1] != 3 or batch.dtype != np.uint8:
            raise InvalidInputError(
                f"expected N x H x W x 3 uint8 crops, got shape {batch.shape} dtype {batch.dtype}"
            )
        if self.spec.channel_order == "RGB":
            batch = batch[..., ::-1]
        x = batch.transpose(0, 3, 1, 2).astype(np.float32)
        if self._scale == np.float32(1 / 255):
            x /= np.float32(255.0)  # bit-identical to ToTensor's division
        else:
            x *= self._scale
        return np.ascontiguousarray((x - self._mean) / self._std)


_DEFAULT_PREPROCESSOR = Preprocessor()


def normalize(crops: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
    """N x size x size x 3 uint8 BGR crops -> N x 3 x size x size float32, ImageNet-normalised
    in channel order (no BGR->RGB swap), as the original's ToTensor + Normalize did: the
    :class:`Preprocessor` of the default :class:`InputSpec`."""
    return _DEFAULT_PREPROCESSOR(crops)
