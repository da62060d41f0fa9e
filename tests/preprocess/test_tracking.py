"""Face tracks (preprocess.tracking): synthetic boxes for each hard case, then real detections."""

from __future__ import annotations

import itertools
import math
import os
import random
from pathlib import Path

import numpy as np
import pytest

from core.errors import InvalidInputError
from preprocess.scrfd import Face
from preprocess.tracking import (
    Track,
    TrackerConfig,
    face_size,
    main_track,
    min_frames_to_score,
    track_faces,
    tracks_to_score,
)
from tests.preprocess import _face_videos as videos

REPO = Path(__file__).resolve().parents[2]
SHARED = Path(os.environ.get("DFE_SHARED", REPO.parent / "shared"))
MODELS = SHARED / "models"
VIDEOS = SHARED / "videos"
VIDEO_FILES = sorted(VIDEOS.glob("*.mp4")) if VIDEOS.is_dir() else []

needs_assets = pytest.mark.skipif(
    not (MODELS / "det_500m.onnx").is_file() or not VIDEO_FILES,
    reason=f"shared test models/videos not found in {SHARED} (set DFE_SHARED)",
)


def face(cx: float, cy: float, size: float, score: float = 0.9) -> Face:
    """A face box of width ``size`` and height ``1.25 * size`` centred on (cx, cy)."""
    w, h = size, 1.25 * size
    return Face(box=(cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2), score=score)


def centre_x(f: Face) -> float:
    return (f.box[0] + f.box[2]) / 2


def long_tracks(tracks: list[Track], frames: int) -> list[Track]:
    return [t for t in tracks if t.frames >= frames]


# ------------------------------------------------------------------------------------ basics


def test_track_faces_no_frames_or_no_faces_gives_no_track() -> None:
    assert track_faces([]) == []
    assert track_faces([(0, []), (1, []), (5, [])]) == []
    assert main_track([]) is None


def test_track_faces_one_moving_face_is_one_track() -> None:
    dets = [(i, [face(100 + 3 * i, 200, 50)]) for i in range(20)]
    (track,) = track_faces(dets)
    assert track.track_id == 0
    assert track.frame_indices == tuple(range(20))
    assert track.faces == tuple(fs[0] for _, fs in dets)
    assert track.face_at(7) == dets[7][1][0] and track.face_at(99) is None
    assert main_track([track]) is track


def test_face_size_is_geometric_mean_of_sides() -> None:
    assert face_size((10, 20, 50, 110)) == pytest.approx(math.sqrt(40 * 90))
    assert face_size((5, 5, 5, 9)) > 0  # degenerate boxes still have a size to divide by


# ------------------------------------------------------------------------------ side by side


@pytest.mark.parametrize("gap", [1.05, 1.2, 2.0])
def test_track_faces_two_identical_faces_side_by_side_never_mix(gap: float) -> None:
    """The same face twice (a real and a fake copy of one man): equal sizes, scores that swap
    order at random, each missed in ~20% of the frames, jitter, and one spurious detection."""
    rng = random.Random(7)
    size = 60.0
    left, right = 300.0, 300.0 + gap * size
    dets = []
    for i in range(48):
        faces = []
        for cx in (left, right):
            if rng.random() < 0.2:
                continue  # missed in this frame
            jx, jy = rng.uniform(-0.08, 0.08) * size, rng.uniform(-0.08, 0.08) * size
            faces.append(face(cx + jx, 200 + jy, size * rng.uniform(0.95, 1.05), rng.random()))
        if i == 30:
            faces.append(face(900, 500, 25, score=0.51))  # spurious, one frame
        rng.shuffle(faces)
        dets.append((i, faces))
    tracks = track_faces(dets)
    people = long_tracks(tracks, 10)
    assert len(people) == 2
    middle = (left + right) / 2
    sides = [{centre_x(f) < middle for f in t.faces} for t in people]
    assert sorted(sides, key=lambda s: tuple(s)) == [{False}, {True}]  # neither switches side
    # every real detection is in one of the two tracks
    assert sum(t.frames for t in people) == sum(
        1 for _, fs in dets for f in fs if f.score != 0.51 or centre_x(f) != 900
    )
    assert {t.track_id for t in tracks_to_score(tracks, 48)} == {t.track_id for t in people}


def test_track_faces_uses_a_global_assignment_not_a_greedy_one() -> None:
    """Greedy nearest-first would give track B the face between them (0.45 away) and leave A
    with nothing; the global assignment keeps both tracks going."""
    size = 100.0
    dets = [
        (0, [face(0, 0, size), face(100, 0, size)]),
        (1, [face(0, 0, size), face(100, 0, size)]),
        (2, [face(55, 0, size), face(160, 0, size)]),
    ]
    a, b = track_faces(dets, TrackerConfig(max_prediction=0.0))
    assert [centre_x(f) for f in a.faces] == [0, 0, 55]
    assert [centre_x(f) for f in b.faces] == [100, 100, 160]


def test_one_track_and_one_face_pair_as_scipy_pairs_them_without_importing_it() -> None:
    """The single-face case (one track, one face in the frame) is SciPy's answer without
    scipy.optimize (a half-second import at every `dfe` command's start); anything larger goes
    to linear_sum_assignment."""
    import subprocess
    import sys

    from scipy.optimize import linear_sum_assignment

    from preprocess.tracking import _FORBIDDEN, _assignment

    for c in (0.0, 0.3, 7.5, _FORBIDDEN):  # the costs track_faces makes are finite
        want = linear_sum_assignment(np.array([[c]]))
        assert [list(map(int, x)) for x in _assignment(np.array([[c]]))] == [
            list(map(int, x)) for x in want
        ]
    rng = np.random.default_rng(3)
    for shape in ((1, 3), (3, 1), (2, 2), (4, 3)):
        cost = rng.uniform(0, 2, shape)
        got, want = _assignment(cost), linear_sum_assignment(cost)
        assert all(np.array_equal(g, w) for g, w in zip(got, want))
    code = (
        "import sys\nfrom preprocess.tracking import track_faces\n"
        "from preprocess.scrfd import Face\n"
        "dets = [(i, [Face(box=(10.0 + i, 10.0, 60.0 + i, 70.0), score=0.9)]) for i in range(30)]\n"
        "dets[5] = (5, [])\n"
        "(t,) = track_faces(dets)\n"
        "assert t.frames == 29, t.frames\n"
        "assert 'scipy.optimize' not in sys.modules\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]


# ------------------------------------------------------------------------------ crossing


@pytest.mark.parametrize("occluded", [False, True])
def test_track_faces_crossing_paths_keep_their_direction(occluded: bool) -> None:
    """Two faces walk past each other; with ``occluded`` the face in front hides the other
    in the frames where they overlap (only one detection there)."""
    size = 50.0
    dets = []
    for i in range(30):
        a = face(100 + 10 * i, 200, size)  # left to right
        b = face(390 - 10 * i, 205, size * 0.97)  # right to left, slightly smaller
        overlap = abs(centre_x(a) - centre_x(b)) < 0.6 * size
        dets.append((i, [a] if occluded and overlap else [a, b]))
    tracks = long_tracks(track_faces(dets), 10)
    assert len(tracks) == 2
    for t in tracks:
        xs = [centre_x(f) for f in t.faces]
        steps = np.diff(xs)
        assert np.all(steps > 0) or np.all(steps < 0), xs  # never turns back: no swap
    hidden = sum(1 for _, fs in dets if len(fs) == 1)
    assert hidden == (2 if occluded else 0)
    assert sorted(t.frames for t in tracks) == sorted([30, 30 - hidden])


# ---------------------------------------------------------------------- gaps, leave, return


def test_track_faces_bridges_missed_detections() -> None:
    """Missed in up to ``max_missed`` sampled frames in a row while moving: still one track."""
    missing = {5, 6, 7, 15, 22, 23}
    dets = [(i, [] if i in missing else [face(100 + 8 * i, 200, 40)]) for i in range(30)]
    (track,) = track_faces(dets)
    assert track.frames == 30 - len(missing)


def test_track_faces_face_that_leaves_and_returns_to_the_same_place_is_relinked() -> None:
    dets = [(i, [face(400, 300, 80)] if i < 10 or i >= 25 else []) for i in range(40)]
    dets[27] = (27, [face(400 + 0.3 * 80, 300, 80 * 1.1)])  # back, a little off: same place
    (track,) = track_faces(dets)
    assert track.frames == 10 + 15


def test_track_faces_face_that_returns_elsewhere_is_a_new_track() -> None:
    dets = [(i, [face(400, 300, 80)] if i < 10 else []) for i in range(20)]
    dets += [(i, [face(700, 300, 80)]) for i in range(20, 30)]  # 3.75 sizes away
    dets += [(i, [face(400, 300, 160)]) for i in range(30, 35)]  # same place, twice the size
    first, second, third = track_faces(dets)
    assert first.frame_indices == tuple(range(10))
    assert second.frame_indices == tuple(range(20, 30))
    assert third.frame_indices == tuple(range(30, 35))
    assert main_track([first, second, third]) is first  # 10 = 10 frames, same size: lower id


def test_track_faces_lost_track_does_not_take_a_face_an_active_track_can_continue() -> None:
    """A leaves; B walks into A's old place: B's own (active) track keeps B."""
    dets = []
    for i in range(25):
        faces = [face(200 + 6 * i, 300, 60)]  # B walks right, through A's place at x=320
        if i < 5:
            faces.insert(0, face(320, 300, 60))  # A, then gone
        dets.append((i, faces))
    tracks = track_faces(dets)
    b = main_track(tracks)
    assert b.frames == 25
    assert [centre_x(f) for f in b.faces] == [200 + 6 * i for i in range(25)]


def test_track_faces_spurious_one_frame_detection_is_its_own_track() -> None:
    dets = [(i, [face(500, 300, 90)]) for i in range(20)]
    dets[9] = (9, [face(500, 300, 90), face(120, 80, 22, score=0.52)])
    tracks = track_faces(dets)
    assert [t.frames for t in tracks] == [20, 1]  # ids by first appearance
    main = main_track(tracks)
    assert main.frames == 20
    assert tracks_to_score(tracks, 20) == [main]


# ------------------------------------------------------------------ sparse sampling, zoom


def test_track_faces_uniform_sampling_large_uneven_gaps() -> None:
    """``uniform`` sampling of a 300-frame video at N=20: frames 15-16 apart. One face moves
    0.8 face sizes between samples, another stands 2 face sizes to its right, then is passed."""
    from preprocess.sampling import sample_indices

    indices = sample_indices(300, 20, "uniform")
    assert len(set(np.diff(indices))) == 2  # uneven: 15 and 16
    size = 50.0
    dets = []
    for idx in indices:
        mover = face(100 + idx * 0.8 * size / 15.7, 200, size)
        still = face(100 + 2 * size, 260, size * 1.3)
        dets.append((idx, [still, mover]))
    tracks = track_faces(dets)
    assert len(tracks) == 2
    for t in tracks:
        xs = [centre_x(f) for f in t.faces]
        assert np.all(np.diff(xs) > 0) or np.ptp(xs) == 0  # the mover only moves right
    assert sorted(t.frames for t in tracks) == [20, 20]


@pytest.mark.parametrize("n", [3, 4, 5, 6, 7])
def test_track_faces_one_person_walking_between_sparse_samples_is_one_track(n: int) -> None:
    """A new user's case: ``uniform`` N=3..7 of a 300-frame 480p clip in which one person walks
    left and right: the only face moves 1-2.2 face sizes between samples (60-150 frames apart,
    x 149 -> 367 -> 456 -> 411 -> 255 at N=5). One person is one track, in every frame."""
    from preprocess.sampling import sample_indices

    indices = sample_indices(300, n, "uniform")
    size = 100.0
    path = np.interp(indices, [0, 75, 150, 225, 299], [149, 367, 456, 411, 255])
    dets = [(int(i), [face(float(x) + size / 2, 200, size)]) for i, x in zip(indices, path)]
    tracks = track_faces(dets)
    assert len(tracks) == 1 and tracks[0].frames == n, [t.frame_indices for t in tracks]


def test_track_faces_sparse_gaps_keep_two_people_apart() -> None:
    """Wider gates over long gaps do not merge two people: side by side 2.5 face sizes apart,
    60 frames between samples, each keeps its own track, also in a frame where one is missed."""
    size = 80.0
    dets = []
    for k, idx in enumerate(range(0, 300, 60)):
        a, b = face(300 + 10 * k, 200, size), face(300 + 2.5 * size + 10 * k, 200, size)
        dets.append((idx, [a] if k == 2 else [a, b]))
    tracks = track_faces(dets)
    assert [t.frames for t in tracks] == [5, 4]
    for t in tracks:  # each track is one person: its place minus the common walk is constant
        offsets = [centre_x(f) - 10 * i / 60 for f, i in zip(t.faces, t.frame_indices)]
        assert np.ptp(offsets) < 1e-6, offsets


@pytest.mark.parametrize("factor", [1.3, 1.5, 1 / 1.5])
def test_track_faces_fast_zoom(factor: float) -> None:
    """The camera zooms (in or out) about the frame centre: both faces grow (or shrink) by
    ``factor`` per sampled frame and move away from (towards) the centre."""
    centre = np.array([960.0, 540.0])
    start = [np.array([860.0, 500.0]), np.array([1040.0, 520.0])]
    size0 = 40.0 if factor > 1 else 40.0 * factor**-7
    dets = []
    for i in range(8):
        zoom = factor**i
        dets.append(
            (
                3 * i,
                [face(*(centre + (p - centre) * zoom), size0 * zoom) for p in start],
            )
        )
    tracks = track_faces(dets)
    assert len(tracks) == 2
    left, right = tracks
    assert all(centre_x(f) < 960 for f in left.faces)
    assert all(centre_x(f) > 960 for f in right.faces)
    assert left.frames == right.frames == 8


# ------------------------------------------------------------------------ selection rules


def test_main_track_most_frames_then_largest_then_lowest_id() -> None:
    def track(tid: int, frames: int, size: float) -> Track:
        return Track(tid, tuple(range(frames)), tuple(face(0, 0, size) for _ in range(frames)))

    assert main_track([track(0, 5, 100), track(1, 9, 20)]).track_id == 1
    assert main_track([track(0, 9, 50), track(1, 9, 60)]).track_id == 1
    assert main_track([track(0, 9, 60), track(1, 9, 60)]).track_id == 0


@pytest.mark.parametrize(
    ("sampled", "need"), [(0, 1), (1, 1), (3, 1), (8, 2), (13, 4), (16, 4), (20, 4), (100, 4)]
)
def test_min_frames_to_score_quarter_or_four(sampled: int, need: int) -> None:
    assert min_frames_to_score(sampled) == need


def test_tracks_to_score_keeps_long_tracks_and_always_the_main_one() -> None:
    def track(tid: int, frames: int) -> Track:
        return Track(tid, tuple(range(frames)), tuple(face(10 * tid, 0, 30) for _ in range(frames)))

    tracks = [track(0, 3), track(1, 4), track(2, 20)]
    assert [t.track_id for t in tracks_to_score(tracks, 20)] == [1, 2]
    assert [t.track_id for t in tracks_to_score([track(0, 1)], 20)] == [0]  # the main one
    with pytest.raises(InvalidInputError, match="sampled"):
        tracks_to_score(tracks, 10)


# --------------------------------------------------------------------- determinism, errors


def test_track_faces_does_not_depend_on_face_order_within_frames() -> None:
    rng = random.Random(3)
    base = []
    for i in range(25):
        faces = [face(100 + 2 * i, 100, 40), face(300, 120 + i, 55), face(520 - 3 * i, 90, 35)]
        base.append((i, [f for f in faces if rng.random() > 0.15]))
    want = [(t.frame_indices, t.faces) for t in track_faces(base)]
    for seed in range(5):
        shuffled = [(i, random.Random(seed).sample(fs, len(fs))) for i, fs in base]
        assert [(t.frame_indices, t.faces) for t in track_faces(shuffled)] == want


@pytest.mark.parametrize(
    ("dets", "match"),
    [
        ([(3, []), (3, [])], "strictly increasing"),
        ([(5, []), (2, [])], "strictly increasing"),
        ([(-1, [])], "frame index"),
        ([(1.5, [])], "frame index"),
        ([(0,)], "pair"),
        ([(0, [Face(box=(0, 0, float("nan"), 1), score=0.9)])], "finite"),
        # finite corners, but width x height overflows: the costs would be NaN
        ([(0, [Face(box=(0.0, 0.0, 1e200, 1e200), score=0.9)])], "finite area"),
        ([(0, [Face(box=("a", 0, 1, 1), score=0.9)])], "finite"),
        ([(0, [Face(box=(0, 0, 1), score=0.9)])], "finite"),
        ([(0, ["not a face"])], "Face"),
    ],
)
def test_track_faces_rejects_bad_input(dets: list, match: str) -> None:
    with pytest.raises(InvalidInputError, match=match):
        track_faces(dets)


@pytest.mark.parametrize(
    "kwargs",
    [{"max_shift": -1}, {"max_size_change": 0.5}, {"max_missed": -1}, {"max_missed": 1.5}],
)
def test_tracker_config_is_validated(kwargs: dict) -> None:
    with pytest.raises(InvalidInputError):
        TrackerConfig(**kwargs)


# ------------------------------------------------------------------------- real detections


@pytest.fixture(scope="module")
def detector():
    pytest.importorskip("onnxruntime")
    from preprocess.scrfd import SCRFDDetector

    return SCRFDDetector.from_file(MODELS / "det_500m.onnx", batch_size=1)


@needs_assets
@pytest.mark.slow
@pytest.mark.parametrize("sampling", ["first", "uniform"])
def test_track_faces_shared_clips_one_main_track_equals_top_face(detector, sampling) -> None:
    """One person per shared clip: the main track covers every frame with a face, and its face
    there is the frame's highest-scoring face (so ``--faces main`` crops what ``per-frame``
    crops)."""
    from preprocess.video import read_video

    for path in VIDEO_FILES:
        clip = read_video(path, 20, sampling=sampling)
        faces = detector.detect(clip.frames)
        tracks = track_faces(list(zip(clip.indices, faces)))
        main = main_track(tracks)
        with_face = [idx for idx, fs in zip(clip.indices, faces) if fs]
        assert main is not None and list(main.frame_indices) == with_face, path.name
        for idx, fs in zip(clip.indices, faces):
            if fs:
                assert main.face_at(idx) == fs[0], (path.name, idx)
        assert len(tracks_to_score(tracks, len(clip.indices))) == 1, path.name


@needs_assets
@pytest.mark.slow
@pytest.mark.parametrize(("n", "sampling"), [(48, "first"), (20, "uniform")])
def test_track_faces_real_and_fake_side_by_side_two_people(detector, tmp_path, n, sampling) -> None:
    from preprocess.video import read_video

    video = videos.side_by_side(tmp_path / "real_fake_side_by_side.mp4", SHARED)
    clip = read_video(video, n, sampling=sampling)
    faces = detector.detect(clip.frames)
    top_side = [centre_x(fs[0]) < 640 for fs in faces if fs]
    # the case the issue reports: the highest-scoring face jumps between the two people
    assert sum(a != b for a, b in itertools.pairwise(top_side)) >= 3
    tracks = track_faces(list(zip(clip.indices, faces)))
    scored = tracks_to_score(tracks, len(clip.indices))
    assert len(scored) == 2, [(t.track_id, t.frames) for t in tracks]
    sides = []
    for t in scored:
        assert t.frames >= 0.9 * len(clip.indices), t.frames
        side = {centre_x(f) < 640 for f in t.faces}
        assert len(side) == 1, "a track switches between the two people"
        sides.append(side.pop())
    assert sorted(sides) == [False, True]
    assert main_track(tracks) in scored


def test_fill_between_detections_follows_each_track():
    from preprocess.tracking import fill_between_detections

    a0, a4 = Face((0.0, 0.0, 10.0, 10.0), 0.9), Face((8.0, 0.0, 18.0, 10.0), 0.8)
    b0 = Face((100.0, 0.0, 110.0, 10.0), 0.7)
    tracks = track_faces([(0, [a0, b0]), (4, [a4])])
    filled = fill_between_detections(tracks, [0, 1, 2, 3, 4, 5])
    assert filled[0] == [a0, b0] and filled[4] == [a4]
    mid = filled[2]
    assert len(mid) == 1 and mid[0].box == (4.0, 0.0, 14.0, 10.0) and mid[0].score == 0.8
    assert filled[5] == []  # after a track's last detection: not followed
    assert fill_between_detections(tracks, [0, 2, 4], max_gap=3)[1] == []
