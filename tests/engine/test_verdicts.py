"""Verdicts that abstain, are calibrated and say why (issue 30): the rule, temperature scaling
against a direct computation, the operating point, quality measures, inputs the model cannot
judge, and the calibration's round trip through every scoring path."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from core.verdict import (
    DEFAULT_FAKE_AT,
    DEFAULT_REAL_BELOW,
    Calibration,
    Verdict,
    calibrated_p_fake,
    combine,
    decide,
    logit_margin,
)

# ------------------------------------------------------------------ the rule


def test_decide_follows_the_documented_order():
    cal = Calibration(fake_at=0.7, real_below=0.3, calibrated=True)
    assert decide(0.9, found=0, calibration=cal) == Verdict("NO_FACE", ("NO_FACE_DETECTED",))
    assert decide(0.9, found=5, calibration=cal) == Verdict("FAKE")
    assert decide(0.1, found=5, calibration=cal) == Verdict("REAL")
    assert decide(0.7, found=5, calibration=cal).verdict == "FAKE"  # fake_at is inclusive
    assert decide(0.3, found=5, calibration=cal).reasons == ("SCORE_IN_UNCERTAIN_BAND",)
    poor = decide(0.95, found=5, calibration=cal, quality_reasons=["GRAYSCALE_SOURCE"])
    assert poor == Verdict("UNCERTAIN", ("GRAYSCALE_SOURCE",))
    demo = decide(0.5, found=5, calibration=cal, untrained=True)
    assert demo.reasons == ("UNTRAINED_MODEL", "SCORE_IN_UNCERTAIN_BAND")
    default = Calibration()
    assert (default.real_below, default.fake_at) == (DEFAULT_REAL_BELOW, DEFAULT_FAKE_AT)
    assert decide(0.55, found=3, calibration=default).verdict == "UNCERTAIN"


def test_a_video_is_fake_if_anyone_is():
    people = [Verdict("REAL"), Verdict("UNCERTAIN", ("FACE_TOO_SMALL",)), Verdict("FAKE")]
    assert combine(people) == 2
    assert combine(people[:2]) == 1
    assert combine([Verdict("NO_FACE", ("NO_FACE_DETECTED",)), Verdict("REAL")]) == 1


# ------------------------------------------------------------------ calibration


def test_temperature_scaling_matches_a_direct_computation_on_known_logits():
    """calibrated_p_fake is softmax(z / T) computed directly, and fit_temperature finds the
    minimum of the negative log-likelihood a fine grid over T finds."""
    from engine.calibration import fit_temperature

    rng = np.random.default_rng(30)
    logits = rng.normal(0, 3, size=(200, 2))
    is_fake = rng.random(200) < 1 / (1 + np.exp(-(logits[:, 0] - logits[:, 1]) / 3.0))
    for t in (0.5, 1.0, 2.5):
        z = logits / t
        direct = np.exp(z[:, 0]) / np.exp(z).sum(axis=1)  # FAKE is class 0
        margins = [logit_margin(row, 0) for row in logits]
        assert np.allclose(calibrated_p_fake(np.array(margins), t), direct, atol=1e-12)
    margins = logits[:, 0] - logits[:, 1]
    t_fit = fit_temperature(margins, is_fake)
    grid = np.exp(np.linspace(math.log(0.05), math.log(20), 4001))
    nll = [np.mean(np.logaddexp(0, -np.where(is_fake, 1, -1) * margins / t)) for t in grid]
    assert t_fit == pytest.approx(grid[int(np.argmin(nll))], rel=3e-3)
    assert 1.5 < t_fit < 6  # the labels were drawn with T = 3
    assert calibrated_p_fake(1000.0, 1.0) == 1.0 and calibrated_p_fake(-1000.0, 1.0) == 0.0


def test_operating_point_thresholds():
    from engine.calibration import thresholds

    real = [0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.95]
    fake = [0.3, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.9, 0.95, 0.99]
    p, y = real + fake, [False] * 10 + [True] * 10
    real_below, fake_at = thresholds(p, y, max_false_fake=0.1, max_missed_fake=0.1)
    # at most 1 of 10 real at or above fake_at: just above the second highest real score
    assert 0.8 < fake_at < 0.8 + 1e-12
    assert sum(s >= fake_at for s in real) == 1
    # at most 1 of 10 fakes below real_below: the second lowest fake score
    assert real_below == 0.55 and sum(s < real_below for s in fake) == 1
    # classes that separate: one threshold, nothing uncertain
    lo, hi = thresholds([0.1, 0.2, 0.8, 0.9], [False, False, True, True])
    assert lo == hi and 0.2 < lo < 0.8


def test_calibration_section_round_trips(tmp_path):
    from engine.calibration import fit

    rng = np.random.default_rng(1)
    margins = np.concatenate([rng.normal(2, 1, 30), rng.normal(-2, 1, 30)])
    fitted = fit(margins, [True] * 30 + [False] * 30, fitted_on={"labels": "x.csv"})
    assert fitted.calibrated and fitted.real_below <= fitted.fake_at
    m = fitted.metrics
    assert m["ece_after"] <= m["ece_before"] + 1e-9 and m["brier_after"] <= m["brier_before"]
    back = Calibration.from_sidecar(json.loads(json.dumps(fitted.to_sidecar())))
    assert back == fitted


# ------------------------------------------------------------------ quality measures


def test_quality_measures_on_synthetic_crops():
    import cv2

    from preprocess.quality import measure

    rng = np.random.default_rng(0)
    sharp = rng.integers(40, 200, (112, 112, 3), dtype=np.uint8)
    q = measure([sharp] * 4, [[0, 0, 30, 30]] * 3 + [None], interlaced=0.0, bits_per_pixel=0.1)
    assert q.face_px == 30 and q.upscale == pytest.approx(112 / 30)
    assert q.face_frames == 3 and q.face_coverage == 0.75
    assert "FACE_TOO_SMALL" in q.reasons() and q.grayscale is False
    y, x = np.mgrid[0:112, 0:112]
    board = (((x // 14) + (y // 14)) % 2 * 120 + 60).astype(np.uint8)  # sharp gray edges
    blurred = cv2.GaussianBlur(np.dstack([board] * 3), (0, 0), 3)
    q = measure([blurred] * 3, [[0, 0, 200, 200]] * 3, interlaced=1.0, bits_per_pixel=0.01)
    assert q.reasons() == [
        "FACE_TOO_BLURRY",
        "GRAYSCALE_SOURCE",
        "INTERLACED_SOURCE",
        "HEAVY_COMPRESSION",
    ]
    # a dark face is dark, not blurred: sharpness is relative to the face's own contrast
    dark = (sharp.astype(np.float32) * 0.2).astype(np.uint8)
    q = measure([dark] * 3, [[0, 0, 200, 200]] * 3)
    assert q.reasons() == ["FACE_TOO_DARK"] and q.sharpness > 0.5
    # few bits but a sharp face (a static or black background): not heavy compression; a
    # codec that needs fewer bits than H.264 is counted as such
    assert "HEAVY_COMPRESSION" not in measure([sharp] * 2, [[0, 0, 90, 90]] * 2,
                                              bits_per_pixel=0.01).reasons()  # fmt: skip
    soft = measure([blurred] * 2, [[0, 0, 90, 90]] * 2, bits_per_pixel=0.015, codec="hevc")
    assert "HEAVY_COMPRESSION" not in soft.reasons()  # 0.025 as H.264
    none = measure([sharp] * 2, [None, None])
    assert none.face_px is None and none.face_frames == 0 and none.reasons() == []


# ------------------------------------------------------------------ inputs the model cannot judge


def _ffmpeg(*args: str) -> None:
    if not shutil.which("ffmpeg"):
        pytest.skip("needs FFmpeg's command line (apt-get install ffmpeg; make setup does)")
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", *args], check=True, timeout=300)


@pytest.fixture(scope="module")
def variants(tmp_path_factory, shared_dir) -> dict[str, Path]:
    """Variants of the shared clips that the model cannot judge, made with FFmpeg."""
    d = tmp_path_factory.mktemp("variants")
    s = str(shared_dir / "videos" / "pair480p_real.mp4")
    wide = str(shared_dir / "videos" / "dfdc_like_real.mp4")
    made = {
        "gray": ["-i", s, "-t", "1", "-vf", "format=gray,format=yuv420p"],
        # tinted monochrome: the usual sepia matrix, and gray under a blue (cyanotype) tint
        "sepia": ["-i", s, "-t", "1", "-vf",
                  "colorchannelmixer=.393:.769:.189:0:.349:.686:.168:0:.272:.534:.131"],
        "cyanotype": ["-i", wide, "-t", "1", "-vf",
                      "hue=s=0,colorchannelmixer=rr=0.55:gg=0.8:bb=1.0"],
        "crf45": ["-i", s, "-t", "1", "-vf", "scale=-2:240", "-crf", "45"],
        "tiny": ["-i", wide, "-t", "1", "-vf", "scale=-2:144"],
        # colour under a warm white balance: one dominant hue, but not a tint (not GRAYSCALE)
        "warm": ["-i", s, "-t", "1", "-vf", "colortemperature=temperature=3000"],
        # stored sideways, without rotation metadata
        "sideways": ["-i", s, "-t", "1", "-vf", "transpose=clock"],
        "interlaced": ["-i", s, "-t", "1", "-vf",
                       "scale=720:576,fps=50,tinterlace=interleave_top,setfield=tff",
                       "-flags", "+ildct+ilme", "-x264opts", "tff=1"],
        "dark": ["-i", s, "-t", "1", "-vf", "eq=brightness=-0.35"],
        "black": ["-f", "lavfi", "-i", "color=black:size=640x360:rate=25", "-t", "1"],
        "pattern": ["-f", "lavfi", "-i", "testsrc=size=640x360:rate=25", "-t", "1"],
        "fractal": ["-f", "lavfi", "-i", "mandelbrot=size=640x360:rate=25", "-t", "1"],
    }  # fmt: skip
    out = {}
    for name, args in made.items():
        out[name] = d / f"{name}.mp4"
        _ffmpeg(*args, "-an", "-c:v", "libx264", "-pix_fmt", "yuv420p", str(out[name]))
    return out


@pytest.mark.parametrize(
    ("name", "verdict", "reason"),
    [
        ("black", "NO_FACE", "NO_FACE_DETECTED"),
        ("pattern", "NO_FACE", "NO_FACE_DETECTED"),
        ("fractal", "NO_FACE", "NO_FACE_DETECTED"),
        ("gray", "UNCERTAIN", "GRAYSCALE_SOURCE"),
        ("sepia", "UNCERTAIN", "GRAYSCALE_SOURCE"),
        ("cyanotype", "UNCERTAIN", "GRAYSCALE_SOURCE"),
        ("crf45", "UNCERTAIN", "HEAVY_COMPRESSION"),
        ("tiny", "UNCERTAIN", "FACE_TOO_SMALL"),
        ("sideways", "UNCERTAIN", "FACE_ROTATED"),
        ("interlaced", "UNCERTAIN", "INTERLACED_SOURCE"),
        ("dark", "UNCERTAIN", "FACE_TOO_DARK"),
    ],
)
def test_inputs_the_model_cannot_judge_abstain_with_the_reason(
    tiny_engine, variants, name, verdict, reason
):
    pred = tiny_engine.predict(str(variants[name]), seq_len=6)
    assert pred.ok and pred.verdict == verdict and reason in pred.reasons, (
        pred.verdict,
        pred.reasons,
    )
    if verdict == "NO_FACE":
        assert pred.faces == 0 and pred.quality["face_frames"] == 0
    else:  # the reason is also a warning in words
        assert any(w.startswith(f"{reason}: ") for w in pred.warnings)


def test_a_warm_white_balance_is_colour(tiny_engine, variants):
    pred = tiny_engine.predict(str(variants["warm"]), seq_len=6)
    q = pred.quality
    assert q["hue_spread"] < 8 and not q["grayscale"], q  # one hue, yet colour
    assert "GRAYSCALE_SOURCE" not in pred.reasons


def test_ordinary_clips_are_judged_on_the_score(tiny_engine, video_paths):
    """The shared 480p clips are within range: their verdict comes from the score band only
    (and their p_fake is the plain softmax, unchanged by calibration)."""
    for path in video_paths:
        pred = tiny_engine.predict(str(path), seq_len=6)
        assert not pred.quality["grayscale"], (path.name, pred.quality)  # colour, every clip
        assert pred.quality["roll"] < 20, (path.name, pred.quality)  # upright heads
        if "pair480p" not in path.name:
            continue
        assert set(pred.reasons) <= {"SCORE_IN_UNCERTAIN_BAND"}, pred.reasons
        assert pred.p_fake_calibrated == pytest.approx(pred.p_fake, abs=1e-9)  # uncalibrated
        assert pred.calibration["status"] == "uncalibrated"


# ------------------------------------------------------------------ calibration round trip


@pytest.fixture(scope="module")
def calibrated(tiny_model, tmp_path_factory, shared_dir, models_dir):
    """A copy of the tiny model calibrated by `dfe calibrate` on the six shared clips."""
    from engine.cli import main
    from tests.engine.test_evaluation import write_shared_labels

    d = tmp_path_factory.mktemp("calibrated")
    model = d / "model"
    shutil.copytree(tiny_model, model)
    labels = d / "labels.csv"
    write_shared_labels(labels)
    argv = [
        "calibrate",
        str(labels),
        "--model",
        str(model),
        "--root",
        str(shared_dir / "videos"),
        "--seq-len",
        "4",
        "--backend",
        "ort",
        "--models",
        models_dir,
        "--no-download",
        "--max-false-fake",
        "0",
        "--max-missed-fake",
        "0",
    ]
    assert main(argv) == 0  # fmt: skip
    return model


def test_calibration_is_written_to_the_sidecar_and_used_everywhere(
    calibrated, shared_dir, models_dir, tmp_path, capsys
):
    from core.sidecar import load_sidecar
    from core.verdict import calibrated_p_fake
    from engine.api import Engine
    from engine.cli import main

    spec = load_sidecar(calibrated)
    cal = spec.calibration
    fitted_on = spec.sidecar.calibration.fitted_on
    assert cal.calibrated and fitted_on["real"] == 2 and fitted_on["fake"] == 4
    assert fitted_on["settings"]["seq_len"] == 4 and fitted_on["date"]
    video = shared_dir / "videos" / "pair480p_fake.mp4"
    # the Python API
    engine = Engine.load(calibrated, backend="ort", models_dir=models_dir, download=False)
    api = engine.predict(str(video), seq_len=4).to_record()
    margin = api["logits"][0] - api["logits"][1]
    assert api["p_fake_calibrated"] == pytest.approx(calibrated_p_fake(margin, cal.temperature))
    assert api["calibration"]["status"] == "calibrated"
    assert api["calibration"]["temperature"] == cal.temperature
    # dfe predict, dfe score (local), dfe serve's API: the same verdict and probability
    common = ["--model", str(calibrated), "--backend", "ort", "--models", models_dir,
              "--no-download", "--seq-len", "4"]  # fmt: skip
    assert main(["predict", str(video), "--out", str(tmp_path / "r.jsonl"), "--no-progress",
                 *common]) == 0  # fmt: skip
    (cli,) = map(json.loads, (tmp_path / "r.jsonl").read_text().splitlines())
    assert main(["score", str(video), "--out", str(tmp_path / "s.jsonl"), *common]) == 0
    from engine import distributed

    (scored,) = distributed.read_records(tmp_path / "s.jsonl")
    for rec in (cli, scored):
        for key in ("verdict", "reasons", "p_fake_calibrated", "calibration"):
            assert rec[key] == api[key], key
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from engine.server.app import create_app
    from tests.engine.server.conftest import wait_done

    with TestClient(create_app(engine, tmp_path / "serve")) as client, video.open("rb") as f:
        job = client.post("/api/v1/jobs", files={"video": ("v.mp4", f)}, data={"seq_len": "4"})
        result = wait_done(lambda i: client.get(f"/api/v1/jobs/{i}").json(), job.json()["id"])
    for key in ("verdict", "reasons", "p_fake_calibrated", "calibration"):
        assert result["result"][key] == api[key], key
