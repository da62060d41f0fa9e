"""Every scoring command loads the classifier and the detector before the first video: a
missing model is one clear error with exit code 2, not an error record per video."""

from __future__ import annotations

import pytest

from engine.cli import main


@pytest.fixture
def inputs(tmp_path):
    d = tmp_path / "videos"
    d.mkdir()
    for i in range(3):
        (d / f"{i}.mp4").write_bytes(b"never read")
    (tmp_path / "labels.csv").write_text("".join(f"{i}.mp4,REAL\n" for i in range(3)))
    return d


@pytest.mark.parametrize("command", ["predict", "score", "eval", "explain"])
def test_missing_detector_is_one_error_before_any_video(command, inputs, tiny_model, tmp_path,
                                                        capsys):  # fmt: skip
    common = ["--model", str(tiny_model), "--models", str(tmp_path / "nowhere"), "--no-download"]
    argv = {
        "predict": ["predict", str(inputs), "--out", str(tmp_path / "r.jsonl"), "--no-progress"],
        "score": ["score", str(inputs), "--out", str(tmp_path / "r.jsonl")],
        "eval": ["eval", str(tmp_path / "labels.csv"), "-o", str(tmp_path / "eval"), "--root",
                 str(inputs)],
        "explain": ["explain", str(inputs / "0.mp4"), "-o", str(tmp_path / "x")],
    }[command]  # fmt: skip
    assert main([*argv, *common]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert err.startswith("error: ") and "det_500m.onnx" in err
    assert not (tmp_path / "r.jsonl").exists() and not (tmp_path / "eval").exists()
