"""`dfe predict` as a batch job: one record per input, resume, CSV, exit codes (in-process,
on the tiny model; one subprocess smoke test checks the real command line)."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
import pytest

from engine.cli import main


@dataclass
class Run:
    returncode: int
    stdout: str
    stderr: str


@pytest.fixture
def predict(capsys, tiny_model, models_dir):
    """predict(args, model=tiny) -> Run: `dfe predict ARGS` in-process."""

    def run(args, model=tiny_model) -> Run:
        capsys.readouterr()
        code = main(
            [
                "predict",
                *map(str, args),
                "--model",
                str(model),
                "--backend",
                "ort",
                "--models",
                models_dir,
                "--no-download",
                "--no-progress",
            ]
        )
        out = capsys.readouterr()
        return Run(code, out.out, out.err)

    return run


def _faceless_clip(path: Path, frames: int = 12) -> None:
    rng = np.random.default_rng(0)
    with av.open(str(path), "w") as c:
        s = c.add_stream("h264", rate=25)
        s.width, s.height, s.pix_fmt = 320, 240, "yuv420p"
        for i in range(frames):
            img = np.full((240, 320, 3), 40 + 5 * i, np.uint8)
            img[::7] = rng.integers(0, 255, size=img[::7].shape, dtype=np.uint8)
            c.mux(s.encode(av.VideoFrame.from_ndarray(img, format="bgr24")))
        c.mux(s.encode())


def test_predict_dir_with_bad_files_records_every_file(predict, shared_dir, tmp_path):
    d = tmp_path / "mixed"
    (d / "sub").mkdir(parents=True)
    good = shared_dir / "videos" / "pair480p_real.mp4"
    (d / "good.mp4").symlink_to(good)
    (d / "sub" / "good2.mp4").symlink_to(shared_dir / "videos" / "dfdc_like_real.mp4")
    (d / "zero.mp4").write_bytes(b"")
    (d / "truncated.mp4").write_bytes(good.read_bytes()[: good.stat().st_size // 3])
    (d / "notes.mp4").write_text("this is not a video\n")
    _faceless_clip(d / "faceless.mp4")
    out = tmp_path / "r.jsonl"
    proc = predict([d, "--seq-len", 10, "--out", out])
    assert proc.returncode == 3, proc.stderr[-2000:]  # some failed, all recorded
    recs = {Path(r["video"]).name: r for r in map(json.loads, out.read_text().splitlines())}
    assert set(recs) == {
        "good.mp4",
        "good2.mp4",
        "zero.mp4",
        "truncated.mp4",
        "notes.mp4",
        "faceless.mp4",
    }
    for name in ("good.mp4", "good2.mp4"):
        assert recs[name]["status"] == "ok" and recs[name]["faces"] == 10
    for name in ("zero.mp4", "notes.mp4"):
        assert recs[name]["status"] == "error" and name in recs[name]["error"]
    # no face anywhere: scored on whole frames, as the original did, and reported as such
    assert recs["faceless.mp4"]["status"] == "ok"
    assert recs["faceless.mp4"]["faces"] == 0 and recs["faceless.mp4"]["frames"] == 10
    t = recs["truncated.mp4"]
    assert t["status"] == "error" or t["warnings"], t
    assert "4/6 scored, 2 errors, 0 skipped" in proc.stderr


def test_predict_resume_skips_recorded_videos(predict, shared_dir, tmp_path):
    vids = sorted((shared_dir / "videos").glob("pair480p_*.mp4"))
    out = tmp_path / "r.jsonl"
    assert predict([vids[0], "--seq-len", 4, "--out", out]).returncode == 0
    first = out.read_text()
    proc = predict([*vids, "--seq-len", 4, "--out", out, "--resume"])
    assert proc.returncode == 0 and "1 input(s) already in" in proc.stderr
    lines = out.read_text().splitlines()
    assert out.read_text().startswith(first)
    assert [Path(json.loads(x)["video"]).name for x in lines] == [v.name for v in vids]


def test_predict_csv_output_and_glob(predict, shared_dir, tmp_path):
    from engine.records import RECORD_FIELDS

    out = tmp_path / "r.csv"
    pattern = str(shared_dir / "videos" / "pair480p_*.mp4")
    proc = predict([pattern, str(tmp_path / "missing_*.mp4"), "--seq-len", 3, "--out", out])
    assert proc.returncode == 3
    rows = list(csv.DictReader(out.open()))
    assert tuple(rows[0]) == RECORD_FIELDS  # every field of the record, none dropped
    assert rows[0]["crop_style"] == "scrfd" and rows[0]["precision"] == "fp32"
    assert [r["status"] for r in rows] == ["ok", "ok", "error"]
    assert rows[2]["video"].endswith("missing_*.mp4") and "not found" in rows[2]["error"]
    assert len(json.loads(rows[0]["frame_p_fake"])) == 3
    assert 0 <= float(rows[0]["p_fake"]) <= 1 and rows[0]["label"] in ("REAL", "FAKE")


@pytest.mark.parametrize(
    "bad",
    [["--out", "x.txt"], ["--resume"], ["--seq-len", "0"], ["--input-size", "100"]],
)
def test_predict_bad_options_exit_2(predict, shared_dir, bad):
    proc = predict([shared_dir / "videos" / "pair480p_real.mp4", *bad])
    assert proc.returncode == 2 and proc.stderr.startswith("error: "), proc.stderr


def test_predict_missing_detector_is_one_error_before_any_video(predict, tiny_model, tmp_path):
    """A job must not write an error record per video (and retry the download per video) when
    the detector file is missing: one error, exit code 2, nothing scored."""
    from engine.cli import main

    out = tmp_path / "r.jsonl"
    videos = tmp_path / "v"
    videos.mkdir()
    for i in range(3):
        (videos / f"{i}.mp4").write_bytes(b"not read")
    code = main(
        ["predict", str(videos), "--model", str(tiny_model), "--models", str(tmp_path / "none"),
         "--no-download", "--no-progress", "--out", str(out)]
    )  # fmt: skip
    assert code == 2 and not out.exists()


def test_predict_cli_smoke_in_a_subprocess(tiny_model, models_dir, shared_dir, tmp_path):
    """The real `dfe` command line once, end to end (the other tests run main() in-process)."""
    out = tmp_path / "r.jsonl"
    proc = subprocess.run(
        [sys.executable, "-m", "engine.cli", "predict",
         str(shared_dir / "videos" / "pair480p_real.mp4"), "--model", str(tiny_model),
         "--backend", "ort", "--models", models_dir, "--no-download", "--no-progress",
         "--seq-len", "3", "--out", str(out)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    (rec,) = map(json.loads, out.read_text().splitlines())
    assert rec["status"] == "ok" and rec["frames"] == 3


def test_predict_crop_style_dlib_runs_without_dlib(predict, shared_dir, tmp_path, monkeypatch):
    for name in ("dlib", "face_recognition", "face_recognition_models"):
        monkeypatch.setitem(sys.modules, name, None)  # `import dlib` raises ImportError
    out = tmp_path / "records.jsonl"
    video = shared_dir / "videos" / "pair480p_real.mp4"
    proc = predict([video, "--seq-len", 4, "--crop-style", "dlib", "--out", out])
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert sys.modules["dlib"] is None
    (rec,) = map(json.loads, out.read_text().splitlines())
    assert rec["status"] == "ok" and rec["crop_style"] == "dlib" and rec["faces"] == 4


UNCALIBRATED = {"status": "uncalibrated", "temperature": 1.0, "fake_at": 0.6, "real_below": 0.4}
CALIBRATED = {"status": "calibrated", "temperature": 2.0, "fake_at": 0.7, "real_below": 0.2}


def _record(
    i: int,
    *,
    status: str = "ok",
    coverage: float | None = 1.0,
    verdict: str = "REAL",
    reasons: tuple[str, ...] = (),
    warnings: tuple[str, ...] = (),
    p_cal: float = 0.15,
    calibration: dict | None = CALIBRATED,
) -> dict:
    ok = status == "ok"
    return {
        "video": f"/videos/{i:05d}.mp4",
        "status": status,
        "error": None if ok else "broken",
        "verdict": verdict if ok else None,
        "reasons": list(reasons) if ok else [],
        "frames": 4 if ok else 0,
        "faces": 4 if ok else 0,
        "face_coverage": coverage if ok else None,
        "label": "REAL",
        "confidence": 60.0,
        "p_fake": 0.4,
        "p_fake_calibrated": p_cal if ok else None,
        "calibration": calibration if ok else None,
        "people": 1,
        "warnings": list(warnings),
        "timings": {"total": 0.5},
    }


def test_predict_tally_holds_bounded_records_over_a_long_job():
    """A long job keeps counts, not records (they are in the output file): memory that does not
    grow with the number of videos."""
    from engine.commands.predict import LOW_COVERAGE_NAMES, TABLE_ROWS, PredictTally

    tally = PredictTally()
    for i in range(5000):
        tally.add(_record(i, status="error" if i % 10 == 0 else "ok", coverage=i % 7 / 7))
    assert (tally.count, tally.ok, tally.failed) == (5000, 4500, 500)
    assert tally.frames == 4 * 4500
    assert len(tally.first) == TABLE_ROWS and tally.first[0]["video"] == "/videos/00000.mp4"
    low = sum(1 for i in range(5000) if i % 10 and i % 7 / 7 < 0.5)
    assert tally.low_coverage == low and len(tally.low_coverage_names) == LOW_COVERAGE_NAMES


def test_predict_summary_counts_without_a_table_past_the_table_rows(capsys):
    from engine.commands.predict import TABLE_ROWS, PredictTally, print_summary

    small = PredictTally.of([_record(0), _record(1, status="error"), _record(2, coverage=0.25)])
    print_summary(small, 2.0)
    err = capsys.readouterr().err
    assert "00000.mp4" in err and "ERROR  broken" in err  # the table
    assert "1 video(s) scored mostly on whole frames" in err and "00002.mp4" in err
    assert "2/3 scored, 1 error, 0 skipped; 1.50 videos/s" in err

    big = PredictTally.of([_record(i) for i in range(TABLE_ROWS + 1)])
    print_summary(big, 1.0)
    err = capsys.readouterr().err
    assert "00000.mp4" not in err and f"{TABLE_ROWS + 1}/{TABLE_ROWS + 1} scored, 0 errors" in err


def _verdict_records() -> list[dict]:
    """One record of each verdict (calibrated model) and an error."""
    return [
        _record(0, verdict="FAKE", p_cal=0.91, warnings=("a", "b")),
        _record(1, verdict="REAL", p_cal=0.05),
        _record(2, verdict="UNCERTAIN", p_cal=0.5, reasons=("FACE_TOO_BLURRY",
                "SCORE_IN_UNCERTAIN_BAND"), warnings=("FACE_TOO_BLURRY: blurred",)),
        _record(3, verdict="NO_FACE", p_cal=0.3, reasons=("NO_FACE_DETECTED",), coverage=0.0),
        _record(4, status="error"),
    ]  # fmt: skip


def _rows(err: str) -> dict[str, str]:
    """The table's rows by video name."""
    return {line.split()[0]: line for line in err.splitlines() if line.startswith("0")}


def test_predict_summary_table_leads_with_verdict_main_reason_and_warning_count(
    capsys, monkeypatch
):
    from core.verdict import reason_text
    from engine.commands.predict import PredictTally, print_summary

    monkeypatch.delenv("COLUMNS", raising=False)  # not a terminal: the reasons in full
    tally = PredictTally.of(_verdict_records())
    assert tally.verdicts == {"FAKE": 1, "REAL": 1, "UNCERTAIN": 1, "NO_FACE": 1}
    print_summary(tally, 1.0)
    err = capsys.readouterr().err
    header = next(line for line in err.splitlines() if line.startswith("video"))
    assert header.split() == [
        "video", "verdict", "p_fake", "frames", "faces", "people", "warnings", "reason", "seconds"
    ]  # fmt: skip
    rows = _rows(err)
    assert rows["00000.mp4"].split()[1:8] == ["FAKE", "0.9100", "4", "4", "1", "2", "-"]
    assert rows["00001.mp4"].split()[1:3] == ["REAL", "0.0500"]  # calibrated: no "*"
    blurry = rows["00002.mp4"]
    assert blurry.split()[1:3] == ["UNCERTAIN", "0.5000"] and blurry.split()[6] == "1"
    # the main (first) reason in words, not the next one
    assert reason_text("FACE_TOO_BLURRY") in blurry and "band" not in blurry
    assert reason_text("NO_FACE_DETECTED") in rows["00003.mp4"]
    assert rows["00004.mp4"].split()[1:] == ["ERROR", "broken"]
    assert "verdicts: 1 FAKE, 1 REAL, 1 UNCERTAIN, 1 NO_FACE" in err
    assert "4/5 scored, 1 error, 0 skipped; 5.00 videos/s" in err
    # a trained, calibrated model: neither mark
    assert "UNTRAINED" not in err and "uncalibrated" not in err and "*" not in err


def test_predict_summary_reasons_shorten_to_the_terminal_then_become_codes(capsys, monkeypatch):
    from core.verdict import reason_text
    from engine.commands.predict import PredictTally, print_summary

    records = _verdict_records()
    words = reason_text("FACE_TOO_BLURRY")
    monkeypatch.setenv("COLUMNS", "110")  # some room: the words, shortened
    print_summary(PredictTally.of(records), 1.0)
    err = capsys.readouterr().err
    blurry = _rows(err)["00002.mp4"]
    assert words not in blurry and "..." in blurry and words[:10] in blurry
    assert all(len(line) <= 110 for line in err.splitlines() if line.startswith(("0", "v")))
    monkeypatch.setenv("COLUMNS", "80")  # no room for words: the code
    print_summary(PredictTally.of(records), 1.0)
    rows = _rows(capsys.readouterr().err)
    assert "FACE_TOO_BLURRY" in rows["00002.mp4"] and "NO_FACE_DETECTED" in rows["00003.mp4"]


def test_predict_summary_marks_untrained_and_uncalibrated_models(capsys):
    from engine.commands.predict import TABLE_ROWS, PredictTally, print_summary

    demo = "untrained demo model (dfe demo): its labels and confidences mean nothing"
    records = [
        _record(i, verdict="UNCERTAIN", p_cal=0.45, reasons=("UNTRAINED_MODEL",),
                warnings=(demo,), calibration=UNCALIBRATED)
        for i in range(2)
    ]  # fmt: skip
    print_summary(PredictTally.of(records), 1.0)
    err = capsys.readouterr().err
    assert "0.4500*" in _rows(err)["00000.mp4"]  # the plain softmax, marked
    lines = err.splitlines()
    untrained = [x for x in lines if "UNTRAINED" in x and not x.startswith("0000")]  # not rows
    assert len(untrained) == 1 and "verdicts" in untrained[0] and "mean nothing" in untrained[0]
    (uncal,) = [x for x in lines if "uncalibrated" in x]
    assert uncal.startswith("* uncalibrated model: p_fake is the plain softmax")
    assert "default band [0.40, 0.60)" in uncal and "dfe calibrate LABELS.csv --model DIR" in uncal
    assert "verdicts: 0 FAKE, 0 REAL, 2 UNCERTAIN, 0 NO_FACE" in err

    # past the table's rows: no table, still both marks; the warning alone marks the demo model
    # (an error record of it has no reasons)
    big = [_record(i, calibration=UNCALIBRATED) for i in range(TABLE_ROWS)]
    big.append(_record(TABLE_ROWS, status="error", warnings=(demo,)))
    tally = PredictTally.of(big)
    assert len(tally.first) == TABLE_ROWS and tally.uncalibrated == TABLE_ROWS
    print_summary(tally, 1.0)
    err = capsys.readouterr().err
    assert "00000.mp4" not in err and "UNTRAINED model" in err
    assert "\nuncalibrated model: p_fake is the plain softmax" in err  # no table: no "*"
    assert f"verdicts: 0 FAKE, {TABLE_ROWS} REAL, 0 UNCERTAIN, 0 NO_FACE" in err


def test_predict_table_of_the_tiny_and_the_demo_model(predict, shared_dir, tmp_path, monkeypatch):
    """The real job's table: the records' verdicts and reasons, and the marks (the tiny model
    is trained but uncalibrated; the demo model is untrained)."""
    from core.verdict import reason_text
    from tests.tiny_model import make_tiny_model

    monkeypatch.delenv("COLUMNS", raising=False)  # not a terminal: the reasons in full
    video = shared_dir / "videos" / "pair480p_real.mp4"
    out = tmp_path / "r.jsonl"
    proc = predict([video, "--seq-len", 3, "--out", out])
    assert proc.returncode == 0, proc.stderr[-2000:]
    (rec,) = map(json.loads, out.read_text().splitlines())
    row = _row_of(proc.stderr, video.name)
    assert row.split()[1] == rec["verdict"] and f"{rec['p_fake_calibrated']:.4f}*" in row
    assert rec["calibration"]["status"] == "uncalibrated"
    assert "* uncalibrated model" in proc.stderr and "UNTRAINED" not in proc.stderr
    assert f"verdicts: {int(rec['verdict'] == 'FAKE')} FAKE" in proc.stderr

    demo = make_tiny_model(tmp_path / "demo", demo=True)
    out = tmp_path / "demo.jsonl"
    proc = predict([video, "--seq-len", 3, "--out", out], model=demo)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (rec,) = map(json.loads, out.read_text().splitlines())
    assert rec["verdict"] == "UNCERTAIN" and rec["reasons"][0] == "UNTRAINED_MODEL"
    row = _row_of(proc.stderr, video.name)
    assert row.split()[1] == "UNCERTAIN" and reason_text("UNTRAINED_MODEL") in row
    assert row.split()[6] == str(len(rec["warnings"]))
    assert (
        "UNTRAINED model" in proc.stderr and "verdicts: 0 FAKE, 0 REAL, 1 UNCERTAIN" in proc.stderr
    )


def _row_of(err: str, name: str) -> str:
    (row,) = [line for line in err.splitlines() if line.startswith(name)]
    return row
