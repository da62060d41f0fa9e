"""Faces as tracks through the engine (issue 14): every face at any size, one person per
sequence, who is scored (--faces main|all|per-frame), and what the record says was scored.

The videos are made in the tests from the shared clips (tests/preprocess/_face_videos.py), at
the issue's sizes and others. The tiny model is enough: these tests are about which crops the
classifier sees, not about its weights.
"""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

from engine.api import Engine
from tests.preprocess import _face_videos as fv

pytestmark = pytest.mark.slow


def _engine(model, models_dir, **options):
    return Engine.load(model, backend="ort", models_dir=models_dir, download=False, **options)


@pytest.fixture(scope="module")
def videos(shared_dir, tmp_path_factory):
    d = tmp_path_factory.mktemp("faces")
    return {
        "closeup": fv.closeup(d / "closeup.mp4", shared_dir, frames=8),
        "closeup_720": fv.closeup(
            d / "closeup720.mp4", shared_dir, frames=6, side=720, face_fraction=0.95
        ),
        "small_4k": fv.small_face(d / "small4k.mp4", shared_dir, frames=3, scale=0.6),
        "smaller_4k": fv.small_face(
            d / "smaller4k.mp4", shared_dir, frames=3, scale=0.45, at=(400, 1500)
        ),
        "side_by_side": fv.side_by_side(d / "sbs.mp4", shared_dir, seconds=1.0),
        "two_people": fv.two_people(d / "two.mp4", shared_dir, seconds=0.75),
        "bars": fv.bars_intro(d / "bars.mp4", shared_dir, bars_seconds=1.0, seconds=0.5),
    }


@pytest.mark.parametrize("name", ["closeup", "closeup_720", "small_4k", "smaller_4k"])
def test_faces_of_any_size_are_found(name, videos, tiny_model, models_dir):
    n = {"closeup": 8, "closeup_720": 6}.get(name, 3)
    pred = _engine(tiny_model, models_dir).predict(videos[name], seq_len=n)
    assert pred.ok and pred.frames == n
    assert pred.faces >= 0.95 * n, pred.detector_input
    assert pred.face_coverage >= 0.95 and pred.people == 1
    assert pred.detector_input["default"] is False and pred.detector_input["reason"]
    assert not any("classified whole" in w or "no face" in w for w in pred.warnings)


def test_size_probe_can_be_turned_off(videos, tiny_model, models_dir):
    """Without the probe, the default input misses the close-up, and the record says so."""
    pred = _engine(tiny_model, models_dir, size_probe=False).predict(videos["closeup"], seq_len=4)
    assert pred.faces == 0 and pred.face_coverage == 0 and pred.detector_input is None
    assert any("not of a face" in w for w in pred.warnings)


def _side(box, width=1280):
    return "left" if (box[0] + box[2]) / 2 < width / 2 else "right"


def test_main_follows_one_person_and_says_another_was_not_scored(videos, tiny_model, models_dir):
    pred = _engine(tiny_model, models_dir).predict(videos["side_by_side"], seq_len=24)
    assert pred.people == 2 and pred.faces_mode == "main"
    assert len({_side(b) for b in pred.boxes}) == 1  # never jumps between the two people
    assert pred.faces >= 22 and len(pred.tracks) == 1
    assert any("1 other person in the video was not scored" in w for w in pred.warnings)


def test_all_scores_each_person_on_their_own(videos, tiny_model, models_dir):
    pred = _engine(tiny_model, models_dir, faces="all").predict(videos["side_by_side"], seq_len=24)
    assert pred.people == 2 and len(pred.tracks) == 2
    for track in pred.tracks:
        assert track["frames"] >= 0.9 * 24 and track["face_coverage"] == 1.0
        assert len({_side(b) for b in track["boxes"]}) == 1
    assert {_side(t["boxes"][0]) for t in pred.tracks} == {"left", "right"}
    assert pred.p_fake == max(t["p_fake"] for t in pred.tracks)  # the most-fake person decides
    assert not any("not scored" in w for w in pred.warnings)


def test_two_different_people_are_both_scored_with_all(videos, tiny_model, models_dir):
    main = _engine(tiny_model, models_dir).predict(videos["two_people"], seq_len=18)
    every = _engine(tiny_model, models_dir, faces="all").predict(videos["two_people"], seq_len=18)
    assert main.people == every.people == 2 and len(every.tracks) == 2
    assert every.tracks[0]["p_fake"] != every.tracks[1]["p_fake"]


def test_per_frame_reproduces_the_original_rule_and_warns(videos, tiny_model, models_dir):
    pred = _engine(tiny_model, models_dir, faces="per-frame").predict(
        videos["side_by_side"], seq_len=24
    )
    sides = [_side(b) for b in pred.boxes]
    switches = sum(a != b for a, b in itertools.pairwise(sides))
    assert switches >= 3  # the highest-scoring face flips between the two men
    assert pred.tracks == [] and pred.people == 2
    assert any("may switch" in w for w in pred.warnings)


def test_faceless_opening_gives_zero_coverage_and_a_warning(videos, tiny_model, models_dir):
    pred = _engine(tiny_model, models_dir).predict(videos["bars"], seq_len=20)
    assert pred.ok and pred.faces == 0 and pred.face_coverage == 0.0 and pred.people == 0
    assert any("no face was found in any of the 20 frames" in w for w in pred.warnings)
    spread = _engine(tiny_model, models_dir).predict(videos["bars"], seq_len=12, sampling="uniform")
    assert 0 < spread.face_coverage < 1 and any("classified whole" in w for w in spread.warnings)


def test_main_equals_per_frame_on_single_face_clips(video_paths, tiny_model, models_dir):
    """On videos with one face, the track gives exactly today's crops and answer."""
    main = _engine(tiny_model, models_dir)
    per_frame = _engine(tiny_model, models_dir, faces="per-frame")
    for path in video_paths:
        a, b = main.predict(path, seq_len=20), per_frame.predict(path, seq_len=20)
        assert a.p_fake == b.p_fake and a.boxes == b.boxes, path.name
        assert a.people == 1 and a.face_coverage == 1.0 and a.detector_input["default"]


@pytest.mark.parametrize("n", [3, 5, 7])
def test_uniform_sampling_keeps_a_walking_person_one_track(video_paths, tiny_model, models_dir, n):
    """Sparse ``uniform`` samples (tens of frames apart) of a person walking across the 480p
    clips: one person, a face in every frame, no warning, the per-frame rule's answer."""
    main = _engine(tiny_model, models_dir)
    per_frame = _engine(tiny_model, models_dir, faces="per-frame")
    for path in [p for p in video_paths if p.name.startswith("pair480p")]:
        a = main.predict(path, seq_len=n, sampling="uniform")
        b = per_frame.predict(path, seq_len=n, sampling="uniform")
        assert a.people == 1 and a.faces == a.frames == n, (path.name, a.people, a.faces)
        assert a.warnings == [] and a.p_fake == b.p_fake and a.boxes == b.boxes, path.name


def test_fixed_input_detector_letterboxes_to_its_square_and_says_no_choice(
    video_paths, tiny_model, models_dir, shared_dir
):
    """A SCRFD graph exported with a fixed 640x640 input runs at that square (the frame-shaped
    default needs a free input size), on 1080p and 480p clips; records say the per-video input
    choice did not run, and name the fix."""
    fixed = shared_dir / "models" / "scrfd_500m_kps_640x640.onnx"
    if not fixed.is_file():
        pytest.skip(f"{fixed} not present")
    engine = _engine(tiny_model, models_dir, detector=str(fixed))
    square = _engine(tiny_model, models_dir, detector_input_shape="square", size_probe=False)
    for path in [p for p in video_paths if p.name in ("dfdc_like_fake.mp4", "pair480p_real.mp4")]:
        got, ref = engine.predict(path, seq_len=4), square.predict(path, seq_len=4)
        assert got.ok and got.faces == 4 and got.detector_input is None, (path.name, got.error)
        assert any("free input size" in w for w in got.warnings), got.warnings
        assert np.allclose(np.array(got.boxes), np.array(ref.boxes), atol=2), path.name


def _iou(a, b):
    x1, y1 = max(a[0], b[0]), max(a[1], b[1])
    x2, y2 = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0, x2 - x1) * max(0, y2 - y1)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union


def test_fast_mode_detects_every_kth_frame_and_follows_the_track(video_paths, tiny_model,
                                                                 models_dir):  # fmt: skip
    exact = _engine(tiny_model, models_dir)
    fast = _engine(tiny_model, models_dir, detect_every=4)
    ious = []
    for path in video_paths[:3]:
        a, b = exact.predict(path, seq_len=20), fast.predict(path, seq_len=20)
        assert b.detect_every == 4 and any("fast mode" in w for w in b.warnings)
        assert b.faces == 20 and b.frame_indices == a.frame_indices
        ious += [_iou(x, y) for x, y in zip(a.boxes, b.boxes)]
        assert a.boxes[0] == b.boxes[0] and a.boxes[-1] == b.boxes[-1]  # detected frames
    assert min(ious) > 0.8 and sum(ious) / len(ious) > 0.93


@pytest.mark.parametrize("name", ["closeup", "small_4k"])
def test_detect_and_preprocess_find_the_faces_predict_finds(name, videos, models_dir, tmp_path):
    """``dfe detect`` and ``dfe preprocess`` choose the detector input per video as ``dfe
    predict`` does (the close-up and the small face in 4K are missed at the default input);
    ``--no-size-probe`` turns it off."""
    from engine.cli import main

    common = ["--models", models_dir, "--no-download"]
    out = tmp_path / "det.json"
    assert main(["detect", str(videos[name]), "--frames", "2", "--json", str(out), *common]) == 0
    found = json.loads(out.read_text())
    assert all(f["faces"] for f in found["frames"]) and not found["detector_input"]["default"]
    args = ["detect", str(videos[name]), "--frames", "2", "--json", str(out), "--no-size-probe"]
    assert main([*args, *common]) == 0
    assert json.loads(out.read_text())["detector_input"] is None
    assert main(["preprocess", str(videos[name]), "-o", str(tmp_path / "clips"), "--frames",
                 "2", "--no-face", "skip", *common]) == 0  # fmt: skip
    assert (tmp_path / "clips" / f"{videos[name].stem}.mp4").is_file()  # a face in each frame


def test_preprocess_keeps_clips_of_videos_that_share_a_name(shared_dir, models_dir, tmp_path):
    """FaceForensics++ keeps Deepfakes/000_003.mp4 and Face2Face/000_003.mp4: both clips are
    written, under their folders, none skipped."""
    import shutil

    from engine.cli import main

    src = tmp_path / "ff"
    for sub, clip in (("Deepfakes", "pair480p_fake.mp4"), ("Face2Face", "pair480p_real.mp4")):
        (src / sub).mkdir(parents=True)
        shutil.copy(shared_dir / "videos" / clip, src / sub / "000_003.mp4")
    out = tmp_path / "clips"
    assert main(["preprocess", str(src), "-o", str(out), "--frames", "2", "--models", models_dir,
                 "--no-download"]) == 0  # fmt: skip
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.mp4"))
    assert written == ["Deepfakes/000_003.mp4", "Face2Face/000_003.mp4"]
