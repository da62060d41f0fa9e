"""Errors a new user meets, said before anything loads and without leftovers: a missing
library for the output (pyarrow for Parquet, matplotlib for eval's plots), an output that is
not records of this tool or of an unsupported format, a --model that names a file inside the
model folder or a typo of it, and unreadable videos reported once, in full, without the native
libraries' own lines on stderr. In-process on the tiny model, except the native logs (set once
per process: a subprocess)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import av
import numpy as np
import pytest

from engine.cli import main


def _clip(path: Path, frames: int = 6) -> Path:
    """A short faceless H.264 clip."""
    with av.open(str(path), "w") as c:
        s = c.add_stream("h264", rate=25)
        s.width, s.height, s.pix_fmt = 160, 120, "yuv420p"
        for i in range(frames):
            img = np.full((120, 160, 3), 40 + 10 * i, np.uint8)
            c.mux(s.encode(av.VideoFrame.from_ndarray(img, format="bgr24")))
        c.mux(s.encode())
    return path


@pytest.fixture
def dfe(capsys, tiny_model, models_dir):
    """dfe(command, *args, model=tiny) -> (exit code, stderr): `dfe COMMAND ARGS` in-process."""

    def run(command: str, *args, model=tiny_model) -> tuple[int, str]:
        capsys.readouterr()
        extra = ["--no-progress"] if command == "predict" else []
        code = main(
            [command, *map(str, args), "--model", str(model), "--backend", "ort", "--models",
             models_dir, "--no-download", "--seq-len", "3", *extra]
        )  # fmt: skip
        return code, " ".join(capsys.readouterr().err.split())

    return run


@pytest.fixture
def no_model_load(monkeypatch):
    """Loading a model fails the test: the error must come before it."""
    from engine.api import Engine

    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded before the error")

    monkeypatch.setattr(Engine, "load", refuse)


def _hide(monkeypatch, *modules: str) -> None:
    """Make ``import MODULE`` fail as it does when the package is not installed."""
    for name in modules:
        monkeypatch.setitem(sys.modules, name, None)


# ------------------------------------------------------------------ 1. dfe score, Parquet


def test_score_parquet_without_pyarrow_names_the_extra_before_loading(
    dfe, tmp_path, monkeypatch, no_model_load
):
    _hide(monkeypatch, "pyarrow", "pyarrow.parquet")
    out = tmp_path / "x.parquet"
    code, err = dfe("score", tmp_path / "v.mp4", "--out", out)
    assert code == 2, err
    assert "pyarrow is needed for --out" in err and "pip install 'deepfake-engine[ray]'" in err
    assert "Traceback" not in err and "ModuleNotFoundError" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no folder, no lock file


def test_score_that_writes_nothing_leaves_no_output_folder(dfe, tmp_path, monkeypatch):
    from engine import distributed
    from engine.commands import score

    video = tmp_path / "v.mp4"
    video.write_bytes(b"x")

    class Engine:
        def predict_many(self, paths, **kwargs):
            records = [{"video": p, "status": "ok"} for p in paths]
            return (SimpleNamespace(to_record=lambda r=r: r) for r in records)

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(score, "check_models", lambda *a: Engine())
    monkeypatch.setattr(distributed, "write_records_file", disk_full)
    out = tmp_path / "x.jsonl"
    with pytest.raises(OSError, match="No space left"):
        dfe("score", video, "--out", out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v.mp4"]


def test_score_folder_of_other_files_is_named_as_such(dfe, tmp_path, no_model_load):
    out = tmp_path / "x.parquet"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    code, err = dfe("score", tmp_path / "v.mp4", "--out", out)
    assert code == 2 and "holds files that are not scoring records (notes.txt" in err
    assert "already holds results" not in err


# ------------------------------------------------------------------ 2. dfe eval, plots


def test_eval_without_matplotlib_fails_before_scoring_and_its_retry_runs(
    dfe, tmp_path, monkeypatch
):
    from engine.api import Engine

    video = _clip(tmp_path / "a.mp4")
    labels = tmp_path / "labels.csv"
    labels.write_text(f"{video.name},REAL\n")
    out = tmp_path / "ev"
    real_load = Engine.load
    loads = []

    def counting_load(*args, **kwargs):
        loads.append(1)
        return real_load(*args, **kwargs)

    monkeypatch.setattr(Engine, "load", counting_load)
    _hide(monkeypatch, "matplotlib", "matplotlib.pyplot")
    code, err = dfe("eval", labels, "-o", out)
    assert code == 2 and "matplotlib is needed for the evaluation plots" in err
    assert "deepfake-engine[eval]" in err and "(or pass --no-plots)" in err
    assert not loads and not out.exists()  # nothing loaded, scored or written

    # what a run that failed half way left (no metrics.json) does not block its retry
    out.mkdir()
    (out / "predictions_N3.jsonl").write_text('{"video": "a.mp4", "status": "ok"}\n')
    (out / "predictions_N9.jsonl").write_text("stale\n")
    (out / "notes.txt").write_text("mine")
    code, err = dfe("eval", labels, "-o", out, "--no-plots")
    assert code in (0, 3), err
    assert "removed the files of an evaluation that did not finish" in err
    assert sorted(p.name for p in out.iterdir()) == [
        "metrics.json", "notes.txt", "predictions_N3.jsonl"
    ]  # fmt: skip
    assert json.loads((out / "predictions_N3.jsonl").read_text())["video"] == str(video)

    # a complete evaluation is never replaced without --overwrite
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    code, err = dfe("eval", labels, "-o", out, "--no-plots")
    assert code == 2 and "already holds an evaluation (metrics.json" in err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


# ------------------------------------------------------------------ 3. dfe predict --out


def test_predict_unsupported_out_format_is_refused_before_loading(dfe, tmp_path, no_model_load):
    notes = tmp_path / "notes.md"
    notes.write_text("# my notes\n")
    code, err = dfe("predict", tmp_path / "v.mp4", "--out", notes)
    assert code == 2 and "unsupported format '.md'" in err and ".jsonl, .csv" in err
    assert "already holds results" not in err and notes.read_text() == "# my notes\n"
    code, err = dfe("predict", tmp_path / "v.mp4", "--out", tmp_path / "new.txt")
    assert code == 2 and "unsupported format '.txt'" in err
    assert not (tmp_path / "new.txt").exists()


@pytest.mark.parametrize("name", ["notes.jsonl", "table.csv"])
def test_predict_out_holding_other_data_is_not_called_results(name, dfe, tmp_path, no_model_load):
    out = tmp_path / name
    out.write_text("plain text, not records\nsecond line\n")
    for flags in ([], ["--resume"]):
        code, err = dfe("predict", tmp_path / "v.mp4", "--out", out, *flags)
        assert code == 2, err
        assert f"--out {out} holds data that is not records of this tool" in err
        assert "already holds results" not in err
        assert out.read_text() == "plain text, not records\nsecond line\n"


def test_holds_records_tells_records_from_other_data(tmp_path):
    from engine.batch import holds_records
    from engine.records import RECORD_FIELDS

    cases = {
        "records.jsonl": '{"video": "a.mp4", "status": "ok"}\n',
        "torn.jsonl": '{"video": "a.mp4", "sta',  # a killed job's first record
        "records.csv": ",".join(RECORD_FIELDS) + "\n",
        "older.csv": "video,status,p_fake\n",  # another version's columns: still records
    }
    others = {
        "empty.jsonl": "",
        "text.jsonl": "hello\n",
        "list.jsonl": "[1, 2]\n",
        "object.jsonl": '{"name": "x"}\n',
        "other.csv": "a,b\n1,2\n",
    }
    for name, text in {**cases, **others}.items():
        (tmp_path / name).write_text(text)
        assert holds_records(tmp_path / name) == (name in cases), name


# ------------------------------------------------------------------ 4. --model


def test_model_file_inside_the_model_folder_names_the_folder(dfe, tiny_model):
    from core.errors import ArtifactNotFoundError
    from core.sidecar import load_sidecar
    from engine.api import Engine

    onnx = tiny_model / "classifier.onnx"
    with pytest.raises(ArtifactNotFoundError) as info:
        Engine.load(onnx)
    assert f"give the model folder {tiny_model}" in str(info.value)
    assert "dfe export" not in str(info.value)
    with pytest.raises(ArtifactNotFoundError, match="give the model folder"):
        load_sidecar(onnx)  # dfe calibrate, dfe build
    code, err = dfe("predict", onnx, model=onnx)
    assert code == 2 and f"give the model folder {tiny_model}" in err


def test_model_typo_suggests_the_closest_model_folder(dfe, tiny_model, tmp_path):
    from core.errors import ArtifactNotFoundError
    from engine.api import Engine

    shutil.copytree(tiny_model, tmp_path / "model")
    (tmp_path / "models_old").mkdir()  # no model in it: never suggested
    with pytest.raises(ArtifactNotFoundError) as info:
        Engine.load(tmp_path / "modle")
    msg = str(info.value)
    assert f"did you mean {tmp_path / 'model'}?" in msg and "dfe export" not in msg
    code, err = dfe("predict", tmp_path / "v.mp4", model=tmp_path / "modle")
    assert code == 2 and f"did you mean {tmp_path / 'model'}?" in err
    # nothing close: how to export one, into the path given
    with pytest.raises(ArtifactNotFoundError, match=r"dfe export CHECKPOINT -o .*zzz_other"):
        Engine.load(tmp_path / "zzz_other")


# ------------------------------------------------------------------ 5. unreadable videos

_PROBE = """
import logging, sys
logging.basicConfig(level=logging.INFO if sys.argv[2] == "-v" else logging.WARNING)
from preprocess.video import probe_video
try:
    probe_video(sys.argv[1])
except Exception as exc:
    print("ERROR", type(exc).__name__)
"""


def test_unreadable_video_without_native_log_lines(tmp_path):
    bad = tmp_path / "cut.mp4"  # an MP4 without its moov index: FFmpeg and OpenCV complain
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8)
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    env.pop("OPENCV_FFMPEG_LOGLEVEL", None)
    env.pop("OPENCV_LOG_LEVEL", None)

    def probe(flag: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-c", _PROBE, str(bad), flag],
            capture_output=True, text=True, env=env, timeout=120,
        )  # fmt: skip

    quiet = probe("-")
    assert "ERROR InvalidVideoError" in quiet.stdout
    assert "moov atom" not in quiet.stderr and "WARN" not in quiet.stderr, quiet.stderr
    assert "trying OpenCV" not in quiet.stderr  # the error says both backends failed
    loud = probe("-v")  # logging at INFO (dfe -v): the native lines stay visible
    assert "moov atom not found" in loud.stderr, loud.stderr


def test_predict_table_lists_long_errors_in_full(capsys, monkeypatch):
    from engine.commands.predict import print_table

    error = (
        "'/videos/cut.mp4' cannot be read as a video: FFmpeg/PyAV says 'Invalid data found "
        "when processing input'; found an MP4/MOV file without its 'moov' index"
    )
    ok = {"video": "/videos/good.mp4", "status": "ok", "verdict": "REAL", "reasons": [],
          "p_fake": 0.1, "frames": 4, "faces": 4, "people": 1, "warnings": []}  # fmt: skip
    records = [
        {"video": "/videos/cut.mp4", "status": "error", "error": error},
        {"video": "/videos/short.mp4", "status": "error", "error": "no such file"},
        ok,
    ]
    monkeypatch.setenv("COLUMNS", "100")
    print_table(records)
    lines = capsys.readouterr().err.splitlines()
    rows = {line.split()[0]: line for line in lines if line.split()[0].endswith(".mp4")}
    assert rows["cut.mp4"].split()[1:] == ["ERROR", "(error", "1", "below)"]
    assert rows["short.mp4"].split()[1:] == ["ERROR", "no", "such", "file"]  # it fits
    assert f"error 1: cut.mp4: {error}" in lines
    monkeypatch.delenv("COLUMNS")  # not a terminal (a log): in the row, in full
    print_table(records)
    assert f"ERROR  {error}" in capsys.readouterr().err
