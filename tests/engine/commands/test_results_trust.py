"""Results a user can trust and reproduce: outputs that are never destroyed, resumes that only
count the same work as done, every input accounted for, records that say how they were made,
models that are what they claim, and `dfe reproduce` (issue 29). On the tiny model and short
clips cut from the shared videos, in-process except where a real process must die."""

from __future__ import annotations

import csv
import json
import os
import random
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import av
import pytest

from engine.cli import main

SEQ = "3"


def _cut(src: Path, dst: Path, frames: int, start: int = 0) -> Path:
    """``frames`` frames of ``src`` from frame ``start`` re-encoded to ``dst`` (H.264)."""
    with av.open(str(src)) as inp, av.open(str(dst), "w") as out:
        stream = out.add_stream("h264", rate=24)
        stream.pix_fmt = "yuv420p"
        src_stream = inp.streams.video[0]
        stream.width, stream.height = src_stream.width, src_stream.height
        for i, frame in enumerate(inp.decode(video=0)):
            if i < start:
                continue
            if i >= start + frames:
                break
            img = frame.to_ndarray(format="bgr24")
            out.mux(stream.encode(av.VideoFrame.from_ndarray(img, format="bgr24")))
        out.mux(stream.encode())
    return dst


@pytest.fixture(scope="module")
def clips(tmp_path_factory, shared_dir) -> list[Path]:
    """Four short, different clips (6 frames each) of the shared videos."""
    d = tmp_path_factory.mktemp("clips")
    videos = shared_dir / "videos"
    return [
        _cut(videos / "pair480p_real.mp4", d / "a.mp4", 6),
        _cut(videos / "pair480p_fake.mp4", d / "b.mp4", 6),
        _cut(videos / "pair480p_real.mp4", d / "c.mp4", 6, start=60),
        _cut(videos / "pair480p_fake.mp4", d / "d.mp4", 6, start=120),
    ]


@pytest.fixture
def dfe(capsys, tiny_model, models_dir):
    """dfe(command, *args, model=tiny) -> (exit code, stderr): `dfe COMMAND ARGS` in-process with
    the tiny model, ONNX Runtime, the shared detector and N = 3."""

    def run(command: str, *args, model=tiny_model, seq: str | None = SEQ) -> tuple[int, str]:
        capsys.readouterr()
        extra = ["--no-progress"] if command == "predict" else []
        seq_args = ["--seq-len", seq] if seq else []
        code = main(
            [command, *map(str, args), "--model", str(model), "--backend", "ort", "--models",
             models_dir, "--no-download", *seq_args, *extra]
        )  # fmt: skip
        return code, " ".join(capsys.readouterr().err.split())

    return run


def records(path: Path) -> list[dict]:
    from engine.batch import read_output

    return [e.record for e in read_output(path)[0]]


# ------------------------------------------------------------------ never destroy results


def test_existing_out_is_refused_unless_resume_or_overwrite(dfe, clips, tmp_path):
    out = tmp_path / "res.jsonl"
    assert dfe("predict", *clips, "--out", out)[0] == 0
    before = out.read_bytes()
    # a typo in the inputs: exit 2, the file as it was
    code, err = dfe("predict", tmp_path / "nonexistent_dir", "--out", out)
    assert code == 2 and "already holds results" in err and out.read_bytes() == before
    # the same with a new output: no video at all is exit 2 and writes nothing
    code, err = dfe("predict", tmp_path / "nonexistent_dir", "--out", tmp_path / "new.jsonl")
    assert code == 2 and "does not exist" in err and not (tmp_path / "new.jsonl").exists()
    # a rerun on one video without --resume: refused, not 1 line of 4
    code, err = dfe("predict", clips[0], "--out", out)
    assert code == 2 and "--resume" in err and "--overwrite" in err and out.read_bytes() == before
    assert dfe("predict", clips[0], "--out", out, "--resume", "--overwrite")[0] == 2
    # --overwrite replaces it, with no temporary file left next to it
    assert dfe("predict", clips[0], "--out", out, "--overwrite")[0] == 0
    assert [Path(r["video"]).name for r in records(out)] == ["a.mp4"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["res.jsonl"]


def test_interrupted_overwrite_leaves_the_old_results(dfe, clips, tmp_path, monkeypatch):
    from engine.api import Engine

    out = tmp_path / "res.csv"
    assert dfe("predict", *clips[:2], "--out", out)[0] == 0
    before = out.read_bytes()
    real = Engine.predict_many

    def one_then_interrupt(self, *args, **kwargs):
        preds = real(self, *args, **kwargs)
        yield next(preds)
        preds.close()
        raise KeyboardInterrupt

    monkeypatch.setattr(Engine, "predict_many", one_then_interrupt)
    code, _err = dfe("predict", *clips, "--out", out, "--overwrite")
    assert code == 130 and out.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["res.csv"]


# ------------------------------------------------------------------ resume = the same work


@pytest.mark.parametrize("command", ["predict", "score"])
def test_resume_with_other_settings_is_refused_naming_them(command, dfe, clips, tmp_path):
    out = tmp_path / ("r.jsonl" if command == "predict" else "r.parquet")
    assert dfe(command, *clips[:2], "--out", out)[0] == 0
    snapshot = sorted((p.name, p.read_bytes()) for p in ([out] if out.is_file() else out.iterdir()))
    code, err = dfe(command, *clips, "--out", out, "--resume", "--margin", "0.2", seq="4")
    assert code == 2, err
    assert "--seq-len: 3 in the record, 4 now" in err and "--margin: 0.0 in the record, 0.2" in err
    after = sorted((p.name, p.read_bytes()) for p in ([out] if out.is_file() else out.iterdir()))
    assert after == snapshot  # nothing scored, nothing written
    # with the same settings it goes on, and scores only what is missing
    code, err = dfe(command, *clips, "--out", out, "--resume")
    assert code == 0 and "2 input(s) already in" in err
    if command == "predict":
        recs = records(out)
    else:
        from engine import distributed

        recs = distributed.read_records(out)
    assert sorted(Path(r["video"]).name for r in recs) == ["a.mp4", "b.mp4", "c.mp4", "d.mp4"]


def test_resume_retries_error_records_and_keeps_one_record_per_input(dfe, clips, tmp_path):
    late = tmp_path / "late.mp4"
    out = tmp_path / "r.jsonl"
    code, _ = dfe("predict", clips[0], late, "--out", out)
    assert code == 3 and [r["status"] for r in records(out)] == ["ok", "error"]
    shutil.copy(clips[1], late)  # the missing file appears
    code, err = dfe("predict", clips[0], late, "--out", out, "--resume")
    assert code == 0 and "1 error record(s) scored again" in err
    recs = records(out)
    assert [(Path(r["video"]).name, r["status"]) for r in recs] == [
        ("a.mp4", "ok"),
        ("late.mp4", "ok"),
    ]


def test_resume_knows_a_file_by_its_identity_not_its_path(dfe, clips, tmp_path):
    work = tmp_path / "w"
    (work / "x").mkdir(parents=True)
    v = work / "v.mp4"
    shutil.copy(clips[0], v)
    (work / "link.mp4").symlink_to(v)
    out = tmp_path / "r.jsonl"
    assert dfe("predict", v, "--out", out)[0] == 0
    first = out.read_bytes()
    # the same file by three other paths: nothing to score, and one run lists duplicates
    for other in (work / "x" / ".." / "v.mp4", v.resolve(), work / "link.mp4"):
        code, err = dfe("predict", other, "--out", out, "--resume")
        assert code == 0 and "0/0 scored" in err and "1 already done" in err, err
    code, err = dfe("predict", v, work / "link.mp4", "--out", out, "--resume")
    assert code == 0 and "1 path(s) naming a file already listed" in err
    assert out.read_bytes() == first
    # replaced by another video under the same name: scored again, its record replaced
    v.unlink()
    shutil.copy(clips[3], v)
    code, err = dfe("predict", v, "--out", out, "--resume")
    assert code == 0 and "1 input(s) changed since" in err
    (rec,) = records(out)
    assert rec["provenance"]["input"]["size"] == clips[3].stat().st_size
    other = tmp_path / "fresh.jsonl"
    assert dfe("predict", clips[3], "--out", other)[0] == 0
    assert rec["p_fake"] == records(other)[0]["p_fake"]


def test_resume_removes_a_torn_last_line(dfe, clips, tmp_path):
    out = tmp_path / "r.jsonl"
    assert dfe("predict", *clips[:2], "--out", out)[0] == 0
    whole = out.read_bytes()
    out.write_bytes(whole[: len(whole) - 40])  # the second record torn, as by a killed job
    code, err = dfe("predict", *clips[:2], "--out", out, "--resume")
    assert code == 0 and "torn last line" in err
    recs = records(out)
    assert [Path(r["video"]).name for r in recs] == ["a.mp4", "b.mp4"]
    assert out.read_bytes().endswith(b"\n")


# ------------------------------------------------------------------ every input accounted for


def test_folders_are_walked_through_symlinks_and_skipped_files_listed(dfe, clips, tmp_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    shared = tmp_path / "elsewhere"
    shared.mkdir()
    for c in clips[:2]:
        shutil.copy(c, shared / c.name)
    (inputs / "linked").symlink_to(shared)  # a symlinked folder of videos
    (shared / "loop").symlink_to(shared)  # a link cycle must end
    shutil.copy(clips[2], inputs / "own.mp4")
    (inputs / "notes.txt").write_text("not a video")
    (inputs / ".hidden.mp4").write_bytes(b"x")
    out = inputs / "r.jsonl"  # inside the input folder: never an input
    code, err = dfe("predict", inputs, "--out", out)
    assert code == 0, err
    assert sorted(Path(r["video"]).name for r in records(out)) == ["a.mp4", "b.mp4", "own.mp4"]
    assert "1 skipped (not a video by name): notes.txt" in err
    assert "1 skipped (hidden): .hidden.mp4" in err
    assert "3/3 scored, 0 errors, 2 skipped" in err
    # a second run over the same folder with --resume does not take its own output as input
    code, err = dfe("predict", inputs, "--out", out, "--resume")
    assert code == 0 and "3 input(s) already in" in err and "own output" in err


def test_inputs_with_no_video_are_exit_2(dfe, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    only_link = tmp_path / "only_link"
    only_link.mkdir()
    (only_link / "sub").symlink_to(empty)
    others = tmp_path / "others"
    others.mkdir()
    (others / "a.txt").write_text("x")
    for folder in (empty, only_link, others):
        code, err = dfe("predict", folder, "--out", tmp_path / "r.jsonl")
        assert code == 2 and "no video found" in err, err
        assert not (tmp_path / "r.jsonl").exists()


# ------------------------------------------------------------------ provenance


def test_records_say_how_they_were_made_in_every_format(dfe, clips, tmp_path, models_dir):
    from core.hashing import sha256_file

    flags = ["--detector", "det_2.5g", "--margin", "0.3", "--score-threshold", "0.6", "--faces",
             "per-frame", "--face", "largest", "--no-face", "drop", "--input-size", "320",
             "--sampling", "uniform", "--hash"]  # fmt: skip
    out = tmp_path / "r.csv"
    assert dfe("predict", clips[0], "--out", out, *flags)[0] == 0
    (rec,) = records(out)
    prov = rec["provenance"]
    s = prov["settings"]
    assert (s["detector"], s["margin"], s["score_threshold"], s["faces"], s["face"]) == (
        "det_2.5g",
        0.3,
        0.6,
        "per-frame",
        "largest",
    )
    assert (s["no_face"], s["detector_input"], s["sampling"], s["seq_len"]) == (
        "drop",
        320,
        "uniform",
        3,
    )
    assert s["backend"] == "ort" and s["crop_style"] == "scrfd"
    assert prov["detector"]["sha256"] == sha256_file(Path(models_dir) / "det_2.5g.onnx")
    assert prov["model"]["graph_sha256"] == sha256_file(
        Path(prov["model"]["path"]) / "classifier.onnx"
    )
    assert prov["engine"]["version"] and prov["engine"]["onnxruntime"]
    assert prov["input"] == {
        "path": str(clips[0].resolve()),
        "size": clips[0].stat().st_size,
        "mtime_ns": clips[0].stat().st_mtime_ns,
        "sha256": sha256_file(clips[0]),
    }
    assert Path(rec["model"]).is_absolute()
    # the same provenance in a `dfe score` Parquet dataset
    pytest.importorskip("pyarrow")
    from engine import distributed

    data = tmp_path / "r.parquet"
    assert dfe("score", clips[0], "--out", data, *flags)[0] == 0
    (stored,) = distributed.read_records(data)
    assert {k: v for k, v in stored["provenance"].items()} == prov


def test_every_score_changing_option_reaches_the_record(tiny_model, models_dir, clips):
    """Derived from the config: each field marked score=True is in the settings, with a value
    different from the default when one is given (so none can be left out)."""
    from core.config import EngineConfig, score_fields
    from engine.api import Engine

    changed = {"margin": 0.25, "score_threshold": 0.55, "detector_input": 416, "face": "largest",
               "faces": "all", "no_face": "drop", "detect_every": 2, "detector_input_shape":
               "square", "size_probe": False, "colour": "keep", "decode_backend": "pyav",
               "crop_style": "dlib"}  # fmt: skip
    engine = Engine.load(
        tiny_model, backend="ort", models_dir=models_dir, download=False, **changed
    )
    prov = engine.predict(str(clips[0]), seq_len=3).provenance
    assert set(score_fields(EngineConfig)) <= set(prov["settings"])
    for key, value in changed.items():
        assert prov["settings"][key] == value, key


# ------------------------------------------------------------------ models are what they claim


def _copy_model(tiny_model: Path, dst: Path) -> Path:
    shutil.copytree(tiny_model, dst)
    return dst


def _flip(path: Path, at: int = 200) -> None:
    data = bytearray(path.read_bytes())
    for i in range(4):
        data[at + i] ^= 0xFF
    path.write_bytes(bytes(data))


def test_tampered_graphs_are_refused_at_load(dfe, tiny_model, clips, tmp_path):
    from core.errors import ModelFormatError
    from core.hashing import sha256_file
    from core.sidecar import INT8_FILE, INT8_GRAPH, SIDECAR_NAME
    from engine.api import Engine

    model = _copy_model(tiny_model, tmp_path / "m")
    _flip(model / "classifier.onnx")
    code, err = dfe("predict", clips[0], "--out", tmp_path / "r.jsonl", model=model)
    assert code == 2 and "classifier.onnx is not the graph its sidecar" in err
    assert "dfe export" in err and not (tmp_path / "r.jsonl").exists()
    # an INT8 graph whose bytes changed after `dfe build`
    model = _copy_model(tiny_model, tmp_path / "m8")
    shutil.copy(model / "classifier.onnx", model / INT8_FILE)
    side = json.loads((model / SIDECAR_NAME).read_text())
    fp32 = side["graphs"]["classifier"]["sha256"]
    side["graphs"][INT8_GRAPH] = {
        "file": INT8_FILE,
        "sha256": sha256_file(model / INT8_FILE),
        "precision": "int8",
        "source": {"graph": "classifier", "sha256": fp32},
    }
    (model / SIDECAR_NAME).write_text(json.dumps(side))
    Engine.load(model, backend="ort", precision="int8")  # as built: loads
    _flip(model / INT8_FILE)
    with pytest.raises(ModelFormatError, match=r"classifier.int8.onnx.*dfe build .* int8"):
        Engine.load(model, backend="ort", precision="int8")


def test_two_models_for_one_n_are_an_error_naming_both(tiny_model, tmp_path):
    from core.errors import InvalidInputError
    from engine.api import Engine

    root = tmp_path / "models"
    _copy_model(tiny_model, root / "n20_a")
    _copy_model(tiny_model, root / "n20_b")
    engine = Engine.load(root, backend="ort")
    with pytest.raises(InvalidInputError, match=r"2 models for N = 20: .*n20_a, .*n20_b"):
        engine.spec_for(20)


def test_derived_graphs_are_removed_by_a_new_export(tmp_path):
    """`dfe export` into a folder removes what was made from the graphs it replaces."""
    from core.sidecar import DERIVED_FILES, INT8_FILE, remove_derived_files

    (tmp_path / INT8_FILE).write_bytes(b"old int8")
    (tmp_path / "engines").mkdir()
    (tmp_path / "engines" / "x.engine").write_bytes(b"old")
    (tmp_path / "classifier.onnx").write_bytes(b"new")
    removed = remove_derived_files(tmp_path)
    assert sorted(p.name for p in removed) == [INT8_FILE, "engines"]
    assert [p.name for p in tmp_path.iterdir()] == ["classifier.onnx"]
    assert "engines" in DERIVED_FILES


# ------------------------------------------------------------------ clear errors


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--margin", "nan"], "--margin must be a finite number, got nan"),
        (["--score-threshold", "inf"], "--score-threshold must be a finite number"),
        (["--threads", "-1"], "--threads must be >= 0"),
    ],
)
def test_bad_option_values_are_one_error_naming_the_flag(dfe, clips, tmp_path, flags, message):
    code, err = dfe("predict", clips[0], "--out", tmp_path / "r.jsonl", *flags)
    assert code == 2 and message in err and not (tmp_path / "r.jsonl").exists()


def test_fp16_without_a_gpu_says_so(tiny_model, clips, tmp_path, capsys):
    if shutil.which("nvidia-smi"):
        pytest.skip("a GPU is here")
    code = main(["predict", str(clips[0]), "--model", str(tiny_model), "--precision", "fp16",
                 "--out", str(tmp_path / "r.jsonl")])  # fmt: skip
    err = " ".join(capsys.readouterr().err.split())
    assert code == 2 and "--precision fp16: it needs an NVIDIA GPU" in err
    assert "--precision fp32" in err and not (tmp_path / "r.jsonl").exists()


def test_eval_refuses_contradictory_duplicate_labels(dfe, clips, tmp_path):
    (tmp_path / "v.mp4").symlink_to(clips[0])
    labels = tmp_path / "labels.csv"
    labels.write_text(f"file,label\n{clips[0]},REAL\n{clips[1]},FAKE\n{tmp_path / 'v.mp4'},FAKE\n")
    code, err = dfe("eval", labels, "-o", tmp_path / "eval", "--no-plots")
    assert code == 2 and "with both labels" in err and "v.mp4" in err


def test_engine_predict_honours_seq_len_for_frames_and_crops(tiny_engine):
    import numpy as np

    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 255, (120, 160, 3), dtype=np.uint8) for _ in range(10)]
    first = tiny_engine.predict(frames, seq_len=2)
    assert (first.frames, first.frame_indices, first.seq_len) == (2, [0, 1], 2)
    spread = tiny_engine.predict(frames, seq_len=3, sampling="uniform")
    assert spread.frame_indices == [0, 5, 9]
    assert spread.p_fake == pytest.approx(
        tiny_engine.predict([frames[i] for i in (0, 5, 9)]).p_fake
    )
    crops = tiny_engine.predict(frames, seq_len=4, crops=True)
    assert crops.frames == 4 and crops.frame_indices == [0, 1, 2, 3]


# ------------------------------------------------------------------ dfe reproduce


def test_reproduce_agrees_on_a_non_default_job_and_catches_an_edit(dfe, clips, tmp_path, capsys):
    out = tmp_path / "r.jsonl"
    flags = ["--margin", "0.2", "--score-threshold", "0.6", "--faces", "per-frame",
             "--detector-input-shape", "square", "--sampling", "uniform"]  # fmt: skip
    assert dfe("predict", *clips, "--out", out, *flags)[0] == 0
    capsys.readouterr()
    assert main(["reproduce", str(out)]) == 0
    table = capsys.readouterr()
    assert "4 agree, 0 differ" in table.err and table.out.count(" same") == 4
    # one record's p_fake edited: exit 1, the table says which and by how much
    lines = out.read_text().splitlines()
    rec = json.loads(lines[2])
    rec["p_fake"] += 0.01
    lines[2] = json.dumps(rec)
    edited = tmp_path / "edited.jsonl"
    edited.write_text("\n".join(lines) + "\n")
    assert main(["reproduce", str(edited)]) == 1
    table = capsys.readouterr()
    assert "c.mp4" in table.out and "DIFFERS" in table.out and "1.00e-02" in table.out
    # an input that changed since: exit 2, named
    moved = tmp_path / "moved"
    moved.mkdir()
    work = shutil.copy(clips[0], moved / "a.mp4")
    assert dfe("predict", work, "--out", moved / "r.jsonl")[0] == 0
    os.utime(work, ns=(time.time_ns(), time.time_ns() + 10**9))
    capsys.readouterr()
    assert main(["reproduce", str(moved / "r.jsonl")]) == 2
    assert "CHANGED (the input" in capsys.readouterr().out


# ------------------------------------------------------------------ faults: kills, full disks


def _predict_cmd(tiny_model, models_dir, inputs, out, *extra) -> list[str]:
    return [sys.executable, "-m", "engine.cli", "predict", *map(str, inputs), "--model",
            str(tiny_model), "--backend", "ort", "--models", models_dir, "--no-download",
            "--no-progress", "--seq-len", SEQ, "--out", str(out), *extra]  # fmt: skip


def test_a_full_disk_keeps_every_complete_record_and_resume_finishes(tiny_model, models_dir,
                                                                     clips, tmp_path):  # fmt: skip
    """A real process whose file size limit (RLIMIT_FSIZE, the kernel's EFBIG as a full disk
    would give ENOSPC) cuts the third record in the middle: exit 2, a one-paragraph error naming
    the file, the two complete records kept, no torn line; --resume then finishes the job."""
    out = tmp_path / "r.jsonl"
    reference = tmp_path / "ref.jsonl"
    subprocess.run(_predict_cmd(tiny_model, models_dir, clips, reference), check=True,
                   capture_output=True, timeout=300)  # fmt: skip
    sizes = [len(line) + 1 for line in reference.read_text().splitlines()]
    limit = sizes[0] + sizes[1] + sizes[2] // 2

    def limited() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    proc = subprocess.run(_predict_cmd(tiny_model, models_dir, clips, out), preexec_fn=limited,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    err = " ".join(proc.stderr.split())
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert f"writing --out {out} failed" in err and "--resume" in err and "Traceback" not in err
    assert out.read_bytes().endswith(b"\n") and len(records(out)) == 2
    proc = subprocess.run(_predict_cmd(tiny_model, models_dir, clips, out, "--resume"),
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    got = {r["video"]: r["p_fake"] for r in records(out)}
    assert got == {r["video"]: r["p_fake"] for r in records(reference)}


def test_killed_jobs_and_replaced_inputs_lose_mix_or_double_nothing(tiny_model, models_dir,
                                                                      clips, tmp_path):  # fmt: skip
    """Kill `dfe predict` with SIGKILL at random moments, resume it each time, replace an input
    between two runs: the file ends with exactly one record per input, each equal to what an
    uninterrupted job gives for the file as it is at the end."""
    rng = random.Random(29)
    work = tmp_path / "in"
    work.mkdir()
    inputs = []
    for i in range(8):
        inputs.append(Path(shutil.copy(clips[i % 4], work / f"v{i}.mp4")))
    out = tmp_path / "r.jsonl"
    first = True
    for round_ in range(4):
        cmd = _predict_cmd(tiny_model, models_dir, [work], out, *([] if first else ["--resume"]))
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        time.sleep(rng.uniform(2.0, 6.0))
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
        first = first and not out.exists()
        if round_ == 1:  # replace one input between runs (new content, same name)
            (work / "v1.mp4").unlink()
            shutil.copy(clips[2], work / "v1.mp4")
        if out.exists():
            assert all(line.strip() for line in out.read_text().splitlines())
    cmd = _predict_cmd(tiny_model, models_dir, [work], out, *([] if first else ["--resume"]))
    subprocess.run(cmd, check=True, capture_output=True, timeout=600)
    reference = tmp_path / "ref.jsonl"
    subprocess.run(_predict_cmd(tiny_model, models_dir, [work], reference), check=True,
                   capture_output=True, timeout=600)  # fmt: skip
    got = records(out)
    assert sorted(r["video"] for r in got) == sorted(str(p) for p in inputs)  # one each
    want = {r["video"]: r for r in records(reference)}
    for r in got:
        assert r["status"] == "ok"
        assert r["p_fake"] == want[r["video"]]["p_fake"], r["video"]
        assert r["provenance"]["input"] == want[r["video"]]["provenance"]["input"]


def test_csv_output_keeps_types_for_resume_and_reproduce(dfe, clips, tmp_path):
    out = tmp_path / "r.csv"
    assert dfe("predict", *clips[:2], "--out", out)[0] == 0
    rows = list(csv.DictReader(out.open()))
    assert json.loads(rows[0]["provenance"])["settings"]["seq_len"] == 3
    (first, _second) = records(out)
    assert isinstance(first["p_fake"], float) and isinstance(first["frames"], int)
    assert first["provenance"]["input"]["path"] == str(clips[0].resolve())


# ------------------------------------------------------------------ found by a breaker pass


def test_two_jobs_never_write_one_output(dfe, clips, tmp_path):
    from engine.batch import OutputLock

    out = tmp_path / "r.jsonl"
    with OutputLock(out):  # another job holds it
        code, err = dfe("predict", clips[0], "--out", out)
        assert code == 2 and "being written by another dfe job" in err
        code, err = dfe("score", clips[0], "--out", tmp_path / "s.jsonl")
        assert code == 0  # another output: not blocked
    assert not out.exists() or out.stat().st_size == 0
    assert dfe("predict", clips[0], "--out", out)[0] == 0  # the lock went with its job
    assert not (tmp_path / ".r.jsonl.lock").exists()


def test_a_symlinked_output_stays_a_link_and_keeps_its_permissions(dfe, clips, tmp_path):
    target = tmp_path / "store" / "results.jsonl"
    target.parent.mkdir()
    link = tmp_path / "link.jsonl"
    link.symlink_to(target)
    assert dfe("predict", clips[0], "--out", link)[0] == 0
    os.chmod(target, 0o640)
    assert dfe("predict", clips[1], "--out", link, "--overwrite")[0] == 0
    assert link.is_symlink() and [Path(r["video"]).name for r in records(target)] == ["b.mp4"]
    assert (target.stat().st_mode & 0o777) == 0o640
    assert dfe("predict", clips[1], tmp_path / "late.mp4", "--out", link, "--resume")[0] == 3
    shutil.copy(clips[2], tmp_path / "late.mp4")  # the error record is rewritten on resume
    assert dfe("predict", clips[1], tmp_path / "late.mp4", "--out", link, "--resume")[0] == 0
    assert link.is_symlink() and (target.stat().st_mode & 0o777) == 0o640
    assert [r["status"] for r in records(target)] == ["ok", "ok"]


def test_a_score_folder_with_other_files_is_never_replaced(dfe, clips, tmp_path):
    out = tmp_path / "res.parquet"
    out.mkdir()
    shutil.copy(clips[0], out / "precious.mp4")
    (out / "readme.txt").write_text("mine")
    for flag in ("--overwrite", "--resume"):
        code, err = dfe("score", clips[1], "--out", out, flag)
        assert code == 2 and "not scoring records" in err and "precious.mp4" in err
    assert sorted(p.name for p in out.iterdir()) == ["precious.mp4", "readme.txt"]


def test_a_path_that_now_names_another_file_is_scored_again(dfe, clips, tmp_path):
    work = tmp_path / "sw"
    work.mkdir()
    shutil.copy(clips[0], work / "a.mp4")
    out = tmp_path / "r.jsonl"
    assert dfe("predict", work, "--out", out)[0] == 0
    (work / "a.mp4").unlink()
    (work / "a.mp4").symlink_to(clips[3])  # the same name, another video
    code, err = dfe("predict", work, "--out", out, "--resume")
    assert code == 0 and "1 input(s) changed since" in err
    (rec,) = records(out)
    assert rec["provenance"]["input"]["path"] == str(clips[3].resolve())


def test_resume_with_hash_rescores_records_made_without_it(dfe, clips, tmp_path):
    v = tmp_path / "v.mp4"
    shutil.copy(clips[0], v)
    out = tmp_path / "r.jsonl"
    assert dfe("predict", v, "--out", out)[0] == 0
    code, err = dfe("predict", v, "--out", out, "--resume", "--hash")
    assert code == 0 and "1 input(s) changed since" in err  # content unknown: scored again
    (rec,) = records(out)
    assert rec["provenance"]["input"]["sha256"]
    code, err = dfe("predict", v, "--out", out, "--resume", "--hash")
    assert code == 0 and "1 input(s) already in" in err


def test_every_entry_of_a_folder_is_accounted_for(dfe, clips, tmp_path):
    d = tmp_path / "in"
    (d / ".hidden").mkdir(parents=True)
    shutil.copy(clips[0], d / "a.mp4")
    shutil.copy(clips[1], d / ".hidden" / "h.mp4")
    (d / "dangling.mp4").symlink_to(tmp_path / "nowhere.mp4")
    os.mkfifo(d / "fifo.mp4")
    code, err = dfe("predict", d, "--out", tmp_path / "r.jsonl")
    assert code == 0, err
    assert "skipped (a hidden folder, not searched): .hidden" in err
    assert "skipped (a link to nothing): dangling.mp4" in err
    assert "skipped (not a regular file): fifo.mp4" in err
    assert "1/1 scored, 0 errors, 3 skipped" in err


def test_killed_jobs_temporary_files_are_removed_by_the_next(dfe, clips, tmp_path):
    out = tmp_path / "r.jsonl"
    stale = tmp_path / ".r.jsonl.999999999.partial"  # no such process
    stale.write_text("half a job")
    mine = tmp_path / f".r.jsonl.{os.getpid()}.partial"  # a live process's: kept
    mine.write_text("running")
    assert dfe("predict", clips[0], "--out", out)[0] == 0
    assert not stale.exists() and mine.exists()


@pytest.mark.parametrize(
    ("flags", "message"),
    [(["--input-size", "100000"], "--input-size must be <= 4096"),
     (["--margin", "1e308"], "--margin must be <= 10")],
)  # fmt: skip
def test_option_values_beyond_what_can_run_are_refused(dfe, clips, tmp_path, flags, message):
    code, err = dfe("predict", clips[0], "--out", tmp_path / "r.jsonl", *flags)
    assert code == 2 and message in err


def test_reproduce_checks_every_field_a_reader_acts_on(dfe, clips, tmp_path, capsys):
    out = tmp_path / "r.jsonl"
    assert dfe("predict", *clips[:2], "--out", out)[0] == 0
    recs = [json.loads(line) for line in out.read_text().splitlines()]

    def reproduce(edited: list[dict]) -> tuple[int, str]:
        path = tmp_path / "edited.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in edited))
        capsys.readouterr()
        code = main(["reproduce", str(path)])
        got = capsys.readouterr()
        return code, " ".join((got.out + got.err).split())

    label = [dict(recs[0], label="REAL" if recs[0]["label"] == "FAKE" else "FAKE"), recs[1]]
    code, text = reproduce(label)
    assert code == 1 and "label:" in text
    frames = [dict(recs[0], frame_p_fake=[0.0] * len(recs[0]["frame_p_fake"])), recs[1]]
    assert reproduce(frames)[0] == 1
    incomplete = json.loads(json.dumps(recs[0]))
    del incomplete["provenance"]["settings"]["margin"]
    code, text = reproduce([incomplete, recs[1]])
    assert code == 2 and "provenance incomplete: no margin" in text
    code, text = reproduce([dict(recs[0], p_fake="0.5"), recs[1]])
    assert code == 2 and "p_fake is not a number" in text and "Traceback" not in text
    only_errors = [{"video": "x.mp4", "status": "error", "error": "no"}]
    code, text = reproduce(only_errors)
    assert code == 2 and "no ok record to reproduce" in text


def test_a_score_folder_file_torn_by_a_kill_keeps_its_complete_records(dfe, clips, tmp_path):
    out = tmp_path / "s.jsonl"
    assert dfe("score", *clips[:3], "--out", out)[0] == 0
    (part,) = out.glob("*.json")
    text = part.read_text()
    part.write_text(text[: len(text) - 30])  # the last record torn
    code, err = dfe("score", *clips[:3], "--out", out, "--resume")
    assert code == 0 and "2 input(s) already in" in err and "1 damaged file(s)" in err
    from engine import distributed

    assert sorted(Path(r["video"]).name for r in distributed.read_records(out)) == [
        "a.mp4",
        "b.mp4",
        "c.mp4",
    ]
