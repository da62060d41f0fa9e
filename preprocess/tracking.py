"""Face tracks: link the faces of a video's sampled frames into one sequence per person.

A video's frames are sampled densely (``first``: consecutive frames) or sparsely (``uniform``:
gaps of many frames, possibly uneven). Faces are linked from one sampled frame to the next by
where they are and how big they are, measured in units of the face's own size, so that the same
rule works on a 60 px face in a 4K frame and on a close-up, and whether frames are 1 or 30
frames apart. Appearance is never used: two copies of one person side by side (a real and a fake
version of one man) look the same, and only their places tell them apart.

The rule (deterministic: the same detections always give the same tracks):

* **Face size** ``s = sqrt(w * h)`` of the detector's box (pixels); **centre** the box's centre.
* Frames are taken in order. Each track is *active* while it has been missed in at most
  ``max_missed`` consecutive sampled frames, else *lost*; a track is never closed.
* An **active** track predicts where its face is now: its last centre and log-size, moved on at
  the velocity between its last two observations per frame index (so uneven gaps are
  extrapolated in proportion), the move capped at ``max_prediction`` face sizes and the size
  change at ``max_size_change``. A face may continue it when its centre is within
  ``max_shift`` face sizes of the prediction (``|c - c_pred| / sqrt(s * s_pred)``), widened by
  ``max_speed`` face sizes per frame of gap beyond the first up to ``max_gap_shift`` (sparse
  ``uniform`` samples are tens of frames apart, and a person moves between them), and its size
  within a factor ``max_size_change`` of the predicted size. Cost: that centre distance plus
  ``|ln(s / s_pred)|``.
* A **lost** track (the face left, or was missed longer) is re-linked only to a face at clearly
  the same place and size as its last observation: within ``relink_shift`` face sizes and a
  size factor ``relink_size_change``; cost as above plus ``lost_penalty``, so an active track
  wins a face over a lost one. Elsewhere a returning face starts a new track.
* In each frame, the faces and the tracks are matched one-to-one by minimum total cost over the
  allowed pairs (Hungarian algorithm, :func:`scipy.optimize.linear_sum_assignment`; pairs outside
  the gates are never matched, and the number of matched pairs comes first). A global
  assignment, not a greedy one: two faces side by side are each kept with their own track even
  when one of them moved closer to the other's last place. A face matched to no track starts
  a new one. A track therefore has at most one face per frame.
* Track ids are ``0, 1, ...`` in order of first appearance (first frame, then the centre's x,
  left to right).

**A video that changes size** (``frame_sizes``): boxes are compared where they are *on
screen*, as a player shows each frame fitted into one window. Each frame's boxes are mapped
into the first frame's size: scaled by ``min(W / w, H / h)`` (a ``w x h`` frame fitted into
the first frame's ``W x H``, aspect kept) and centred (the bars a player adds when the aspect
changes). A same-aspect change (1280x720 to 640x360) is then exact: a face that keeps its place
on screen keeps its place and size, and stays one track; frames of the first frame's size are
not mapped at all, so a video of one size gives exactly the tracks it always did. Positions and
sizes are only compared there: the tracks' faces stay in each frame's own pixels.

A spurious detection in one frame becomes a track of one frame; :func:`main_track` and
:func:`tracks_to_score` leave such tracks out. Keypoints are not used for linking: between two
sampled frames they move with the head's pose more than with the person, and the box already
gives the place and size (the rule also works for detectors without keypoints).

The thresholds are choices, not fitted constants; the tests in ``tests/preprocess/
test_tracking.py`` pin what they must achieve (side by side, crossing paths, leaving and
returning, gaps, ``uniform`` gaps, fast zoom, spurious detections, the shared clips).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from core.deps import require
from core.errors import InvalidInputError

if TYPE_CHECKING:
    from preprocess.scrfd import Face

__all__ = [
    "FrameFaces",
    "Track",
    "TrackerConfig",
    "face_size",
    "fill_between_detections",
    "main_track",
    "min_frames_to_score",
    "track_faces",
    "tracks_to_score",
]

#: One sampled frame: its 0-based index in the video, and the faces detected in it.
FrameFaces = tuple[int, Sequence["Face"]]

# A cost for pairs outside the gates: larger than any sum of allowed costs, so the assignment
# first maximises the number of allowed pairs, and such pairs are dropped afterwards.
_FORBIDDEN = 1e9


@dataclass(frozen=True)
class TrackerConfig:
    """Thresholds of :func:`track_faces` (see the module docstring for the rule).

    Distances are in face sizes (``sqrt(w * h)`` of the box), size changes are factors (>= 1),
    counts are in sampled frames. Chosen, not fitted: the tests pin what they must achieve.
    """

    #: Active track: a face may continue it within this many face sizes of the prediction, when
    #: the sampled frames are consecutive ...
    max_shift: float = 1.5
    #: ... plus this many face sizes per frame index of gap beyond the first (a person walks
    #: about 1-2 face sizes a second: 0.05 per frame at 30 fps), so that ``uniform`` sampling's
    #: gaps of tens of frames do not split one person into several tracks ...
    max_speed: float = 0.05
    #: ... up to this many face sizes in all.
    max_gap_shift: float = 4.0
    #: Active track: ... and within this size factor of the predicted size.
    max_size_change: float = 2.0
    #: Sampled frames a track may miss in a row and still be active (predicted, wide gates).
    max_missed: int = 3
    #: Cap on the predicted move from the last observation, in face sizes.
    max_prediction: float = 1.0
    #: Lost track: re-linked only within this many face sizes of its last box ...
    relink_shift: float = 0.5
    #: ... and this size factor of its last size.
    relink_size_change: float = 1.33
    #: Added to a lost track's cost, so an active track wins a face over a lost one.
    lost_penalty: float = 0.5

    def __post_init__(self) -> None:
        for name in (
            "max_shift",
            "max_speed",
            "max_gap_shift",
            "max_prediction",
            "relink_shift",
            "lost_penalty",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
                raise InvalidInputError(f"{name} must be a number >= 0, got {value!r}")
        for name in ("max_size_change", "relink_size_change"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 1:
                raise InvalidInputError(f"{name} must be a factor >= 1, got {value!r}")
        if (
            isinstance(self.max_missed, bool)
            or not isinstance(self.max_missed, int)
            or self.max_missed < 0
        ):
            raise InvalidInputError(f"max_missed must be an int >= 0, got {self.max_missed!r}")


@dataclass(frozen=True)
class Track:
    """One person's face through the sampled frames.

    ``frame_indices`` (strictly increasing, 0-based video frame indices) and ``faces`` (one
    :class:`preprocess.scrfd.Face` per listed frame, in frame pixels) have the same length; frames
    where the track has no face are simply not listed.
    """

    track_id: int
    frame_indices: tuple[int, ...]
    faces: tuple[Face, ...]
    _by_frame: dict[int, Face] = field(init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        if len(self.frame_indices) != len(self.faces):
            raise InvalidInputError(
                f"track {self.track_id}: {len(self.frame_indices)} frame indices but "
                f"{len(self.faces)} faces"
            )
        object.__setattr__(self, "_by_frame", dict(zip(self.frame_indices, self.faces)))

    @property
    def frames(self) -> int:
        """Number of sampled frames in which this track has a face."""
        return len(self.frame_indices)

    def face_at(self, frame_index: int) -> Face | None:
        """This track's face in video frame ``frame_index``, or None where it has none."""
        return self._by_frame.get(frame_index)

    @property
    def median_size(self) -> float:
        """Median face size ``sqrt(w * h)`` over the track's faces, in frame pixels."""
        return float(np.median([face_size(f.box) for f in self.faces])) if self.faces else 0.0


def face_size(box: Sequence[float]) -> float:
    """``sqrt(w * h)`` of an ``(x1, y1, x2, y2)`` box in pixels; at least 1e-6 (a degenerate box
    still has a size to divide by)."""
    w = max(float(box[2]) - float(box[0]), 0.0)
    h = max(float(box[3]) - float(box[1]), 0.0)
    return max(math.sqrt(w * h), 1e-6)


def _centre(box: Sequence[float]) -> tuple[float, float]:
    return (float(box[0]) + float(box[2])) / 2.0, (float(box[1]) + float(box[3])) / 2.0


Box4 = tuple[float, float, float, float]


class _Screen:
    """Each sampled frame's boxes where they are on screen: mapped into the first frame's size
    (fitted, aspect kept, centred; see the module docstring). Frames of the first frame's size,
    and all frames when no sizes are given, are not mapped."""

    def __init__(self, frame_sizes: dict[int, tuple[int, int]] | None) -> None:
        self.maps: dict[int, tuple[float, float, float]] = {}  # index -> scale, dx, dy
        self.sizes = dict(frame_sizes or {})  # index -> (height, width)
        if not frame_sizes:
            return
        ref_h, ref_w = next(iter(frame_sizes.values()))
        for index, (h, w) in frame_sizes.items():
            if (h, w) != (ref_h, ref_w):
                k = min(ref_w / w, ref_h / h)
                self.maps[index] = (k, (ref_w - w * k) / 2.0, (ref_h - h * k) / 2.0)

    def box(self, index: int, box: Sequence[float]) -> Box4:
        """``box`` of frame ``index`` on screen."""
        m = self.maps.get(index)
        x1, y1, x2, y2 = (float(v) for v in box)
        if m is None:
            return x1, y1, x2, y2
        k, dx, dy = m
        return x1 * k + dx, y1 * k + dy, x2 * k + dx, y2 * k + dy

    def point(self, index: int, x: float, y: float, *, back: bool = False) -> tuple[float, float]:
        m = self.maps.get(index)
        if m is None:
            return x, y
        k, dx, dy = m
        return ((x - dx) / k, (y - dy) / k) if back else (x * k + dx, y * k + dy)

    def face(self, index: int, face: Face, *, back: bool = False) -> Face:
        """``face`` of frame ``index`` on screen (or, ``back``, a face on screen in frame
        ``index``'s pixels)."""
        if index not in self.maps:
            return face
        from preprocess.scrfd import Face

        (x1, y1), (x2, y2) = (
            self.point(index, face.box[0], face.box[1], back=back),
            self.point(index, face.box[2], face.box[3], back=back),
        )
        kps = None
        if face.kps is not None:
            kps = tuple(self.point(index, float(x), float(y), back=back) for x, y in face.kps)
        return Face(box=(x1, y1, x2, y2), score=face.score, kps=kps)

    def off_frame(self, index: int, box: Sequence[float]) -> bool:
        """Whether less than half of ``box`` (frame ``index``'s pixels) is inside that frame,
        for a frame that is mapped (of another size than the first)."""
        if index not in self.maps:
            return False
        h, w = self.sizes[index]
        x1, y1, x2, y2 = (float(v) for v in box)
        area = max(x2 - x1, 0.0) * max(y2 - y1, 0.0)
        inside = max(min(x2, w) - max(x1, 0.0), 0.0) * max(min(y2, h) - max(y1, 0.0), 0.0)
        return inside < 0.5 * area


def _check_sizes(
    frame_sizes: Sequence[Sequence[int]] | None, indices: Sequence[int]
) -> dict[int, tuple[int, int]] | None:
    """``{frame index: (height, width)}`` from one ``(height, width, ...)`` per frame."""
    if frame_sizes is None:
        return None
    sizes = list(frame_sizes)
    if len(sizes) != len(indices):
        raise InvalidInputError(f"{len(indices)} frames but {len(sizes)} frame sizes")
    out: dict[int, tuple[int, int]] = {}
    for index, size in zip(indices, sizes):
        try:
            h, w = int(size[0]), int(size[1])
        except (TypeError, ValueError, IndexError):
            raise InvalidInputError(
                f"frame {index}: expected a (height, width) frame size, got {size!r}"
            ) from None
        if h <= 0 or w <= 0:
            raise InvalidInputError(f"frame {index}: frame size must be positive, got {size!r}")
        out[int(index)] = (h, w)
    return out


@dataclass
class _State:
    """A track while it is being built (``boxes``: its faces' boxes on screen)."""

    key: int  # creation order, for deterministic ties
    indices: list[int]
    faces: list[Face]
    boxes: list[Box4]
    missed: int = 0  # sampled frames missed since the last observation

    def last(self) -> tuple[int, float, float, float]:
        """frame index, centre x, centre y, log size of the last observation."""
        cx, cy = _centre(self.boxes[-1])
        return self.indices[-1], cx, cy, math.log(face_size(self.boxes[-1]))

    def predict(self, frame_index: int, config: TrackerConfig) -> tuple[float, float, float]:
        """Predicted centre x, y and log size at ``frame_index`` (constant velocity per frame
        index from the last two observations, capped)."""
        f1, x1, y1, l1 = self.last()
        if len(self.faces) < 2:
            return x1, y1, l1
        f0 = self.indices[-2]
        cx0, cy0 = _centre(self.boxes[-2])
        l0 = math.log(face_size(self.boxes[-2]))
        dt = (frame_index - f1) / (f1 - f0)
        dx, dy, dl = (x1 - cx0) * dt, (y1 - cy0) * dt, (l1 - l0) * dt
        limit = config.max_prediction * math.exp(l1)
        move = math.hypot(dx, dy)
        if move > limit:
            dx, dy = dx * limit / move, dy * limit / move
        cap = math.log(config.max_size_change)
        dl = min(max(dl, -cap), cap)
        return x1 + dx, y1 + dy, l1 + dl


def _check_input(detections: Sequence[FrameFaces]) -> list[tuple[int, list[Face]]]:
    frames: list[tuple[int, list[Face]]] = []
    previous = None
    for position, item in enumerate(detections):
        try:
            index, faces = item
        except (TypeError, ValueError):
            raise InvalidInputError(
                f"detections[{position}]: expected a (frame_index, faces) pair, got {item!r}"
            ) from None
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or index < 0:
            raise InvalidInputError(
                f"detections[{position}]: frame index must be an int >= 0, got {index!r}"
            )
        index = int(index)
        if previous is not None and index <= previous:
            raise InvalidInputError(
                f"detections[{position}]: frame indices must be strictly increasing (frames in "
                f"presentation order), got {index} after {previous}"
            )
        previous = index
        faces = list(faces)
        for k, face in enumerate(faces):
            if not _finite_box(getattr(face, "box", None)):
                raise InvalidInputError(
                    f"detections[{position}] (frame {index}), face {k}: expected a Face with a "
                    f"finite (x1, y1, x2, y2) box of finite area, got {face!r}"
                )
        frames.append((index, faces))
    return frames


def _finite_box(box: object) -> bool:
    """Four finite numbers whose width x height is finite too (a box of 1e200 pixels would make
    the tracking costs NaN)."""
    try:
        x1, y1, x2, y2 = (float(v) for v in box)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        return False
    return all(map(math.isfinite, (x1, y1, x2, y2))) and math.isfinite((x2 - x1) * (y2 - y1))


def _cost(state: _State, box: Box4, frame_index: int, config: TrackerConfig) -> float | None:
    """The cost of continuing ``state`` with a face at ``box`` (on screen), or None outside
    the gates."""
    cx, cy = _centre(box)
    log_size = math.log(face_size(box))
    active = state.missed <= config.max_missed
    if active:
        px, py, pl = state.predict(frame_index, config)
        gap = frame_index - state.indices[-1]
        shift_limit = max(
            config.max_shift,
            min(config.max_shift + config.max_speed * (gap - 1), config.max_gap_shift),
        )
        size_limit, penalty = config.max_size_change, 0.0
    else:
        _, px, py, pl = state.last()
        shift_limit, size_limit = config.relink_shift, config.relink_size_change
        penalty = config.lost_penalty
    size_change = abs(log_size - pl)
    shift = math.hypot(cx - px, cy - py) / math.exp((log_size + pl) / 2.0)
    if shift > shift_limit or size_change > math.log(size_limit) + 1e-12:
        return None
    return shift + size_change + penalty


def _assignment(cost: np.ndarray) -> tuple[Sequence[int], Sequence[int]]:
    """The minimum-cost assignment of rows (tracks) to columns (faces):
    ``scipy.optimize.linear_sum_assignment``. One track and one face (a single-face video's
    every frame) pair with each other whatever the cost, as SciPy pairs them; that case does
    not import ``scipy.optimize``, whose import takes ~0.5 s of a ``dfe`` command's start."""
    if cost.shape == (1, 1):
        return (0,), (0,)
    from scipy.optimize import linear_sum_assignment

    return linear_sum_assignment(cost)


def track_faces(
    detections: Sequence[FrameFaces],
    config: TrackerConfig | None = None,
    *,
    frame_sizes: Sequence[Sequence[int]] | None = None,
) -> list[Track]:
    """Link the faces of a video's sampled frames into tracks (the rule: module docstring).

    ``detections`` lists every sampled frame in presentation order (strictly increasing 0-based
    frame indices, frames without a face included with an empty list) with its faces, e.g.
    ``list(zip(clip.indices, detector.detect(clip.frames)))``. Faces need a ``box`` (x1, y1, x2,
    y2, frame pixels); their order within a frame does not change the result except in exact
    cost ties. ``frame_sizes``: each sampled frame's ``(height, width, ...)`` (e.g. ``[f.shape
    for f in clip.frames]``), for a video that changes size: faces are then compared where they
    are on screen (module docstring). Without it every frame is taken to be of one size.

    Returns the tracks ordered by id (first appearance). Raises :class:`InvalidInputError` for
    frame indices that are not strictly increasing ints >= 0, faces without a finite box, or
    ``frame_sizes`` of another length.
    """
    require("scipy", purpose="linking faces into tracks (scipy.optimize.linear_sum_assignment)")
    config = config or TrackerConfig()
    frames = _check_input(detections)
    screen = _Screen(_check_sizes(frame_sizes, [index for index, _ in frames]))
    states: list[_State] = []
    for frame_index, faces in frames:
        boxes = [screen.box(frame_index, face.box) for face in faces]
        matched: dict[int, int] = {}  # face position -> state position
        if states and faces:
            cost = np.full((len(states), len(faces)), _FORBIDDEN)
            for i, state in enumerate(states):
                for j, box in enumerate(boxes):
                    c = _cost(state, box, frame_index, config)
                    if c is not None:
                        cost[i, j] = c
            rows, cols = _assignment(cost)
            matched = {int(j): int(i) for i, j in zip(rows, cols) if cost[i, j] < _FORBIDDEN}
        continued = set(matched.values())
        for i, state in enumerate(states):
            if i not in continued:
                state.missed += 1
        for j, face in enumerate(faces):
            if j in matched:
                state = states[matched[j]]
                state.indices.append(frame_index)
                state.faces.append(face)
                state.boxes.append(boxes[j])
                state.missed = 0
            else:
                states.append(
                    _State(key=len(states), indices=[frame_index], faces=[face], boxes=[boxes[j]])
                )

    order = sorted(states, key=lambda s: (s.indices[0], _centre(s.boxes[0])[0], s.key))
    return [
        Track(track_id=k, frame_indices=tuple(s.indices), faces=tuple(s.faces))
        for k, s in enumerate(order)
    ]


def main_track(tracks: Sequence[Track]) -> Track | None:
    """The main person: the track present in the most frames, then the largest (median face
    size), then the lowest id; None when there is no track (issue 14, ``--faces main``)."""
    if not tracks:
        return None
    return min(tracks, key=lambda t: (-t.frames, -t.median_size, t.track_id))


def min_frames_to_score(sampled_frames: int, *, fraction: float = 0.25, cap: int = 4) -> int:
    """Frames a track needs to be scored on its own under ``--faces all``: a quarter of the
    sampled frames, or 4 frames when that is fewer (``min(cap, ceil(fraction * n))``, at least
    1). Issue 14: "every track present in at least a quarter of the frames (or 4 frames)"."""
    if isinstance(sampled_frames, bool) or not isinstance(sampled_frames, (int, np.integer)):
        raise InvalidInputError(f"sampled_frames must be an int, got {sampled_frames!r}")
    if sampled_frames < 0:
        raise InvalidInputError(f"sampled_frames must be >= 0, got {sampled_frames}")
    if not 0.0 < fraction <= 1.0:
        raise InvalidInputError(f"fraction must be in (0, 1], got {fraction!r}")
    if isinstance(cap, bool) or not isinstance(cap, int) or cap < 1:
        raise InvalidInputError(f"cap must be an int >= 1, got {cap!r}")
    return max(1, min(cap, math.ceil(fraction * sampled_frames - 1e-9)))


def tracks_to_score(
    tracks: Sequence[Track], sampled_frames: int, *, fraction: float = 0.25, cap: int = 4
) -> list[Track]:
    """The tracks ``--faces all`` scores: those present in at least
    :func:`min_frames_to_score` frames, plus the main track always (so ``all`` never scores
    less than ``main``), in id order.

    ``sampled_frames`` is the number of frames sampled from the video (with or without faces);
    a track cannot be present in more. Raises :class:`InvalidInputError` otherwise.
    """
    need = min_frames_to_score(sampled_frames, fraction=fraction, cap=cap)
    longest = max((t.frames for t in tracks), default=0)
    if longest > sampled_frames:
        raise InvalidInputError(
            f"a track has {longest} frames but only {sampled_frames} frames were sampled; pass "
            "the number of sampled frames of the video"
        )
    main = main_track(tracks)
    return [t for t in tracks if t.frames >= need or t is main]


def _lerp_face(a: Face, b: Face, t: float) -> Face:
    from preprocess.scrfd import Face

    box = tuple((1 - t) * float(u) + t * float(v) for u, v in zip(a.box, b.box))
    kps = None
    if a.kps is not None and b.kps is not None:
        kps = tuple(
            ((1 - t) * pa[0] + t * pb[0], (1 - t) * pa[1] + t * pb[1])
            for pa, pb in zip(a.kps, b.kps)
        )
    return Face(box=box, score=min(float(a.score), float(b.score)), kps=kps)  # type: ignore[arg-type]


def fill_between_detections(
    tracks: Sequence[Track],
    frame_indices: Sequence[int],
    *,
    max_gap: int | None = None,
    frame_sizes: Sequence[Sequence[int]] | None = None,
) -> list[list[Face]]:
    """Faces for every frame of ``frame_indices`` from ``tracks`` linked on a subset of them
    (``--detect-every K``: the detector ran on every K-th sampled frame).

    A detected frame keeps its track faces; a frame between two detections of a track gets
    the track's face linearly interpolated (box and keypoints, by frame index; score: the lower
    of the two), so the track is followed between detections; a frame before a track's first
    or after its last detection gets none of it. ``max_gap`` (frame indices) bounds the span a
    track is followed over without a detection (None: no bound). Faces of a frame are ordered
    by score, highest first, as the detector orders them. ``frame_sizes`` (one ``(height,
    width, ...)`` per frame of ``frame_indices``): for a video that changes size, faces are
    interpolated where they are on screen and put back in each frame's own pixels (see
    :func:`track_faces`); a face that lands mostly outside a frame of another shape (a portrait
    frame between two landscape ones) is not given to it.
    """
    out: list[list[Face]] = [[] for _ in frame_indices]
    position = {idx: k for k, idx in enumerate(frame_indices)}
    screen = _Screen(_check_sizes(frame_sizes, list(frame_indices)))
    for track in tracks:
        for idx, face in zip(track.frame_indices, track.faces):
            if idx in position:
                out[position[idx]].append(face)
        pairs = zip(track.frame_indices, track.frame_indices[1:])
        for (a, b), (fa, fb) in zip(pairs, zip(track.faces, track.faces[1:])):
            if max_gap is not None and b - a > max_gap:
                continue
            sa, sb = screen.face(a, fa), screen.face(b, fb)
            for idx in frame_indices:
                if a < idx < b and idx in position:
                    face = screen.face(idx, _lerp_face(sa, sb, (idx - a) / (b - a)), back=True)
                    if not screen.off_frame(idx, face.box):  # off a frame of another shape
                        out[position[idx]].append(face)
    for faces in out:
        faces.sort(key=lambda f: -f.score)
    return out
