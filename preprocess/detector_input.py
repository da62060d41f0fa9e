"""Every face at any size: the SCRFD input chosen per video from what is in it.

SCRFD finds a face reliably only when the face's size at the network input is within a band.
Measured with ``det_500m`` on faces of three shared clips scaled to known sizes (``python -m
benchmarks.detector_input``, its ``sizes`` part): on a grey 640x640 input every face of
``sqrt(w * h)`` >= 16 px was found (14 px: 38-100%, 10 px: 0-50%); in close-ups filling the
input, faces were found up to 360-440 px depending on the clip and never above 440 px (the
upscaled close-ups of the dim, low-resolution clip lost some from ~280 px). That is the known
SCRFD miss of faces filling most of the image (insightface #1518, #2165): the limit is the
face's size at the input, not its share of the input. The default letterbox to 640 scales every
frame to fit 640, so the issue's 480x480 close-up (face ~455 px at the input) is missed, and so
is a 60 px face in a 3840x2160 frame (10 px at the input).

Sizes here are ``sqrt(w * h)`` of SCRFD's box in pixels (for SCRFD's boxes about 0.83 times
their height). The input is a letterbox target ``(width, height)``, multiples of 32, which the
batch-dynamic graph accepts (:func:`preprocess.scrfd_graph.make_batch_dynamic`); the frame is
scaled to fit it and padded (:func:`preprocess.scrfd.letterbox`).

The rule (:func:`choose_detector_input`), from the frames the video was sampled for and the
faces the detector found in them at its default input (which the engine computes anyway):

1. **Blind bands.** The default input's scale ``s0`` reliably covers faces of
   ``RELIABLE_MIN / s0`` to ``RELIABLE_MAX / s0`` frame pixels. The faces to find run from
   ``MIN_FACE`` px to ``MAX_FACE_FRACTION`` of the frame's short side (issue 14: ~40 px in a 4K
   frame up to ~90% of the short side tall). A part of that range the default misses by a factor
   >= ``BAND_MIN_RATIO`` is a blind band: small faces in large frames (1080p and up), large faces
   in near-square frames (a 480x480 close-up). 16:9 frames up to 720p have none.
2. **Looks.** For each blind band the detector runs once more, at the input that puts the band's
   faces in the reliable range, on a few of the sampled frames: as many as fit in
   ``LOOK_BUDGET`` of the video's default detection cost (pixel count, at least 1, at most
   ``MAX_LOOK_FRAMES``), one per equal slice of the sampled frames, the one where the default
   found the fewest faces (ties: nearest the slice's middle). A face there that no default face
   overlaps (IoU < ``NEW_FACE_IOU``) is new.
3. **Keep the default** unless a look found a new face or default faces outside the reliable
   range were found in at least 2 sampled frames (every sampled frame when fewer): then the
   default's results are today's results, bit for bit, and nothing else runs.
4. **Otherwise** the input sizes are chosen from the sizes of all faces found (default and
   looks): sorted from the largest, faces within a factor ``TARGET_MAX / TARGET_MIN`` of the
   largest share one input, whose scale is the one nearest ``s0`` that puts them all within
   ``[TARGET_MIN, TARGET_MAX]`` px at the input; the next smaller faces get the next input,
   and so on (at most ``MAX_INPUTS``); a group whose faces are all within the reliable range at
   ``s0`` gets the default input itself. Every chosen input runs on every sampled frame; with
   more than one, each frame's faces are merged by NMS (the detector's threshold) across inputs.

**A video that changes size** (WebRTC recordings, screen captures; see
:attr:`preprocess.video.VideoClip.size_changes`): the frames are grouped by size and the rule
runs on each group on its own (its blind bands, looks, budget and inputs are those of that
frame size, since a letterbox target is tied to one); the choice records one part per size
(:attr:`DetectorInput.parts`, ``frame_sizes`` in the record), and each frame is detected at
the input(s) chosen for its size. A video of one size gives exactly the choice it always did.

Cost: nothing where the default has no blind band (854x480, 1280x720 16:9); otherwise the looks,
by the pixel budget ~6% of the default detection of the sampled frames (measured 6.3% at N=20 on
the 1080p clips), but never less than one frame per band, so more for short samples (N < 13 on
1080p). A video whose choice is not the default is detected again at its inputs (a 45x64 px
face in 4K: 1760x992, ~4x the default's pixels).

:class:`DetectorInput` records what was chosen and why (``to_record()`` for a result record).

Tiles were considered and not used (``tiles`` part of the benchmark): SCRFD is fully
convolutional, so 2x2 tiles of 960x544 do the work of one 1920x1088 input (measured 69-75 ms
against 66 ms on a 4K frame on a quiet machine; under load the tiles were 10-30% faster, the
smaller feature maps fitting caches better), but a face on a tile border is cut: without overlap
it was not found at all, with a 64 px overlap it came out 4 times (whole and cut, in both tiles)
and needed NMS across tiles to become one. Tiles do not help large faces either, whose limit is
their size at the input. A larger single input has none of these problems.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from core.errors import InvalidInputError
from preprocess.scrfd import Face, letterbox, nms

if TYPE_CHECKING:
    from preprocess.scrfd import SCRFDDetector

__all__ = [
    "BAND_MIN_RATIO",
    "LOOK_BUDGET",
    "MAX_FACE_FRACTION",
    "MAX_INPUTS",
    "MAX_INPUT_SIDE",
    "MAX_LOOK_FRAMES",
    "MIN_FACE",
    "NEW_FACE_IOU",
    "RELIABLE_MAX",
    "RELIABLE_MIN",
    "TARGET_MAX",
    "TARGET_MIN",
    "DetectorInput",
    "Look",
    "choose_detector_input",
    "detect_any_size",
    "detect_at_chosen_input",
    "detect_with_input",
    "input_for_scale",
    "letterbox_scale",
    "merge_faces",
]

#: Face size (px, ``sqrt(w * h)`` at the input) from which det_500m found every test face (16)
#: plus a margin; measured by ``python -m benchmarks.detector_input`` (``sizes``).
RELIABLE_MIN = 20.0
#: Face size (px at the input) up to which faces are found reliably (found up to 360-440 px
#: depending on the clip, some upscaled blurry ones missed from ~280), with a margin.
RELIABLE_MAX = 320.0
#: Where a chosen input puts the faces (px at the input): inside the reliable range with room.
TARGET_MIN = 24.0
TARGET_MAX = 256.0
#: The smallest face to find, in frame pixels (issue 14: "from ~40 px in a 4K frame").
MIN_FACE = 40.0
#: The largest face to find, as a fraction of the frame's short side: ``sqrt(w * h)`` of a face
#: 90% of the short side tall (issue 14), with SCRFD's boxes ``sqrt(w * h) ~ 0.83 * height``.
MAX_FACE_FRACTION = 0.75
#: A blind band narrower than this factor is not looked at; an input this close to the default
#: scale is the default input.
BAND_MIN_RATIO = 1.25
#: What a look may cost, as a fraction of the default detection of the sampled frames (pixels).
LOOK_BUDGET = 0.08
MAX_LOOK_FRAMES = 3
#: A face found by a look is new when it overlaps no default face of that frame this much.
NEW_FACE_IOU = 0.3
#: At most this many inputs per video, and no input side above this many pixels.
MAX_INPUTS = 3
MAX_INPUT_SIDE = 4096


@dataclass(frozen=True)
class Look:
    """One extra detector run of the probe, on one sampled frame."""

    size: tuple[int, int]  # letterbox target (width, height)
    scale: float  # frame pixels -> input pixels
    frame_index: int  # the video frame looked at
    faces: int  # faces found there at this input
    new_faces: int  # of which no default face overlaps
    band: str  # "small" or "large": which blind band it looked for


@dataclass(frozen=True)
class DetectorInput:
    """The detector input(s) chosen for one video, and why.

    ``sizes`` are letterbox targets ``(width, height)`` in input pixels, each run on every
    sampled frame (several: merged by NMS); ``scales`` the matching frame-to-input factors.
    ``default`` is True when ``sizes`` is just the detector's own input, whose results are
    those of :meth:`SCRFDDetector.detect`. ``face_sizes`` is the smallest and largest face
    found (frame pixels, ``sqrt(w * h)``), None when none was.

    ``frame_size`` is the ``(width, height)`` of the frames the choice is for. For a video that
    changes size, ``parts`` holds one choice per frame size (in order of first appearance, each
    with its ``frame_size`` and ``frames``, the number of sampled frames of that size); the
    whole's ``sizes`` are all the parts' inputs (``scales``: each one's at the first part that
    uses it), ``default`` is True when every part is, ``looks`` are all the parts' looks and
    ``face_sizes`` spans them.
    """

    sizes: tuple[tuple[int, int], ...]
    scales: tuple[float, ...]
    default: bool
    reason: str
    looks: tuple[Look, ...] = ()
    face_sizes: tuple[float, float] | None = None
    frame_size: tuple[int, int] | None = None
    frames: int = 0
    parts: tuple[DetectorInput, ...] = ()

    def to_record(self) -> dict[str, Any]:
        """JSON-ready: ``{"sizes": [[w, h], ...], "scales", "default", "reason", "looks",
        "face_sizes"}``, and for a video that changes size ``"frame_sizes"``: one entry per
        frame size, ``{"frame_size": [w, h], "frames", "sizes", "scales", "default",
        "reason", "looks", "face_sizes"}``."""
        out = self._record()
        if self.parts:
            out["frame_sizes"] = [
                {"frame_size": list(p.frame_size or ()), "frames": p.frames, **p._record()}
                for p in self.parts
            ]
        return out

    def _record(self) -> dict[str, Any]:
        return {
            "sizes": [list(s) for s in self.sizes],
            "scales": [round(s, 5) for s in self.scales],
            "default": self.default,
            "reason": self.reason,
            "looks": [
                {
                    "size": list(look.size),
                    "scale": round(look.scale, 5),
                    "frame_index": look.frame_index,
                    "faces": look.faces,
                    "new_faces": look.new_faces,
                    "band": look.band,
                }
                for look in self.looks
            ],
            "face_sizes": None
            if self.face_sizes is None
            else [round(v, 1) for v in self.face_sizes],
        }


# --------------------------------------------------------------------------------------------
# Pure helpers


def _size(box: Sequence[float]) -> float:
    w = max(float(box[2]) - float(box[0]), 0.0)
    h = max(float(box[3]) - float(box[1]), 0.0)
    return math.sqrt(w * h)


def _iou(a: Sequence[float], b: Sequence[float]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = _size(a) ** 2 + _size(b) ** 2 - inter
    return inter / union if union > 0 else 0.0


def letterbox_scale(frame_hw: tuple[int, int], size: tuple[int, int]) -> float:
    """The scale :func:`preprocess.scrfd.letterbox` uses to fit a ``(height, width)`` frame into
    a ``(width, height)`` target (the same truncation), without resizing anything."""
    im_h, im_w = int(frame_hw[0]), int(frame_hw[1])
    width, height = int(size[0]), int(size[1])
    if min(im_h, im_w, width, height) <= 0:
        raise InvalidInputError(f"sizes must be positive, got frame {frame_hw} and input {size}")
    im_ratio = float(im_h) / im_w
    new_h = height if im_ratio > float(height) / width else int(width * im_ratio)
    return float(max(new_h, 1)) / im_h


def input_for_scale(
    frame_hw: tuple[int, int], scale: float, *, stride: int = 32, round_up: bool = True
) -> tuple[int, int]:
    """The letterbox target ``(width, height)`` that scales a ``(height, width)`` frame by about
    ``scale``: each side times ``scale``, rounded up (or down) to a multiple of ``stride``, at
    least ``stride`` and at most ``MAX_INPUT_SIDE``."""
    if not scale > 0:
        raise InvalidInputError(f"scale must be positive, got {scale!r}")
    h, w = int(frame_hw[0]), int(frame_hw[1])
    top = MAX_INPUT_SIDE // stride * stride

    def side(v: float) -> int:
        k = math.ceil(v / stride - 1e-9) if round_up else math.floor(v / stride + 1e-9)
        return min(max(k * stride, stride), top)

    return side(w * scale), side(h * scale)


def merge_faces(per_input: Sequence[Sequence[Face]], nms_threshold: float) -> list[Face]:
    """One frame's faces from several inputs, merged: NMS over all of them (InsightFace's
    convention, :func:`preprocess.scrfd.nms`), highest score first. The same face found at two
    inputs overlaps itself far above any NMS threshold (IoU ~0.8-0.9 measured), so it is kept
    once, from the input that scored it highest."""
    faces = [f for group in per_input for f in group]
    if len(faces) <= 1:
        return list(faces)
    boxes = np.asarray([f.box for f in faces], dtype=np.float32)
    scores = np.asarray([f.score for f in faces], dtype=np.float32)
    return [faces[i] for i in nms(boxes, scores, nms_threshold)]


def _sizes_text(sizes: Iterable[tuple[int, int]]) -> str:
    return ", ".join(f"{w}x{h}" for w, h in dict.fromkeys(sizes))


def _check_frames(frames: Sequence[np.ndarray]) -> dict[tuple[int, int], list[int]]:
    """The positions of the frames of each ``(height, width)``, in order of first appearance
    (one entry for a video of one size); raises for no frames or frames that are not HxWx3."""
    if not frames:
        raise InvalidInputError("no frames: pass the sampled frames of one video")
    groups: dict[tuple[int, int], list[int]] = {}
    for i, f in enumerate(frames):
        shape = tuple(np.shape(f))
        if len(shape) != 3 or shape[2] != 3:
            raise InvalidInputError(f"expected HxWx3 BGR frames, got shape {shape} (frame {i})")
        groups.setdefault((int(shape[0]), int(shape[1])), []).append(i)
    return groups


def _sizes_of(groups: dict[tuple[int, int], list[int]]) -> str:
    return ", ".join(f"{w}x{h} ({len(p)} frames)" for (h, w), p in groups.items())


def _look_frames(default_faces: Sequence[Sequence[Face]], count: int) -> list[int]:
    """Positions of ``count`` frames to look at: one per equal slice of the sampled frames, the
    one with the fewest default faces, ties nearest the slice's middle."""
    n = len(default_faces)
    count = max(1, min(count, n))
    picks = []
    for k in range(count):
        a, b = k * n // count, (k + 1) * n // count
        mid = (a + b - 1) / 2.0
        picks.append(min(range(a, b), key=lambda i: (len(default_faces[i]), abs(i - mid), i)))
    return picks


# --------------------------------------------------------------------------------------------
# The probe


def _bands(frame_hw: tuple[int, int], s0: float) -> list[tuple[str, float, bool]]:
    """Blind bands of the default scale ``s0``: ``(name, look scale, round up)``."""
    bands = []
    smallest_reliable = RELIABLE_MIN / s0
    if smallest_reliable >= MIN_FACE * BAND_MIN_RATIO:
        bands.append(("small", RELIABLE_MIN / MIN_FACE, True))
    largest = MAX_FACE_FRACTION * min(frame_hw)
    if largest >= RELIABLE_MAX / s0 * BAND_MIN_RATIO:
        bands.append(("large", TARGET_MAX / largest, False))
    return bands


def _plan_groups(sizes: Sequence[float], s0: float) -> list[tuple[float, float, float | None]]:
    """Step 4 of the rule: groups of face sizes ``(smallest, largest, scale)``, largest faces
    first; ``scale`` is None (the default input) when the whole group is within the reliable
    range at ``s0``, else the scale nearest ``s0`` that puts the group in
    [TARGET_MIN, TARGET_MAX]."""
    remaining = sorted(sizes, reverse=True)
    groups: list[tuple[float, float, float | None]] = []
    ratio = TARGET_MAX / TARGET_MIN
    while remaining and len(groups) < MAX_INPUTS:
        top = remaining[0]
        group = [z for z in remaining if z >= top / ratio]
        remaining = [z for z in remaining if z < top / ratio]
        small, large = min(group), max(group)
        if small * s0 >= RELIABLE_MIN and large * s0 <= RELIABLE_MAX:
            groups.append((small, large, None))
        else:
            lo, hi = TARGET_MIN / small, TARGET_MAX / large
            groups.append((small, large, min(max(s0, lo), hi)))
    return groups


def choose_detector_input(
    detector: SCRFDDetector,
    frames: Sequence[np.ndarray],
    default_faces: Sequence[Sequence[Face]],
    *,
    frame_indices: Sequence[int] | None = None,
) -> DetectorInput:
    """Choose the detector input(s) for one video (the rule: module docstring).

    ``frames`` are the video's sampled frames (HxWx3 uint8 BGR, one shape), ``default_faces``
    what ``detector.detect(frames)`` returned for them (reused, not recomputed), and
    ``frame_indices`` their video frame indices (for the record; positions when omitted). The
    only detector runs are the looks (see :class:`Look`), so the cost is bounded by
    ``LOOK_BUDGET`` of the default detection (at least one frame per blind band).

    Frames of several sizes (a video that changes size) are grouped by size and each group
    gets its own choice (:attr:`DetectorInput.parts`; see the module docstring).

    Raises :class:`InvalidInputError` when there are no frames, frames that are not HxWx3, or
    ``default_faces`` / ``frame_indices`` of another length.
    """
    groups = _check_frames(frames)
    if len(default_faces) != len(frames):
        raise InvalidInputError(
            f"{len(frames)} frames but {len(default_faces)} lists of default faces"
        )
    indices = list(range(len(frames))) if frame_indices is None else list(frame_indices)
    if len(indices) != len(frames):
        raise InvalidInputError(f"{len(frames)} frames but {len(indices)} frame indices")
    parts = [
        _choose_one(
            detector,
            hw,
            [frames[p] for p in positions],
            [default_faces[p] for p in positions],
            [indices[p] for p in positions],
        )
        for hw, positions in groups.items()
    ]
    if len(parts) == 1:
        return parts[0]
    return _combine(parts, groups)


def _combine(parts: list[DetectorInput], groups: dict[tuple[int, int], list[int]]) -> DetectorInput:
    """One choice for a video that changes size, from one choice per frame size."""
    sizes: list[tuple[int, int]] = []
    scales: list[float] = []
    for part in parts:
        for size, scale in zip(part.sizes, part.scales):
            if size not in sizes:
                sizes.append(size)
                scales.append(scale)
    spans = [p.face_sizes for p in parts if p.face_sizes is not None]
    reason = f"the video changes size ({_sizes_of(groups)}), inputs chosen per size: " + "; ".join(
        f"{p.frame_size[0]}x{p.frame_size[1]}: {p.reason}"  # type: ignore[index]
        for p in parts
    )
    return DetectorInput(
        sizes=tuple(sizes),
        scales=tuple(scales),
        default=all(p.default for p in parts),
        reason=reason,
        looks=tuple(look for p in parts for look in p.looks),
        face_sizes=(min(a for a, _ in spans), max(b for _, b in spans)) if spans else None,
        frames=sum(p.frames for p in parts),
        parts=tuple(parts),
    )


def _choose_one(
    detector: SCRFDDetector,
    frame_hw: tuple[int, int],
    frames: Sequence[np.ndarray],
    default_faces: Sequence[Sequence[Face]],
    indices: Sequence[int],
) -> DetectorInput:
    """The rule on frames of one size ``(height, width)``."""
    frame_size = (frame_hw[1], frame_hw[0])
    default_size = tuple(detector.input_for(frame_hw))
    d2 = default_size[0] * default_size[1]
    s0 = letterbox_scale(frame_hw, default_size)

    looks: list[Look] = []
    new_sizes: list[float] = []
    for band, scale, round_up in _bands(frame_hw, s0):
        size = input_for_scale(frame_hw, scale, round_up=round_up)
        look_scale = letterbox_scale(frame_hw, size)
        budget = LOOK_BUDGET * len(frames) * d2 / (size[0] * size[1])
        positions = _look_frames(default_faces, min(MAX_LOOK_FRAMES, max(1, int(budget))))
        images, scales = [], []
        for p in positions:
            image, sc = letterbox(frames[p], size)
            images.append(image)
            scales.append(sc)
        found = detector.detect_prepared(images, scales)
        for p, faces in zip(positions, found):
            new = [
                f for f in faces if all(_iou(f.box, g.box) < NEW_FACE_IOU for g in default_faces[p])
            ]
            new_sizes.extend(_size(f.box) for f in new)
            looks.append(Look(size, look_scale, indices[p], len(faces), len(new), band))

    default_sizes = [_size(f.box) for faces in default_faces for f in faces]
    all_sizes = default_sizes + new_sizes
    face_sizes = (min(all_sizes), max(all_sizes)) if all_sizes else None
    outside = sum(
        1
        for faces in default_faces
        if any(not RELIABLE_MIN <= _size(f.box) * s0 <= RELIABLE_MAX for f in faces)
    )
    need_outside = min(2, len(frames))
    default = DetectorInput(
        (default_size,), (s0,), True, "", tuple(looks), face_sizes, frame_size, len(frames)
    )

    if not new_sizes and outside < need_outside:
        if not default_sizes:
            where = _sizes_text(look.size for look in looks)
            reason = f"no face found at the default input {default_size[0]}x{default_size[1]}" + (
                f" nor at {where}" if where else ""
            )
        else:
            at_input = [z * s0 for z in default_sizes]
            reason = (
                f"default input {default_size[0]}x{default_size[1]}: faces of "
                f"{min(at_input):.0f}-{max(at_input):.0f} px "
                f"there, within the reliable {RELIABLE_MIN:.0f}-{RELIABLE_MAX:.0f} px"
            )
            if looks:
                reason += ", and no other face at " + _sizes_text(look.size for look in looks)
        return dataclasses.replace(default, reason=reason)

    sizes: list[tuple[int, int]] = []
    parts = []
    for small, large, scale in _plan_groups(all_sizes, s0):
        size = (
            default_size if scale is None else input_for_scale(frame_hw, scale, round_up=scale > s0)
        )
        at = letterbox_scale(frame_hw, size)
        parts.append(
            f"{size[0]}x{size[1]} for faces of {small:.0f}-{large:.0f} px "
            f"({small * at:.0f}-{large * at:.0f} px there)"
        )
        if size not in sizes:
            sizes.append(size)
    sizes.sort(key=lambda s: (s != default_size, s[0] * s[1]))
    why = []
    if new_sizes:
        why.append(
            f"{len(new_sizes)} face(s) of {min(new_sizes):.0f}-{max(new_sizes):.0f} px found "
            "only at " + _sizes_text(look.size for look in looks)
        )
    if outside >= need_outside:
        why.append(
            f"faces outside the reliable {RELIABLE_MIN:.0f}-{RELIABLE_MAX:.0f} px at the default "
            f"input {default_size[0]}x{default_size[1]} in {outside} frame(s)"
        )
    reason = "; ".join(why) + ": input " + "; ".join(parts)
    return DetectorInput(
        sizes=tuple(sizes),
        scales=tuple(letterbox_scale(frame_hw, s) for s in sizes),
        default=sizes == [default_size],
        reason=reason,
        looks=tuple(looks),
        face_sizes=face_sizes,
        frame_size=frame_size,
        frames=len(frames),
    )


# --------------------------------------------------------------------------------------------
# Detection with the chosen input


def detect_with_input(
    detector: SCRFDDetector,
    frames: Sequence[np.ndarray],
    choice: DetectorInput,
    *,
    default_faces: Sequence[Sequence[Face]] | None = None,
) -> list[list[Face]]:
    """Faces of each frame at the chosen input(s), highest score first.

    The detector's own input runs through :meth:`SCRFDDetector.detect` (or reuses
    ``default_faces`` when given), so a default choice gives exactly today's faces; other sizes
    are letterboxed here and run through :meth:`SCRFDDetector.detect_prepared`, in batches of
    at most as many pixels as ``batch_size`` default inputs. With several sizes, each frame's
    faces are merged by :func:`merge_faces`. For a video that changes size, each frame is
    detected at the inputs of the part of ``choice`` for its size.
    """
    groups = _check_frames(frames)
    if default_faces is not None and len(default_faces) != len(frames):
        raise InvalidInputError(
            f"{len(frames)} frames but {len(default_faces)} lists of default faces"
        )
    parts = choice.parts or (choice,)
    if len(groups) > 1 or choice.parts:
        by_size = {p.frame_size: p for p in parts}
        out: list[list[Face]] = [[] for _ in frames]
        for (h, w), positions in groups.items():
            part = by_size.get((w, h))
            if part is None:
                raise InvalidInputError(
                    f"no detector input was chosen for frames of {w}x{h} (the choice is for "
                    f"{', '.join(f'{s[0]}x{s[1]}' for s in by_size if s)}): choose it with "
                    "these frames"
                )
            found = _detect_one_size(
                detector,
                [frames[p] for p in positions],
                part,
                None if default_faces is None else [default_faces[p] for p in positions],
            )
            for p, faces in zip(positions, found):
                out[p] = faces
        return out
    return _detect_one_size(detector, frames, choice, default_faces)


def _detect_one_size(
    detector: SCRFDDetector,
    frames: Sequence[np.ndarray],
    choice: DetectorInput,
    default_faces: Sequence[Sequence[Face]] | None,
) -> list[list[Face]]:
    """:func:`detect_with_input` on frames of one size."""
    default_size = tuple(detector.input_for(frames[0].shape[:2]))
    d2 = default_size[0] * default_size[1]
    results: list[list[list[Face]]] = []
    for size in choice.sizes:
        if tuple(size) == default_size:
            faces = (
                [list(f) for f in default_faces]
                if default_faces is not None
                else detector.detect(frames)
            )
            if len(faces) != len(frames):
                raise InvalidInputError(
                    f"{len(frames)} frames but {len(faces)} lists of default faces"
                )
        else:
            faces = []
            # a batch holds no more pixels than batch_size default inputs (memory stays flat)
            batch = detector.config.batch_size
            step = max(1, min(batch, batch * d2 // (size[0] * size[1])))
            for start in range(0, len(frames), step):
                chunk = [letterbox(f, tuple(size)) for f in frames[start : start + step]]
                faces.extend(detector.detect_prepared([c[0] for c in chunk], [c[1] for c in chunk]))
        results.append(faces)
    if len(results) == 1:
        return results[0]
    threshold = detector.config.nms_threshold
    return [merge_faces([r[i] for r in results], threshold) for i in range(len(frames))]


def detect_at_chosen_input(
    detector: SCRFDDetector,
    frames: Sequence[np.ndarray],
    default_faces: Sequence[Sequence[Face]],
    *,
    frame_indices: Sequence[int] | None = None,
) -> tuple[list[list[Face]], DetectorInput]:
    """The detector-input step of one video, given its faces at the default input: choose the
    input (:func:`choose_detector_input`) and detect again (:func:`detect_with_input`) only
    when the choice is not the default, whose faces are then ``default_faces`` themselves.

    ``frames``: the video's sampled HxWx3 uint8 BGR frames; ``default_faces``: what
    ``detector.detect(frames)`` returned for them (one list per frame); ``frame_indices``: their
    video frame indices (for the record). Returns the faces per frame (frame pixels, highest
    score first) and the choice. Raises :class:`InvalidInputError` as
    :func:`choose_detector_input` does."""
    choice = choose_detector_input(detector, frames, default_faces, frame_indices=frame_indices)
    if choice.default:
        return [list(f) for f in default_faces], choice
    return detect_with_input(detector, frames, choice, default_faces=default_faces), choice


def detect_any_size(
    detector: SCRFDDetector,
    frames: Sequence[np.ndarray],
    *,
    frame_indices: Sequence[int] | None = None,
) -> tuple[list[list[Face]], DetectorInput]:
    """One call: detect at the default input, choose the input for this video, detect again
    only when the choice is not the default (:func:`detect_at_chosen_input`). Returns the
    faces per frame and the choice."""
    frames = list(frames)
    _check_frames(frames)
    return detect_at_chosen_input(
        detector, frames, detector.detect(frames), frame_indices=frame_indices
    )
