"""The face policy (face rule, crop style, margin, no-face rule), ``dfe detect``'s records and
``dfe preprocess``'s clips."""

from __future__ import annotations

import json

import pytest

from core.errors import InvalidInputError
from preprocess.crop import crop_box
from preprocess.dlib_map import dlib_box
from preprocess.face_clips import detect_video, write_face_clip
from preprocess.faces import FacePolicy, clip_policy
from preprocess.scrfd import Face, SCRFDDetector

VIDEO = "pair480p_real.mp4"
SHAPE = (100, 200, 3)


def _face(x1, y1, x2, y2, score=0.9):
    return Face(box=(x1, y1, x2, y2), score=score)


@pytest.fixture(scope="module")
def detector(shared_dir):
    return SCRFDDetector.from_file(shared_dir / "models" / "det_500m.onnx")


def test_policy_face_rule_picks_highest_score_or_largest():
    small_high, big_low = _face(0, 0, 10, 10, 0.99), _face(50, 50, 90, 95, 0.6)
    faces = [small_high, big_low]  # sorted by score, as the detector returns them
    assert FacePolicy().choose(faces) is small_high
    assert FacePolicy(face="largest").choose(faces) is big_low
    assert FacePolicy().choose([]) is None


def test_policy_no_face_rules():
    f = _face(10.4, 20.6, 60.0, 80.0)
    faces = [[f], [], [f], []]
    shapes = [SHAPE] * 4
    whole = FacePolicy().select(shapes, faces)
    assert whole.positions == [0, 1, 2, 3] and whole.boxes[1] is None and whole.found == 2
    drop = FacePolicy(no_face="drop").select(shapes, faces)
    assert drop.positions == [0, 2] and drop.dropped == 2
    prev = FacePolicy(no_face="previous").select([SHAPE] * 5, [[], *faces])
    # before the first face: dropped; after: the previous face's box, counted as reused
    assert prev.positions == [1, 2, 3, 4] and prev.reused == 2 and prev.dropped == 1
    assert prev.boxes[1] == prev.boxes[0] == crop_box(f.box, SHAPE)
    assert prev.faces[1] is None  # a reused box is not a face found in that frame


def test_policy_chosen_faces_override_the_face_rule():
    a, b = _face(0, 0, 20, 20, 0.9), _face(100, 10, 150, 70, 0.8)
    sel = FacePolicy().select([SHAPE, SHAPE], [[a, b], [a, b]], chosen=[b, None])
    assert sel.faces == [b, None] and sel.boxes[0] == (100, 10, 150, 70) and sel.found == 1


def test_policy_margin_and_crop_style_make_the_box():
    f = Face(
        box=(40.0, 30.0, 80.0, 90.0),
        score=0.9,
        kps=((52.0, 52.0), (68.0, 52.0), (60.0, 62.0), (54.0, 74.0), (66.0, 74.0)),
    )
    assert FacePolicy().box(f, SHAPE) == (40, 30, 80, 90)
    assert FacePolicy(margin=0.25).box(f, SHAPE) == (30, 15, 90, 100)  # clipped at the bottom
    assert FacePolicy(crop_style="dlib").box(f, SHAPE) == crop_box(dlib_box(f), SHAPE)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"face": "center"}, "face='center'"),
        ({"crop_style": "hog"}, "supported values are scrfd, dlib"),
        ({"no_face": "skip"}, "no_face='skip'"),
        ({"margin": -0.1}, "margin"),
        ({"margin": float("nan")}, "from 0 to 10"),  # dfe preprocess --margin nan: a traceback
        ({"margin": float("inf")}, "from 0 to 10"),
        ({"margin": 1e308}, "from 0 to 10"),  # finite, but the box times it is not
        ({"margin": 10.5}, "from 0 to 10"),  # dfe predict's limit too
    ],
)
def test_policy_rejects_bad_values(kwargs, match):
    with pytest.raises(InvalidInputError, match=match):
        FacePolicy(**kwargs)


def test_clip_policy_maps_preprocess_names():
    assert clip_policy("skip").no_face == "drop"
    assert clip_policy("previous", crop_style="dlib").crop_style == "dlib"
    with pytest.raises(InvalidInputError, match="previous, skip, full_frame"):
        clip_policy("drop")


def test_detect_gives_the_crop_box_of_each_crop_style(shared_dir, detector):
    video = shared_dir / "videos" / VIDEO
    plain = detect_video(video, detector, frames=2)
    mapped = detect_video(video, detector, frames=2, policy=FacePolicy(crop_style="dlib"))
    assert (plain["crop_style"], mapped["crop_style"]) == ("scrfd", "dlib")
    shape = (mapped["height"], mapped["width"])
    for fp, fm in zip(plain["frames"], mapped["frames"]):
        assert fp["faces"] and len(fp["faces"]) == len(fm["faces"])
        for p, m in zip(fp["faces"], fm["faces"]):
            assert m["box"] == p["box"] and list(m)[:2] == list(p)[:2] == ["box", "crop_box"]
            face = Face(box=tuple(m["box"]), score=m["score"], kps=tuple(map(tuple, m["kps"])))
            # scrfd: the detector's box rounded then clipped (up to the recorded 0.01 px)
            assert all(abs(a - b) <= 1 for a, b in zip(p["crop_box"], crop_box(face.box, shape)))
            assert p["crop_box"] != m["crop_box"]
            x1, y1, x2, y2 = m["crop_box"]
            assert abs((x2 - x1) - (y2 - y1)) <= 1
            # equal up to the 0.01 px rounding of the recorded box and keypoints
            expected = crop_box(dlib_box(face), shape)
            assert all(abs(a - b) <= 1 for a, b in zip(m["crop_box"], expected))


def test_preprocess_clip_crop_style_dlib(shared_dir, detector, tmp_path):
    import av

    rep = write_face_clip(
        shared_dir / "videos" / VIDEO,
        tmp_path / "a.mp4",
        detector,
        frames=3,
        policy=FacePolicy(crop_style="dlib", no_face="previous"),
    )
    assert rep.crop_style == "dlib" and rep.frames_written == 3 and rep.faces == 3
    with av.open(str(tmp_path / "a.mp4")) as c:
        frames = [f.to_ndarray(format="bgr24") for f in c.decode(video=0)]
    assert len(frames) == 3 and frames[0].shape == (112, 112, 3)


def test_preprocess_clip_without_any_face_is_an_error(tmp_path):
    class NoFaces:
        def detect(self, frames):
            return [[] for _ in frames]

    from tests.preprocess._synth import encode_video

    video = encode_video(tmp_path / "v.mp4", codec="h264", frames=4)
    with pytest.raises(Exception, match="no face found"):
        write_face_clip(video, tmp_path / "out.mp4", NoFaces(), frames=4)
    rep = write_face_clip(
        video, tmp_path / "out.mp4", NoFaces(), frames=4, policy=clip_policy("full_frame")
    )
    assert rep.frames_written == 4 and rep.faces == 0


def test_dfe_detect_crop_box_takes_the_margin(shared_dir, tmp_path, models_dir):
    """``dfe detect --margin``: each face's crop_box is the policy's box with that margin."""
    from engine.cli import main

    out = tmp_path / "faces.json"
    args = ["detect", str(shared_dir / "videos" / VIDEO), "--frames", "2", "--json", str(out),
            "--models", models_dir, "--no-download"]  # fmt: skip
    assert main([*args, "--margin", "0.2"]) == 0
    result = json.loads(out.read_text())
    assert (result["crop_style"], result["margin"]) == ("scrfd", 0.2)
    shape = (result["height"], result["width"])
    policy = FacePolicy(margin=0.2)
    faces = [f for frame in result["frames"] for f in frame["faces"]]
    assert faces
    for rec in faces:
        face = Face(box=tuple(rec["box"]), score=rec["score"], kps=None)
        assert all(abs(a - b) <= 1 for a, b in zip(rec["crop_box"], policy.box(face, shape)))
        assert rec["crop_box"] != list(FacePolicy().box(face, shape))
    for bad in ("nan", "1e308", "11"):  # refused as dfe predict refuses them
        assert main([*args, "--margin", bad]) != 0


def test_dfe_detect_json_dash_is_standard_output(
    shared_dir, tmp_path, models_dir, monkeypatch, capsys
):
    from engine.cli import main

    monkeypatch.chdir(tmp_path)
    args = ["detect", str(shared_dir / "videos" / VIDEO), "--frames", "1", "--json", "-",
            "--models", models_dir, "--no-download"]  # fmt: skip
    assert main(args) == 0
    assert json.loads(capsys.readouterr().out)["frames"][0]["faces"]
    assert not (tmp_path / "-").exists()  # not a file named "-"
