"""Videos that change size mid-stream (WebRTC recordings, screen captures): every frame is read
at its own size, as a player shows it, in every sampling mode; the detector input is chosen per
frame size; faces are tracked where they are on screen; the clip says the video changed size.

Clips are made from a shared clip with Debian's ``ffmpeg`` CLI, as the issue made its own: each
segment is encoded to MPEG-TS at its size and the segments are joined with the ``concat:``
protocol and stream-copied to MP4. Segments follow each other in the source (no content jumps),
so a face keeps its place on screen across a change. Tests needing the CLI skip without it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from preprocess.detector_input import choose_detector_input, detect_with_input
from preprocess.scrfd import Face
from preprocess.tracking import fill_between_detections, track_faces
from preprocess.video import iter_frames, read_video

REPO = Path(__file__).resolve().parents[2]
SHARED = Path(os.environ.get("DFE_SHARED", REPO.parent / "shared"))
SOURCE = SHARED / "videos" / "pair480p_real.mp4"  # 854x480, 24 fps, one man
MODELS = SHARED / "models"
FFMPEG = shutil.which("ffmpeg")
FFPROBE = shutil.which("ffprobe")

needs_cli = pytest.mark.skipif(
    FFMPEG is None or FFPROBE is None,
    reason="Debian's ffmpeg CLI is not installed (apt-get install -y ffmpeg)",
)
needs_clip = pytest.mark.skipif(not SOURCE.is_file(), reason=f"no test video {SOURCE}")
pytestmark = [needs_cli, needs_clip]

FRAME = 1 / 24


def _run(*args: str | Path) -> None:
    proc = subprocess.run(
        [FFMPEG, "-hide_banner", "-loglevel", "error", "-y", *map(str, args)],
        capture_output=True,
        text=True,
    )
    if proc.returncode:
        pytest.skip(f"ffmpeg could not make the clip: {proc.stderr[-300:]}")


def make_clip(out: Path, segments: list[tuple[int, str]], *, rotate: int | None = None) -> Path:
    """Join ``(frames, video filter)`` segments of the source, back to back in its time."""
    parts = []
    start = 0
    for k, (frames, vf) in enumerate(segments):
        part = out.with_name(f"{out.stem}_{k}.ts")
        _run("-ss", f"{start * FRAME:.5f}", "-i", SOURCE, "-frames:v", frames, "-vf", vf,
             "-c:v", "libx264", "-preset", "ultrafast", "-an", "-f", "mpegts", part)  # fmt: skip
        parts.append(str(part))
        start += frames
    joined = out.with_name(f"{out.stem}_joined.mp4")
    _run("-i", "concat:" + "|".join(parts), "-c", "copy", joined)
    if rotate is None:
        return joined.rename(out)
    _run("-i", joined, "-c", "copy", "-metadata:s:v:0", f"rotate={rotate}", out)
    return out


def probe_sizes(path: Path) -> list[tuple[int, int]]:
    """(width, height) of every frame as ffprobe decodes it (before any display rotation)."""
    out = subprocess.run(
        [FFPROBE, "-v", "error", "-select_streams", "v:0", "-show_entries", "frame=width,height",
         "-of", "csv=p=0", str(path)],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return [tuple(int(v) for v in line.split(",")[:2]) for line in out.split() if line.strip(",")]


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("sizes")
    return {
        # the issue's kind: a downscale mid-way
        "down": make_clip(d / "down.mp4", [(24, "scale=1280:720"), (24, "scale=640:360")]),
        # a change at the first frame, up and down again, an aspect change (portrait, the
        # landscape picture letterboxed in it), and a 4:3 crop
        "many": make_clip(
            d / "many.mp4",
            [
                (1, "scale=640:360"),
                (14, "scale=1280:720"),
                (10, "scale=360:-2,pad=360:640:0:(oh-ih)/2"),
                (10, "scale=426:240"),
                (10, "crop=640:480,scale=480:360"),
                (6, "scale=1920:1080"),
            ],
        ),
        # phone video: coded turned, put upright by its display matrix; changes size
        "rotated": make_clip(
            d / "rotated.mp4",
            [(12, "transpose=1,scale=360:640"), (12, "transpose=1,scale=720:1280")],
            rotate=90,
        ),
    }


def _upright(size: tuple[int, int], rotation: int) -> tuple[int, int]:
    return (size[1], size[0]) if rotation in (90, 270) else size


@pytest.mark.parametrize("name", ["down", "many", "rotated"])
@pytest.mark.parametrize(("sampling", "n"), [("first", 20), ("first", 100), ("uniform", 7),
                                             ("uniform", 20)])  # fmt: skip
def test_every_frame_is_read_at_its_own_size(clips, name, sampling, n) -> None:
    path = clips[name]
    truth = probe_sizes(path)
    clip = read_video(path, n, sampling=sampling)
    assert clip.info.frame_count == len(truth)
    expected = min(n, len(truth))
    assert len(clip.frames) == len(clip.indices) == expected
    rot = clip.info.rotation
    for i, frame in zip(clip.indices, clip.frames):
        assert frame.dtype == np.uint8 and frame.ndim == 3 and frame.shape[2] == 3
        assert (frame.shape[1], frame.shape[0]) == _upright(truth[i], rot), i
    assert clip.frame_sizes == [_upright(truth[i], rot) for i in clip.indices]
    assert (clip.info.width, clip.info.height) == clip.frame_sizes[0]
    # the same pixels as a full sequential decode at those indices (seeking or not)
    full = dict(iter_frames(path))
    assert all(np.array_equal(full[i], f) for i, f in zip(clip.indices, clip.frames))
    # the record: where each size starts among the frames read, and a warning naming them
    changes = clip.size_changes
    assert changes[0] == (clip.indices[0], clip.frame_sizes[0])
    assert [s for _, s in changes] == [
        s for k, s in enumerate(clip.frame_sizes) if k == 0 or s != clip.frame_sizes[k - 1]
    ]
    size_warnings = [w for w in clip.warnings if w.startswith("the video changes size")]
    assert clip.changes_size == (len(changes) > 1) == bool(size_warnings)
    if size_warnings:
        assert all(f"{w}x{h}" in size_warnings[0] for _, (w, h) in changes)


def test_the_issue_clip_uniform_gives_both_sizes_and_says_so(clips) -> None:
    clip = read_video(clips["down"], 20, sampling="uniform")
    assert clip.size_changes == [(0, (1280, 720)), (25, (640, 360))]
    (warning,) = [w for w in clip.warnings if "changes size" in w]
    assert "1280x720 (frames 0-22)" in warning and "640x360 (frames 25-47)" in warning


def test_a_change_between_two_sampled_frames_and_at_the_first_frame(clips) -> None:
    # many: 640x360 for frame 0 only, then 1280x720 from frame 1
    first = read_video(clips["many"], 3, sampling="first")
    assert first.frame_sizes == [(640, 360), (1280, 720), (1280, 720)]
    assert first.size_changes == [(0, (640, 360)), (1, (1280, 720))]
    uniform = read_video(clips["many"], 4, sampling="uniform")
    assert uniform.indices == [0, 17, 33, 50]
    assert uniform.frame_sizes == [(640, 360), (360, 640), (426, 240), (1920, 1080)]


def test_opencv_fallback_reads_a_size_change_without_failing(clips) -> None:
    clip = read_video(clips["down"], 6, sampling="uniform", backend="opencv")
    assert len(clip.frames) == 6  # OpenCV scales every frame to the first one's size


# ------------------------------------------------------------------ detection


@pytest.fixture(scope="module")
def detector():
    pytest.importorskip("onnxruntime")
    if not (MODELS / "det_500m.onnx").is_file():
        pytest.skip(f"no detector model in {MODELS}")
    from preprocess.scrfd import SCRFDDetector

    return SCRFDDetector.from_file(MODELS / "det_500m.onnx", batch_size=4)


def _inside(box, frame) -> bool:
    """The box is in the frame's own pixels (SCRFD's boxes may pass an edge a little)."""
    h, w = frame.shape[:2]
    x1, y1, x2, y2 = box
    mx, my = 0.1 * (x2 - x1), 0.1 * (y2 - y1)
    return -mx <= x1 < x2 <= w + mx and -my <= y1 < y2 <= h + my


@pytest.mark.parametrize("name", ["down", "many"])
def test_detector_input_is_chosen_per_frame_size(clips, detector, name) -> None:
    clip = read_video(clips[name], 12, sampling="uniform")
    faces = detector.detect(clip.frames)
    choice = choose_detector_input(detector, clip.frames, faces, frame_indices=clip.indices)
    sizes = list(dict.fromkeys(clip.frame_sizes))
    assert [p.frame_size for p in choice.parts] == sizes
    assert sum(p.frames for p in choice.parts) == len(clip.frames)
    record = choice.to_record()
    assert [e["frame_size"] for e in record["frame_sizes"]] == [list(s) for s in sizes]
    assert "changes size" in record["reason"]
    # each frame's faces, in its own pixels
    found = detect_with_input(detector, clip.frames, choice, default_faces=faces)
    for frame, frame_faces in zip(clip.frames, found):
        for face in frame_faces:
            assert _inside(face.box, frame)
    # a video of one size: the choice has no parts and its record is as it always was
    one = read_video(SOURCE, 6, sampling="uniform")
    single = choose_detector_input(detector, one.frames, detector.detect(one.frames))
    assert single.parts == () and "frame_sizes" not in single.to_record()


def test_the_man_is_one_track_across_the_size_change(clips, detector) -> None:
    for n in (8, 20):
        clip = read_video(clips["down"], n, sampling="uniform")
        faces = detector.detect(clip.frames)
        shapes = [f.shape for f in clip.frames]
        tracks = track_faces(list(zip(clip.indices, faces)), frame_sizes=shapes)
        main = max(tracks, key=lambda t: t.frames)
        assert main.frames == n, [t.frames for t in tracks]
        for idx, face in zip(main.frame_indices, main.faces):  # boxes in each frame's pixels
            assert _inside(face.box, clip.frames[clip.indices.index(idx)])
        # without the frame sizes the halved boxes look like another person
        blind = track_faces(list(zip(clip.indices, faces)))
        assert max(t.frames for t in blind) < n


# ------------------------------------------------------------------ tracking, synthetic


def _face(box) -> Face:
    x1, y1, x2, y2 = box
    return Face(box=(x1, y1, x2, y2), score=0.9, kps=((x1, y1), (x2, y2)))


def _in_frame(screen_box, size, ref=(1280, 720)):
    """A box given on screen (the first frame's 1280x720) in the pixels of a frame of ``size``
    (width, height) fitted into that screen, centred, aspect kept."""
    w, h = size
    k = min(ref[0] / w, ref[1] / h)
    dx, dy = (ref[0] - w * k) / 2, (ref[1] - h * k) / 2
    x1, y1, x2, y2 = screen_box
    return ((x1 - dx) / k, (y1 - dy) / k, (x2 - dx) / k, (y2 - dy) / k)


SIZES = [(1280, 720), (640, 360), (1920, 1080), (960, 720), (480, 640), (854, 480), (1280, 720)]


def test_tracking_normalises_each_frame_to_the_screen() -> None:
    # two people keep their places on screen while the frame changes size (up, down, aspect)
    left, right = (450, 200, 560, 350), (700, 210, 800, 350)  # inside every frame's picture
    dets, shapes = [], []
    for k, (w, h) in enumerate(SIZES * 2):
        shift = 4 * k
        boxes = [
            _in_frame((left[0] + shift, left[1], left[2] + shift, left[3]), (w, h)),
            _in_frame((right[0] - shift, right[1], right[2] - shift, right[3]), (w, h)),
        ]
        dets.append((3 * k, [_face(b) for b in boxes]))
        shapes.append((h, w, 3))
    tracks = track_faces(dets, frame_sizes=shapes)
    assert [t.frames for t in tracks] == [len(dets), len(dets)]
    # faces stay in their frame's own pixels
    assert tracks[0].faces[1].box == dets[1][1][0].box
    # without sizes the same detections fall apart
    assert len(track_faces(dets)) > 2


def test_tracking_one_size_is_unchanged_by_frame_sizes() -> None:
    dets = [(i, [_face((100 + 3 * i, 50, 180 + 3 * i, 150))]) for i in range(10)]
    with_sizes = track_faces(dets, frame_sizes=[(480, 854)] * 10)
    assert with_sizes == track_faces(dets)


def test_tracking_rejects_bad_frame_sizes() -> None:
    from core.errors import InvalidInputError

    dets = [(0, [_face((1, 1, 5, 5))]), (1, [])]
    with pytest.raises(InvalidInputError, match="frame sizes"):
        track_faces(dets, frame_sizes=[(10, 10)])
    with pytest.raises(InvalidInputError, match="positive"):
        track_faces(dets, frame_sizes=[(10, 10), (0, 10)])


def test_fill_between_detections_interpolates_on_screen() -> None:
    # detected at 0 (1280x720) and 4 (640x360, the same place on screen); frames 1-3 are
    # 1920x1080, 640x360 and 1280x720: each gets the face where it is on screen, in its pixels
    screen = (400, 200, 520, 360)
    sizes = [(1280, 720), (1920, 1080), (640, 360), (1280, 720), (640, 360)]
    a, b = _face(_in_frame(screen, sizes[0])), _face(_in_frame(screen, sizes[4]))
    shapes = [(h, w, 3) for w, h in sizes]
    tracks = track_faces([(0, [a]), (4, [b])], frame_sizes=[shapes[0], shapes[4]])
    assert len(tracks) == 1
    filled = fill_between_detections(tracks, [0, 1, 2, 3, 4], frame_sizes=shapes)
    for k, faces in enumerate(filled):
        (face,) = faces
        assert np.allclose(face.box, _in_frame(screen, sizes[k]), atol=1e-6), k
    # a portrait frame in between, where the interpolated face is off the picture: no face
    portrait = [(1280, 720), (360, 640), (1280, 720)]
    left = (10, 300, 110, 420)
    t2 = track_faces(
        [(0, [_face(left)]), (2, [_face(left)])], frame_sizes=[(720, 1280), (720, 1280)]
    )
    filled = fill_between_detections(t2, [0, 1, 2], frame_sizes=[(h, w) for w, h in portrait])
    assert [len(f) for f in filled] == [1, 0, 1]
