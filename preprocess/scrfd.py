"""Truly batched SCRFD face detection (InsightFace's detector, without InsightFace).

The maths follows ``insightface.model_zoo.scrfd.SCRFD.detect(img, input_size=(640, 640))`` step by
step so that results match it (same letterbox truncation, float32 decoding, the same candidate
order and NMS with the ``+1`` area convention), but everything is a pure, vectorised numpy
function, and frames go through the network in real batches: every item of the batch dimension
is decoded. The ONNX model is made batch-dynamic first (see :mod:`preprocess.scrfd_graph`).

Coordinates of :class:`Face` are in the pixels of the frame that was passed in. Boxes are not
clipped to the frame (InsightFace does not clip either); cropping decides that.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

from core.compute import INLINE, ComputePool
from core.config import (
    CPU_DETECTOR_BATCH,
    DEFAULT_DETECTOR_INPUT,
    DEFAULT_DETECTOR_INPUT_SHAPE,
    DEFAULT_NMS_THRESHOLD,
    DEFAULT_SCORE_THRESHOLD,
    DETECTOR_INPUT_SHAPES,
)
from core.errors import ArtifactNotFoundError, InvalidInputError, ModelFormatError
from core.onnx_session import create_session, provider_name
from preprocess.scrfd_graph import DetectorGraph, load_detector_graph

if TYPE_CHECKING:
    from core.classifier import Runner

logger = logging.getLogger(__name__)

__all__ = [
    "SCRFD_SPECS",
    "BatchedSCRFD",
    "Candidates",
    "DetectorConfig",
    "Face",
    "SCRFDDetector",
    "SCRFDSpec",
    "anchor_centers",
    "decode_batch",
    "distance2bbox",
    "distance2kps",
    "input_shape_for",
    "letterbox",
    "nms",
    "select_faces",
    "spec_for_outputs",
    "to_blob",
]

_INPUT_MEAN = 127.5
_INPUT_STD = 128.0


# --------------------------------------------------------------------------------------------
# The model family


@dataclass(frozen=True)
class SCRFDSpec:
    """Layout of an SCRFD model's outputs.

    Outputs come in groups, one entry per stride in ``strides`` order: first the scores
    (1 channel), then the box distances (4: left, top, right, bottom, in units of the stride),
    then, with keypoints, the keypoint offsets (10: x, y of 5 points, in units of the stride).
    Each feature-map cell carries ``num_anchors`` anchors, all centred on the cell's top-left
    corner (``x * stride``, ``y * stride``).
    """

    strides: tuple[int, ...]
    num_anchors: int
    use_kps: bool
    num_keypoints: int = 5

    @property
    def num_levels(self) -> int:
        return len(self.strides)

    @property
    def num_outputs(self) -> int:
        return self.num_levels * (3 if self.use_kps else 2)

    @property
    def max_stride(self) -> int:
        return max(self.strides)

    def score_index(self, level: int) -> int:
        return level

    def bbox_index(self, level: int) -> int:
        return self.num_levels + level

    def kps_index(self, level: int) -> int:
        if not self.use_kps:
            raise ModelFormatError("this SCRFD model has no keypoint outputs")
        return 2 * self.num_levels + level

    def output_channels(self) -> tuple[int, ...]:
        groups = [1, 4] + ([2 * self.num_keypoints] if self.use_kps else [])
        return tuple(c for c in groups for _ in self.strides)


#: Shapes of the detector's input: shaped like the frame (aspect kept, multiples of 32), or the
#: square ``input_size`` x ``input_size`` (InsightFace's; TensorRT engines are built for it).
INPUT_SHAPES = DETECTOR_INPUT_SHAPES

#: The SCRFD family by output count: 3 strides with 2 anchors per cell, or 5 strides with 1.
SCRFD_SPECS: dict[int, SCRFDSpec] = {
    6: SCRFDSpec(strides=(8, 16, 32), num_anchors=2, use_kps=False),
    9: SCRFDSpec(strides=(8, 16, 32), num_anchors=2, use_kps=True),
    10: SCRFDSpec(strides=(8, 16, 32, 64, 128), num_anchors=1, use_kps=False),
    15: SCRFDSpec(strides=(8, 16, 32, 64, 128), num_anchors=1, use_kps=True),
}


def spec_for_outputs(channels: Sequence[int | None]) -> SCRFDSpec:
    """Pick the spec from the output count, then check every output's channel count.

    ``channels`` is the last dimension of each output, in output order (``None`` when a model
    does not declare it; those are checked on the first run instead).
    """
    spec = SCRFD_SPECS.get(len(channels))
    if spec is None:
        raise ModelFormatError(
            f"expected an SCRFD model with 6, 9, 10 or 15 outputs, found {len(channels)}"
        )
    expected = spec.output_channels()
    mismatched = [
        f"output {i}: {got} (expected {want})"
        for i, (got, want) in enumerate(zip(channels, expected, strict=True))
        if got is not None and got != want
    ]
    if mismatched:
        raise ModelFormatError(
            f"output channels do not follow the SCRFD layout for {len(channels)} outputs "
            f"(scores 1, boxes 4, keypoints 10 per stride {list(spec.strides)}): "
            + ", ".join(mismatched)
        )
    return spec


# --------------------------------------------------------------------------------------------
# Results and configuration


@dataclass(frozen=True)
class Face:
    """One detected face, in frame pixel coordinates (floats, not clipped to the frame)."""

    box: tuple[float, float, float, float]
    score: float
    kps: tuple[tuple[float, float], ...] | None = None


@dataclass(frozen=True)
class Candidates:
    """Detections of one image before NMS, in letterbox pixels, in InsightFace's order."""

    scores: np.ndarray  # (K,) float32
    boxes: np.ndarray  # (K, 4) float32, x1 y1 x2 y2
    kps: np.ndarray | None  # (K, P, 2) float32


@dataclass(frozen=True)
class DetectorConfig:
    """The SCRFD options of a detector (validated on construction); where its graph runs is its
    runner's business."""

    input_size: int = DEFAULT_DETECTOR_INPUT
    score_threshold: float = DEFAULT_SCORE_THRESHOLD
    nms_threshold: float = DEFAULT_NMS_THRESHOLD
    batch_size: int = CPU_DETECTOR_BATCH
    max_faces: int | None = None
    input_shape: str = DEFAULT_DETECTOR_INPUT_SHAPE

    def __post_init__(self) -> None:
        if self.input_shape not in INPUT_SHAPES:
            raise InvalidInputError(
                f"input_shape={self.input_shape!r} is not supported; supported values are "
                f"{', '.join(INPUT_SHAPES)}"
            )
        if isinstance(self.input_size, bool) or not isinstance(self.input_size, int):
            raise InvalidInputError(f"input_size must be an int, got {self.input_size!r}")
        if self.input_size <= 0:
            raise InvalidInputError(f"input_size must be positive, got {self.input_size}")
        for name in ("score_threshold", "nms_threshold"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not 0.0 <= float(value) <= 1.0:
                raise InvalidInputError(f"{name} must be a number in [0, 1], got {value!r}")
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int):
            raise InvalidInputError(f"batch_size must be an int, got {self.batch_size!r}")
        if self.batch_size < 1:
            raise InvalidInputError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.max_faces is not None and (
            isinstance(self.max_faces, bool)
            or not isinstance(self.max_faces, int)
            or self.max_faces < 1
        ):
            raise InvalidInputError(
                f"max_faces must be None (all faces) or an int >= 1, got {self.max_faces!r}"
            )


_CONFIG_FIELDS = frozenset(f.name for f in dataclasses.fields(DetectorConfig))


# --------------------------------------------------------------------------------------------
# Pure functions


def input_shape_for(
    frame_hw: Sequence[int], size: int, shape: str = DEFAULT_DETECTOR_INPUT_SHAPE, stride: int = 32
) -> tuple[int, int]:
    """The letterbox target ``(width, height)`` for a frame of ``frame_hw`` (height, width).

    ``square``: ``size`` x ``size`` (InsightFace's ``SCRFD.detect(img, input_size=(640, 640))``).
    ``frame``: shaped like the frame: the long side ``size``, the short side the frame's aspect
    times ``size`` rounded up to a multiple of ``stride`` (1920x1080 -> 640x384). The frame is
    scaled by the same factor either way (the letterbox fits the long side), so the faces are
    the same pixels at the network input; what changes is how much zero padding the network
    runs over (a third of a 640x640 input for a 16:9 frame). Boxes agree with the square
    input's up to floating point noise near the padding (measured on the first 100 frames of the
    six test clips: max 0.015 px), which rounding to whole pixels can turn into a one-pixel
    difference (frames 38 and 52 of dfdc_like_fake): ``square`` is exact mode's input.
    """
    if shape == "square":
        return size, size
    h, w = int(frame_hw[0]), int(frame_hw[1])
    if w >= h:
        return size, min(size, -(-int(size * h / w) // stride) * stride)
    return min(size, -(-int(size * w / h) // stride) * stride), size


def _check_frame(frame: object, index: int | None = None) -> np.ndarray:
    where = "frame" if index is None else f"frame {index}"
    if not isinstance(frame, np.ndarray):
        raise InvalidInputError(
            f"{where}: expected a numpy HxWx3 uint8 BGR image, got {type(frame).__name__}"
        )
    if frame.ndim != 3 or frame.shape[2] != 3 or frame.shape[0] < 1 or frame.shape[1] < 1:
        raise InvalidInputError(
            f"{where}: expected an HxWx3 uint8 BGR image, got shape {tuple(frame.shape)}"
        )
    if frame.dtype != np.uint8:
        raise InvalidInputError(
            f"{where}: expected dtype uint8 (BGR, 0-255), got {frame.dtype}; convert with "
            "np.clip(x, 0, 255).astype(np.uint8) if it holds 0-255 values"
        )
    return frame


def _size_wh(size: int | tuple[int, int]) -> tuple[int, int]:
    if isinstance(size, (int, np.integer)):
        width = height = int(size)
    else:
        width, height = (int(v) for v in size)
    if width <= 0 or height <= 0:
        raise InvalidInputError(f"letterbox size must be positive, got {size!r}")
    return width, height


def letterbox(frame: np.ndarray, size: int | tuple[int, int]) -> tuple[np.ndarray, float]:
    """Fit ``frame`` into ``size`` (an int, or ``(width, height)``) as InsightFace's SCRFD does.

    The frame is scaled to fit preserving its aspect ratio (the other side truncated with
    ``int()``), resized with OpenCV bilinear, placed at the top-left and padded with zeros.
    Returns the ``(height, width, 3)`` uint8 image and the scale (new height / frame height);
    frame coordinates are letterbox coordinates divided by the scale.
    """
    frame = _check_frame(frame)
    width, height = _size_wh(size)
    im_h, im_w = frame.shape[:2]
    im_ratio = float(im_h) / im_w
    model_ratio = float(height) / width
    if im_ratio > model_ratio:
        new_h = height
        new_w = int(new_h / im_ratio)
    else:
        new_w = width
        new_h = int(new_w * im_ratio)
    # InsightFace would crash on a zero-sized side (e.g. a 1x2000 strip); keep one pixel.
    new_w, new_h = max(new_w, 1), max(new_h, 1)
    scale = float(new_h) / im_h
    out = np.zeros((height, width, 3), dtype=np.uint8)
    out[:new_h, :new_w] = cv2.resize(frame, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    return out, scale


def _fill_blob(image: np.ndarray, out: np.ndarray) -> None:
    """One BGR uint8 HxWx3 image into a (3, H, W) float32 slice: RGB, (x - 127.5) / 128.

    Per image and per channel so the data stays in cache (a whole-batch pass is memory-bound).
    Multiplying by 1/128 is exact, so the values equal ``(x - 127.5) / 128`` bit for bit.
    """
    blue, green, red = cv2.split(image)
    for c, channel in enumerate((red, green, blue)):
        np.subtract(channel, np.float32(_INPUT_MEAN), out=out[c], dtype=np.float32)
    np.multiply(out, np.float32(1.0 / _INPUT_STD), out=out)


def to_blob(images: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
    """BGR uint8 images ``(N, H, W, 3)`` to the network input: RGB, ``(x - 127.5) / 128``, NCHW
    float32 (bit-identical to ``cv2.dnn.blobFromImage(img, 1/128, size, 127.5, swapRB=True)``)."""
    batch = np.asarray(images)
    if batch.ndim != 4 or batch.shape[3] != 3 or batch.dtype != np.uint8:
        raise InvalidInputError(
            f"to_blob expects uint8 images of shape (N, H, W, 3), got {batch.dtype} "
            f"{tuple(batch.shape)}"
        )
    n, h, w, _ = batch.shape
    blob = np.empty((n, 3, h, w), dtype=np.float32)
    for i in range(n):
        _fill_blob(batch[i], blob[i])
    return blob


@functools.lru_cache(maxsize=64)
def anchor_centers(height: int, width: int, stride: int, num_anchors: int) -> np.ndarray:
    """Anchor centres of a ``height x width`` feature map, ``(height*width*num_anchors, 2)``
    float32 ``(x, y)`` in input pixels, ordered (row, column, anchor) like the network's outputs.

    Cached per shape; the returned array is read-only.
    """
    if min(height, width, stride, num_anchors) < 0 or stride == 0 or num_anchors == 0:
        raise InvalidInputError(
            f"anchor_centers: need height, width >= 0 and stride, num_anchors >= 1; got "
            f"{height=}, {width=}, {stride=}, {num_anchors=}"
        )
    ys, xs = np.mgrid[:height, :width]
    centers = (np.stack([xs, ys], axis=-1).astype(np.float32) * stride).reshape(-1, 2)
    centers = np.repeat(centers, num_anchors, axis=0)
    centers.setflags(write=False)
    return centers


def distance2bbox(points: np.ndarray, distance: np.ndarray) -> np.ndarray:
    """Boxes ``(K, 4)`` x1, y1, x2, y2 from centres ``(K, 2)`` and distances ``(K, 4)`` to the
    left, top, right and bottom edges (already multiplied by the stride)."""
    x1y1 = points - distance[:, 0:2]
    x2y2 = points + distance[:, 2:4]
    return np.concatenate([x1y1, x2y2], axis=-1)


def distance2kps(points: np.ndarray, distance: np.ndarray) -> np.ndarray:
    """Keypoints ``(K, P, 2)`` from centres ``(K, 2)`` and offsets ``(K, 2P)`` (x, y per point,
    already multiplied by the stride)."""
    offsets = distance.reshape(distance.shape[0], distance.shape[1] // 2, 2)
    return points[:, None, :] + offsets


def nms(boxes: np.ndarray, scores: np.ndarray, threshold: float) -> np.ndarray:
    """Greedy non-maximum suppression; returns kept indices, highest score first.

    Uses InsightFace's pixel convention (width = x2 - x1 + 1) and float32 arithmetic, keeps a
    box when its IoU with every kept box is ``<= threshold``, and breaks score ties by index
    (stable order), so that results match ``SCRFD.nms``.
    """
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    scores = np.asarray(scores, dtype=np.float32).reshape(-1)
    if boxes.shape[0] != scores.shape[0]:
        raise InvalidInputError(f"nms: {boxes.shape[0]} boxes but {scores.shape[0]} scores")
    threshold = float(threshold)
    x1, y1, x2, y2 = boxes.T
    areas = (x2 - x1 + 1) * (y2 - y1 + 1)
    order = np.argsort(-scores, kind="stable")
    keep: list[int] = []
    while order.size:
        i = order[0]
        keep.append(int(i))
        rest = order[1:]
        w = np.maximum(0.0, np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]) + 1)
        h = np.maximum(0.0, np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]) + 1)
        inter = w * h
        iou = inter / (areas[i] + areas[rest] - inter)
        order = rest[iou <= threshold]
    return np.asarray(keep, dtype=np.intp)


def _check_outputs(
    outputs: Sequence[np.ndarray], spec: SCRFDSpec, input_hw: tuple[int, int], batch: int
) -> None:
    if len(outputs) != spec.num_outputs:
        raise ModelFormatError(f"expected {spec.num_outputs} outputs, got {len(outputs)}")
    channels = spec.output_channels()
    for level, stride in enumerate(spec.strides):
        rows = (input_hw[0] // stride) * (input_hw[1] // stride) * spec.num_anchors
        indices = [spec.score_index(level), spec.bbox_index(level)]
        if spec.use_kps:
            indices.append(spec.kps_index(level))
        for k in indices:
            want = (batch, rows, channels[k])
            if tuple(outputs[k].shape) != want:
                raise ModelFormatError(
                    f"output {k} (stride {stride}) has shape {list(outputs[k].shape)}, expected "
                    f"{list(want)} for a {input_hw[0]}x{input_hw[1]} input; the model is not a "
                    "batch-dynamic SCRFD with the expected output order"
                )


def decode_batch(
    outputs: Sequence[np.ndarray],
    spec: SCRFDSpec,
    input_hw: tuple[int, int],
    score_threshold: float,
) -> list[Candidates]:
    """Decode raw batched outputs (each ``(N, anchors, C)``) into per-image candidates.

    Only anchors whose score is ``>= score_threshold`` are decoded. Candidates are in
    letterbox pixels, ordered by level then anchor (InsightFace's order before sorting).
    """
    batch = int(outputs[0].shape[0]) if len(outputs) else 0
    _check_outputs(outputs, spec, input_hw, batch)
    per_level: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]] = []
    for level, stride in enumerate(spec.strides):
        scores = outputs[spec.score_index(level)][:, :, 0]
        n_idx, a_idx = np.nonzero(scores >= score_threshold)
        centers = anchor_centers(
            input_hw[0] // stride, input_hw[1] // stride, stride, spec.num_anchors
        )[a_idx]
        boxes = distance2bbox(centers, outputs[spec.bbox_index(level)][n_idx, a_idx] * stride)
        kps = None
        if spec.use_kps:
            kps = distance2kps(centers, outputs[spec.kps_index(level)][n_idx, a_idx] * stride)
        per_level.append((n_idx, scores[n_idx, a_idx], boxes, kps))

    result: list[Candidates] = []
    for n in range(batch):
        # np.nonzero is row-major, so each image's rows are one contiguous run per level.
        parts: list[tuple[np.ndarray, np.ndarray, np.ndarray | None]] = []
        for n_idx, scores, boxes, kps in per_level:
            a, b = np.searchsorted(n_idx, [n, n + 1])
            parts.append((scores[a:b], boxes[a:b], None if kps is None else kps[a:b]))
        cand_kps = None
        if spec.use_kps:
            cand_kps = np.concatenate([p[2] for p in parts]).astype(np.float32, copy=False)
            cand_kps = cand_kps.reshape(-1, spec.num_keypoints, 2)
        result.append(
            Candidates(
                scores=np.concatenate([p[0] for p in parts]).astype(np.float32, copy=False),
                boxes=np.concatenate([p[1] for p in parts]).astype(np.float32).reshape(-1, 4),
                kps=cand_kps,
            )
        )
    return result


def select_faces(
    candidates: Candidates,
    scale: float,
    nms_threshold: float,
    max_faces: int | None = None,
) -> list[Face]:
    """Map one image's candidates to frame pixels (divide by the letterbox ``scale``), run NMS
    there (as InsightFace does), and return faces sorted by score, highest first.

    ``max_faces`` keeps the highest-scoring ones (InsightFace's ``max_num`` ranks by size and
    centring instead).
    """
    if candidates.scores.size == 0:
        return []
    scale = float(scale)  # a Python float keeps float32 arithmetic, as in InsightFace
    boxes = candidates.boxes / scale
    kps = None if candidates.kps is None else candidates.kps / scale
    order = np.argsort(-candidates.scores, kind="stable")
    boxes, scores = boxes[order], candidates.scores[order]
    kps = None if kps is None else kps[order]
    keep = nms(boxes, scores, nms_threshold)
    if max_faces is not None:
        keep = keep[:max_faces]
    faces = []
    for i in keep:
        x1, y1, x2, y2 = (float(v) for v in boxes[i])
        points = None if kps is None else tuple((float(x), float(y)) for x, y in kps[i])
        faces.append(Face(box=(x1, y1, x2, y2), score=float(scores[i]), kps=points))
    return faces


# --------------------------------------------------------------------------------------------
# The detector


class BatchedSCRFD:
    """What every SCRFD detector of the engine shares (ONNX Runtime here, PyTorch in
    :mod:`engine.backends.torch_detector`): argument checks, batching, the frame-shaped default
    input, and the prepared-input path of the per-video input choice. Subclasses set ``config``
    (:class:`DetectorConfig`) and ``spec`` (:class:`SCRFDSpec`) and implement
    :meth:`_run_letterboxed`: letterboxed uint8 BGR images of one shape and their scales ->
    faces per image. The batches of one call run at once on ``pool``
    (:class:`core.compute.ComputePool`, the CPU thread budget; inline by default).
    """

    config: DetectorConfig
    spec: SCRFDSpec
    pool: ComputePool = INLINE

    def detect(self, frames: Sequence[np.ndarray]) -> list[list[Face]]:
        """Detect faces in frames of any sizes; one list of faces per frame, highest score first.

        Frames are HxWx3 uint8 BGR arrays. Each is letterboxed to its default input
        (:meth:`input_for`) and frames of one input shape run through the network
        ``batch_size`` at a time.
        """
        if isinstance(frames, np.ndarray) and frames.ndim == 3:
            raise InvalidInputError(
                "detect() takes a sequence of frames; got a single HxWx3 array: use detect_one()"
            )
        frames = list(frames)
        for i, frame in enumerate(frames):
            _check_frame(frame, i)
        step = self.config.batch_size
        batches = [frames[start : start + step] for start in range(0, len(frames), step)]
        return [faces for batch in self.pool.map(self._detect_batch, batches) for faces in batch]

    def detect_one(self, frame: np.ndarray) -> list[Face]:
        """Faces in one frame, highest score first."""
        return self._detect_batch([_check_frame(frame)])[0]

    def input_for(self, frame_hw: Sequence[int]) -> tuple[int, int]:
        """The default letterbox target ``(width, height)`` for a frame (see
        :func:`input_shape_for`)."""
        return input_shape_for(
            frame_hw, self.config.input_size, self.config.input_shape, self.spec.max_stride
        )

    def _detect_batch(self, frames: Sequence[np.ndarray]) -> list[list[Face]]:
        """One network run per input shape among ``frames`` (frames of one video share one)."""
        groups: dict[tuple[int, int], list[int]] = {}
        for i, frame in enumerate(frames):
            groups.setdefault(self.input_for(frame.shape[:2]), []).append(i)
        results: list[list[Face]] = [[] for _ in frames]
        for (width, height), positions in groups.items():
            boxed = [letterbox(frames[i], (width, height)) for i in positions]
            faces = self._run_letterboxed([b[0] for b in boxed], [b[1] for b in boxed])
            for i, f in zip(positions, faces, strict=True):
                results[i] = f
        return results

    def detect_prepared(
        self, images: Sequence[np.ndarray], scales: Sequence[float]
    ) -> list[list[Face]]:
        """Faces in images that the caller already letterboxed, one list per image.

        ``images`` are ``(H, W, 3)`` uint8 BGR arrays, all of one shape, with ``H`` and ``W``
        multiples of the model's largest stride (32): the batch-dynamic graph takes any such
        size (see :func:`preprocess.scrfd_graph.make_batch_dynamic`). ``scales[i]`` is the factor
        that took image ``i``'s source pixels to its letterbox pixels (the second value
        :func:`letterbox` returns); boxes and keypoints come back divided by it, i.e. in source
        pixels measured from the top-left of what was scaled. Decoding, NMS and ordering are
        those of :meth:`detect`; images run through the network ``batch_size`` at a time. Used
        by the per-video input choice (:mod:`preprocess.detector_input`).

        A detector whose runner takes one input size only (a TensorRT engine) may only take
        that ``input_size`` (``fixed_input``).

        Raises :class:`InvalidInputError` for images of mixed or unsupported shapes, or a
        ``scales`` of another length or with a non-positive value.
        """
        images = list(images)
        scales = [float(s) for s in scales]
        if len(scales) != len(images):
            raise InvalidInputError(f"{len(images)} images but {len(scales)} scales")
        if any(not s > 0 for s in scales):
            raise InvalidInputError(f"scales must be positive, got {scales}")
        if not images:
            return []
        for i, image in enumerate(images):
            _check_frame(image, i)
        shape = images[0].shape
        if any(image.shape != shape for image in images):
            raise InvalidInputError(
                "detect_prepared takes images of one shape; got "
                f"{sorted({i.shape for i in images})}"
            )
        stride = self.spec.max_stride
        height, width = int(shape[0]), int(shape[1])
        if height % stride or width % stride:
            raise InvalidInputError(
                f"prepared images must have sides that are multiples of {stride} for this model "
                f"(strides {list(self.spec.strides)}), got {width}x{height}"
            )
        step = self.config.batch_size
        starts = range(0, len(images), step)
        batches = self.pool.map(
            lambda i: self._run_letterboxed(images[i : i + step], scales[i : i + step]), starts
        )
        return [faces for batch in batches for faces in batch]

    def _run_letterboxed(
        self, images: Sequence[np.ndarray], scales: Sequence[float]
    ) -> list[list[Face]]:
        raise NotImplementedError


class SCRFDDetector(BatchedSCRFD):
    """The SCRFD maths (letterbox, decoding, NMS, in real batches) over a runner of the graph.

    ``graph`` is the loaded batch-dynamic graph (:func:`preprocess.scrfd_graph.load_detector_graph`:
    any InsightFace SCRFD ONNX file, batch-1 packs rewritten once into the cache); ``runner``
    runs it: any object with ONNX Runtime's ``run(output_names, feeds) -> list of arrays``
    (:class:`core.classifier.Runner`): a backend's runner (ONNX Runtime, a TensorRT
    engine; :func:`engine.api.open_detector` makes the engine's detector that way), or an
    ``InferenceSession`` (:meth:`from_file`). ``input_dims`` are the input dims the runner takes
    (ints where fixed: a TensorRT engine built for one size; default the graph's own);
    ``providers`` says where the runner runs (logs, :attr:`providers`). Safe to call from
    several threads when the runner is (sessions and backend runners are); no per-call state is
    kept on the instance. ``pool`` (:class:`core.compute.ComputePool`) runs the batches of
    one call at once (the engine passes its CPU thread budget: one SCRFD call per core).
    """

    def __init__(
        self,
        graph: DetectorGraph,
        runner: Runner,
        *,
        input_size: int = DEFAULT_DETECTOR_INPUT,
        score_threshold: float = DEFAULT_SCORE_THRESHOLD,
        nms_threshold: float = DEFAULT_NMS_THRESHOLD,
        batch_size: int = CPU_DETECTOR_BATCH,
        max_faces: int | None = None,
        input_shape: str = DEFAULT_DETECTOR_INPUT_SHAPE,
        input_dims: Sequence[int | None] | None = None,
        providers: Sequence[str] = (),
        pool: ComputePool = INLINE,
    ) -> None:
        self.config = DetectorConfig(
            input_size=input_size,
            score_threshold=score_threshold,
            nms_threshold=nms_threshold,
            batch_size=batch_size,
            max_faces=max_faces,
            input_shape=input_shape,
        )
        self.pool = pool
        self.graph = graph
        self.model_path = graph.source
        self._runner = runner
        self._providers = tuple(providers)
        self._input_name = graph.input_name
        self._output_names = list(graph.output_names)
        self.spec = spec_for_outputs(list(graph.output_channels))
        size = self.config.input_size
        if size % self.spec.max_stride:
            raise InvalidInputError(
                f"input_size must be a multiple of {self.spec.max_stride} for this model "
                f"(strides {list(self.spec.strides)}), got {size}"
            )
        in_shape = tuple(graph.input_dims if input_dims is None else input_dims)
        if len(in_shape) != 4:
            raise ModelFormatError(f"expected an NCHW detector input, got dims {list(in_shape)}")
        fixed = [d for d in in_shape[2:4] if isinstance(d, int)]
        if any(d != size for d in fixed):
            raise InvalidInputError(
                f"{self.model_path.name} runs a fixed input of {in_shape[2]}x{in_shape[3]} here; "
                f"input_size={size} is not supported for it (supported value: {fixed[0]})"
            )
        #: True when the runner takes one input size only (the per-video input choice of
        #: ``preprocess.detector_input`` then cannot run; the pipeline says so in the records)
        self.fixed_input = bool(fixed)
        if fixed and self.config.input_shape != "square":
            # a fixed square input runs only that shape: letterbox to it (the same faces as the
            # frame-shaped input, which needs a free input size)
            logger.info(
                "SCRFD %s runs a fixed %sx%s input: letterboxing to that square",
                self.model_path.name,
                in_shape[2],
                in_shape[3],
            )
            self.config = dataclasses.replace(self.config, input_shape="square")
        logger.info(
            "SCRFD %s: %d strides %s, %d anchors/cell, keypoints=%s, input %dx%d, on %s",
            self.model_path.name,
            self.spec.num_levels,
            list(self.spec.strides),
            self.spec.num_anchors,
            self.spec.use_kps,
            size,
            size,
            list(self._providers),
        )

    @classmethod
    def from_file(
        cls,
        model_path: str | os.PathLike[str],
        *,
        providers: Sequence[str | tuple[str, dict[str, object]]] = ("CPUExecutionProvider",),
        intra_op_threads: int = 0,
        **options: Any,
    ) -> SCRFDDetector:
        """SCRFD on an ONNX Runtime session of its own, for tools, tests and benchmarks (the
        engine opens its detector on its backend's runners: :func:`engine.api.open_detector`).

        ``model_path`` is any InsightFace SCRFD ONNX file (``det_500m``, ``det_2.5g``,
        ``det_10g``) or a batch-dynamic export (loaded by
        :func:`preprocess.scrfd_graph.load_detector_graph`); the session runs on ``providers``
        (the first one, or :class:`~core.errors.BackendUnavailableError`: no silent
        fallback) with ``intra_op_threads`` threads; ``options`` are the constructor's.
        Raises :class:`ArtifactNotFoundError` for a missing file and
        :class:`InvalidInputError` for a bad option.
        """
        if isinstance(providers, str):
            providers = (providers,)
        if not providers:
            raise InvalidInputError("providers must name at least one ONNX Runtime provider")
        if (
            isinstance(intra_op_threads, bool)
            or not isinstance(intra_op_threads, int)
            or intra_op_threads < 0
        ):
            raise InvalidInputError(
                f"intra_op_threads must be an int >= 0 (0: ONNX Runtime's default), "
                f"got {intra_op_threads!r}"
            )
        DetectorConfig(**{k: v for k, v in options.items() if k in _CONFIG_FIELDS})  # fail early
        path = Path(model_path)
        if not path.is_file():
            raise ArtifactNotFoundError(
                f"SCRFD model not found: {path}; pass the path of an .onnx file "
                "(weights.find_model('det_500m') locates or downloads the known ones)"
            )
        graph = load_detector_graph(path)
        first = provider_name(providers[0])
        session = create_session(
            graph.model_for(first), list(providers), intra_op_threads=intra_op_threads
        )
        return cls(graph, session, providers=session.get_providers(), **options)

    @property
    def providers(self) -> list[str]:
        """Where the runner runs (ONNX Runtime's providers, or the backend's name)."""
        return list(self._providers)

    def _run_letterboxed(
        self, images: Sequence[np.ndarray], scales: Sequence[float]
    ) -> list[list[Face]]:
        """Letterboxed images of one shape through the runner, decoded and NMS'd."""
        height, width = images[0].shape[:2]
        blob = np.empty((len(images), 3, height, width), dtype=np.float32)
        for i, image in enumerate(images):
            _fill_blob(image, blob[i])  # same as to_blob, one image at a time
        outputs = self._runner.run(self._output_names, {self._input_name: blob})
        candidates = decode_batch(outputs, self.spec, (height, width), self.config.score_threshold)
        return [
            select_faces(c, s, self.config.nms_threshold, self.config.max_faces)
            for c, s in zip(candidates, scales, strict=True)
        ]
