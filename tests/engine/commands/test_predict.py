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
    from engine.core.records import RECORD_FIELDS

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


def _record(i: int, *, status: str = "ok", coverage: float | None = 1.0) -> dict:
    return {
        "video": f"/videos/{i:05d}.mp4",
        "status": status,
        "error": None if status == "ok" else "broken",
        "frames": 4 if status == "ok" else 0,
        "faces": 4 if status == "ok" else 0,
        "face_coverage": coverage if status == "ok" else None,
        "label": "REAL",
        "confidence": 60.0,
        "p_fake": 0.4,
        "people": 1,
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
    assert "2/3 scored, 1 errors, 0 skipped; 1.50 videos/s" in err

    big = PredictTally.of([_record(i) for i in range(TABLE_ROWS + 1)])
    print_summary(big, 1.0)
    err = capsys.readouterr().err
    assert "00000.mp4" not in err and f"{TABLE_ROWS + 1}/{TABLE_ROWS + 1} scored, 0 errors" in err
