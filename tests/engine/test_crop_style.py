"""Crop styles (``scrfd`` | ``dlib``) across export, the API, ``dfe predict``, ``detect`` and
``preprocess``; ``dlib`` never needs dlib itself."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from types import SimpleNamespace

import pytest

from engine.api import Engine, EngineConfig
from engine.errors import InvalidInputError
from engine.sidecar import load_sidecar
from preprocess.crop import crop_box
from preprocess.dlib_map import dlib_box
from preprocess.scrfd import Face

VIDEO = "pair480p_real.mp4"


def test_default_crop_style_is_dlib_only_for_published_original_checkpoints():
    from export.onnx_export import default_crop_style

    named = object()  # parse_checkpoint_name's result: any non-None value
    ckpt = SimpleNamespace(variant="original", lstm_bias=False, name=named)
    assert default_crop_style(ckpt) == "dlib"
    assert default_crop_style(SimpleNamespace(**{**vars(ckpt), "name": None})) == "scrfd"
    assert default_crop_style(SimpleNamespace(**{**vars(ckpt), "lstm_bias": True})) == "scrfd"
    seq = SimpleNamespace(variant="sequence", lstm_bias=True, name=named)
    assert default_crop_style(seq) == "scrfd"


def test_export_records_crop_style_in_sidecar(exported_model):
    # the test checkpoint is named like a published one: model_87_acc_20_frames_final_data.pt
    spec = load_sidecar(exported_model)
    assert spec.crop_style == "dlib"
    assert spec.raw["preprocessing"]["crop_style_source"] == "from the checkpoint"


def test_engine_uses_sidecar_crop_style_unless_given(exported_model, shared_dir):
    models = str(shared_dir / "models")
    video = shared_dir / "videos" / VIDEO
    by_default = Engine.load(exported_model, backend="ort", models_dir=models)
    pinned = Engine.load(exported_model, backend="ort", models_dir=models, crop_style="scrfd")
    d = by_default.predict(video, seq_len=4)
    s = pinned.predict(video, seq_len=4)
    assert (d.crop_style, s.crop_style) == ("dlib", "scrfd")
    assert d.to_record()["crop_style"] == "dlib"
    assert d.faces == s.faces == 4
    for bd, bs in zip(d.boxes, s.boxes):
        assert abs((bd[2] - bd[0]) - (bd[3] - bd[1])) <= 1  # square, up to rounding
        assert (bs[3] - bs[1]) > (bs[2] - bs[0])  # SCRFD's boxes are taller than wide
    assert d.p_fake != s.p_fake
    frames = [f[y1:y2, x1:x2] for f, (x1, y1, x2, y2) in zip(_frames(video, 4), d.boxes)]
    assert by_default.predict(frames, crops=True).crop_style is None  # the caller's crops


def _frames(video, n):
    from preprocess.video import read_video

    return read_video(video, n).frames


def test_engine_config_rejects_unknown_crop_style():
    with pytest.raises(InvalidInputError, match="supported values are scrfd, dlib"):
        EngineConfig(crop_style="hog")


def test_predict_cli_crop_style_dlib_runs_without_dlib(exported_model, shared_dir, tmp_path):
    out = tmp_path / "records.jsonl"
    script = textwrap.dedent(
        f"""
        import sys
        sys.modules["dlib"] = None  # import dlib raises ImportError
        sys.modules["face_recognition"] = None
        sys.modules["face_recognition_models"] = None
        from engine.cli import main
        code = main([
            "predict", {str(shared_dir / "videos" / VIDEO)!r}, "--model", {str(exported_model)!r},
            "--seq-len", "4", "--crop-style", "dlib", "--backend", "ort",
            "--models", {str(shared_dir / "models")!r}, "--no-download", "--no-progress",
            "--out", {str(out)!r},
        ])
        assert sys.modules["dlib"] is None
        sys.exit(code)
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    (rec,) = map(json.loads, out.read_text().splitlines())
    assert rec["status"] == "ok" and rec["crop_style"] == "dlib" and rec["faces"] == 4


def test_detect_crop_style_dlib_adds_crop_box(shared_dir):
    from preprocess.faces import detect_video
    from preprocess.scrfd import SCRFDDetector

    det = SCRFDDetector(shared_dir / "models" / "det_500m.onnx")
    video = shared_dir / "videos" / VIDEO
    plain = detect_video(video, det, frames=2)
    mapped = detect_video(video, det, frames=2, crop_style="dlib")
    assert (plain["crop_style"], mapped["crop_style"]) == ("scrfd", "dlib")
    shape = (mapped["height"], mapped["width"])
    for fp, fm in zip(plain["frames"], mapped["frames"]):
        assert fp["faces"] and len(fp["faces"]) == len(fm["faces"])
        for p, m in zip(fp["faces"], fm["faces"]):
            assert "crop_box" not in p
            assert m["box"] == p["box"] and list(m)[:2] == ["box", "crop_box"]
            face = Face(box=tuple(m["box"]), score=m["score"], kps=tuple(map(tuple, m["kps"])))
            x1, y1, x2, y2 = m["crop_box"]
            assert abs((x2 - x1) - (y2 - y1)) <= 1
            # equal up to the 0.01 px rounding of the recorded box and keypoints
            expected = crop_box(dlib_box(face), shape)
            assert all(abs(a - b) <= 1 for a, b in zip(m["crop_box"], expected))


def test_preprocess_clip_crop_style_dlib(shared_dir, tmp_path):
    from preprocess.faces import write_face_clip
    from preprocess.scrfd import SCRFDDetector

    det = SCRFDDetector(shared_dir / "models" / "det_500m.onnx")
    rep = write_face_clip(
        shared_dir / "videos" / VIDEO, tmp_path / "a.mp4", det, frames=3, crop_style="dlib"
    )
    assert rep.crop_style == "dlib" and rep.frames_written == 3
    with pytest.raises(InvalidInputError, match="crop_style"):
        write_face_clip(
            shared_dir / "videos" / VIDEO, tmp_path / "b.mp4", det, frames=3, crop_style="x"
        )
