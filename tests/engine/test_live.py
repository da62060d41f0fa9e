"""Live video (issue 34): ``dfe watch`` on a live TCP MPEG-TS stream gives rolling per-person
verdicts whose frames, boxes and scores are ``Engine.predict``'s on the same frames and ends
cleanly with the stream; ``Engine.stream`` on the caller's frames; a dropped network source is
reopened and the gap reported; a slow scorer drops frames from a bounded queue and counts them;
SIGINT and SIGTERM end a watch with its summary (exit 0)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from core.errors import ArtifactNotFoundError, InvalidInputError
from engine.live import LiveOptions, parse_ffmpeg_options
from preprocess.face_extraction import OnlineTracker

FFMPEG = shutil.which("ffmpeg")
needs_cli = pytest.mark.skipif(FFMPEG is None, reason="needs Debian's ffmpeg CLI (make setup)")
REPO = Path(__file__).resolve().parents[2]
FPS = 24  # the clip's rate


@pytest.fixture(scope="module")
def ts_clip(tmp_path_factory, shared_dir) -> Path:
    """Three seconds of the 480p real clip as H.264 in MPEG-TS (a keyframe every 12 frames):
    served with ``-c copy``, the stream carries exactly this file's pictures."""
    if FFMPEG is None:
        pytest.skip("needs Debian's ffmpeg CLI (make setup)")
    out = tmp_path_factory.mktemp("live") / "clip.ts"
    subprocess.run([FFMPEG, "-loglevel", "error", "-y", "-t", "3", "-i",
                    str(shared_dir / "videos" / "pair480p_real.mp4"), "-c:v", "libx264",
                    "-preset", "veryfast", "-g", "12", "-an", "-f", "mpegts", str(out)],
                   check=True, timeout=120)  # fmt: skip
    return out


@pytest.fixture(scope="module")
def ts_frames(ts_clip) -> dict[int, np.ndarray]:
    from preprocess.video import iter_frames

    return dict(iter_frames(ts_clip))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _listening(port: int) -> bool:
    """Whether something listens on 127.0.0.1:``port`` (read from /proc: connecting would be
    the one client an ``ffmpeg ... ?listen=1`` server serves)."""
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        if int(local.split(":")[1], 16) == port and state == "0A":
            return True
    return False


def _serve(clip: Path, port: int) -> subprocess.Popen:
    """``ffmpeg -re`` serving ``clip`` as a live MPEG-TS stream on tcp://127.0.0.1:port."""
    proc = subprocess.Popen([FFMPEG, "-loglevel", "error", "-re", "-i", str(clip), "-c", "copy",
                             "-f", "mpegts", f"tcp://127.0.0.1:{port}?listen=1"])  # fmt: skip
    deadline = time.monotonic() + 10
    while not _listening(port):
        assert proc.poll() is None and time.monotonic() < deadline, "ffmpeg did not listen"
        time.sleep(0.02)
    return proc


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout=10)


def _common(tiny_model, models_dir) -> list[str]:
    return ["--model", str(tiny_model), "--backend", "ort", "--models", models_dir,
            "--no-download"]  # fmt: skip


def _check_like_predict(engine, line: dict, frames: dict[int, np.ndarray]) -> None:
    """A verdict line's boxes, per-frame p_fake, calibrated p_fake and verdict are those of
    ``Engine.predict`` on the same frames."""
    pred = engine.predict([frames[i] for i in line["frame_indices"]])
    assert pred.frame_indices == list(range(line["frames"]))
    assert pred.boxes == line["boxes"]
    assert line["frame_p_fake"] == pytest.approx(pred.frame_p_fake, abs=1e-6)
    assert line["p_fake_calibrated"] == pytest.approx(pred.p_fake_calibrated, abs=1e-6)
    assert (line["verdict"], line["reasons"]) == (pred.verdict, pred.reasons)
    assert line["quality"] == pred.quality


# --------------------------------------------------------------------------- units


def test_options_are_checked():
    with pytest.raises(InvalidInputError, match="window"):
        LiveOptions(window=0.5, hop=1.0)
    with pytest.raises(InvalidInputError, match="per-frame"):
        LiveOptions(faces="per-frame")
    with pytest.raises(InvalidInputError, match="queue"):
        LiveOptions(queue=0)
    with pytest.raises(InvalidInputError, match="fps"):
        LiveOptions(fps=float("nan"))
    assert parse_ffmpeg_options(["rtsp_transport=tcp", "a=b=c"]) == {
        "rtsp_transport": "tcp",
        "a": "b=c",
    }
    with pytest.raises(InvalidInputError, match="KEY=VALUE"):
        parse_ffmpeg_options(["nothing"])
    with pytest.raises(InvalidInputError, match="probesize is given twice"):
        parse_ffmpeg_options(["probesize=abc", "probesize=5000000"])
    # bounded: a hop of 1e-12 s would be a verdict loop, a window of 1e9 s all frames in memory
    for bad in ({"hop": 1e-12}, {"window": 1e9}, {"queue": 10**9}, {"fps": 1e6}):
        with pytest.raises(InvalidInputError, match=next(iter(bad))):
            LiveOptions(**bad)


def test_a_new_picture_size_starts_new_people():
    """A spliced feed (480p then 720p) does not continue a person across the size change."""
    from preprocess.scrfd import Face

    tracker = OnlineTracker()
    small = Face(box=(300.0, 100.0, 380.0, 200.0), score=0.9)
    scaled = Face(box=(450.0, 150.0, 570.0, 300.0), score=0.9)  # the same place, 1.5x
    assert tracker.update(0, [small], (480, 854, 3)) == [0]
    assert tracker.update(1, [small], (480, 854, 3)) == [0]
    assert tracker.update(2, [scaled], (720, 1280, 3)) == [1]
    assert tracker.update(3, [scaled], (720, 1280, 3)) == [1]


def test_a_caller_clock_starts_at_zero_and_gaps_cost_nothing(tiny_engine):
    """Times as a call's clock gives them (epoch seconds, negative, a jump of a day) are
    stream seconds from the first frame, and a gap is crossed in one step."""
    black = np.zeros((64, 64, 3), np.uint8)
    for start in (1.7e9, -100.0):
        times = [start + i / 4 for i in range(8)] + [start + 86400 + i / 4 for i in range(8)]
        events = [e.to_record() for e in tiny_engine.stream((t, black) for t in times)]
        lines = [e for e in events if e["event"] == "verdict"]
        summary = events[-1]
        assert summary["event"] == "summary" and summary["end"] == "eof"
        assert lines and lines[0]["time"] < 5 and max(x["time"] for x in lines) < 86400 + 5


def test_an_unknown_input_format_is_a_source_error(tiny_engine, shared_dir):
    clip = shared_dir / "videos" / "pair480p_real.mp4"
    with pytest.raises(OSError, match="notaformat"):
        for _ in tiny_engine.stream(str(clip), format="notaformat"):
            pass


def test_online_tracker_links_as_track_faces_does():
    """Ids given frame by frame are the tracks of one pass over the whole sequence: two men
    side by side, one leaves and comes back at his place, a third appears."""
    from preprocess.scrfd import Face
    from preprocess.tracking import track_faces

    def face(x: float) -> Face:
        return Face(box=(x, 100.0, x + 80.0, 200.0), score=0.9)

    frames = []
    for i in range(30):
        faces = [face(100 + 2 * i)]
        if not 10 <= i < 16:
            faces.append(face(400 - i))
        if i >= 20:
            faces.append(face(700))
        frames.append((i, faces))
    tracker = OnlineTracker(history=64)
    online = {
        (i, id(f)): pid
        for i, fs in frames
        for f, pid in zip(fs, tracker.update(i, fs, (480, 854, 3)))
    }
    batch = {
        (i, id(f)): t.track_id
        for t in track_faces(frames)
        for i, f in zip(t.frame_indices, t.faces)
    }
    assert online == batch
    assert sorted(set(online.values())) == [0, 1, 2]


# --------------------------------------------------------------------------- the API


def test_stream_of_frames_gives_rolling_verdicts_like_predict(tiny_engine, shared_dir):
    from preprocess.video import read_video

    clip = read_video(shared_dir / "videos" / "pair480p_real.mp4", 72)  # 3 s at 24 fps
    frames = dict(enumerate(clip.frames))
    events = list(
        tiny_engine.stream(
            ((i / FPS, f) for i, f in enumerate(clip.frames)), fps=4, window=2, hop=1, seq_len=4
        )
    )
    records = [e.to_record() for e in events]
    assert [r["event"] for r in records[:1]] == ["start"] and records[-1]["event"] == "summary"
    lines = [r for r in records if r["event"] == "verdict"]
    # a hop every second of stream time, then the last frames'; one person, track 0
    assert [r["time"] for r in lines] == [1.0, 2.0, 2.75]
    assert {r["track"] for r in lines} == {0}
    for line in lines:
        assert line["frames"] == min(4, line["present"]) and line["sampled"] <= 8
        assert line["end"] == line["time"] and line["end"] - line["start"] < 2.0
        assert line["frame_times"] == [i / FPS for i in line["frame_indices"]]
        assert line["latency_ms"] >= 0 and line["dropped"] == 0
        _check_like_predict(tiny_engine, line, frames)
    summary = records[-1]
    assert summary["end"] == "eof" and summary["error"] is None
    assert summary["frames_read"] == 72 and summary["frames_dropped"] == 0
    assert summary["frames_sampled"] == summary["frames_scored"] == 12  # 0, 0.25, ... 2.75 s
    assert summary["people"] == 1 and summary["verdicts"][lines[0]["verdict"]] == 3
    assert summary["buffer_max"] <= 8  # the window's frames, not the stream's
    assert summary["latency_ms"]["median"] is not None

    # bare frames with their rate give the same lines
    again = [e.to_record() for e in tiny_engine.stream(iter(clip.frames), input_fps=FPS, fps=4,
                                                       window=2, hop=1, seq_len=4)]  # fmt: skip
    same = [r for r in again if r["event"] == "verdict"]
    keys = ("time", "frame_indices", "boxes", "frame_p_fake", "p_fake_calibrated", "verdict")
    assert [{k: r[k] for k in keys} for r in same] == [{k: r[k] for k in keys} for r in lines]


def test_stream_errors_are_raised_after_the_summary(tiny_engine):
    frames = [np.zeros((64, 64, 3), np.uint8)] * 3
    stream = tiny_engine.stream(iter(frames))  # bare frames without their rate
    seen = []
    with pytest.raises(InvalidInputError, match="input_fps"):
        for event in stream:
            seen.append(event.to_record())
    assert seen[-1]["event"] == "summary" and seen[-1]["end"] == "error"
    assert "input_fps" in seen[-1]["error"]
    with pytest.raises(ArtifactNotFoundError):
        tiny_engine.stream("/nonexistent/clip.mp4")


def test_a_failing_scorer_ends_with_the_summary_then_raises(tiny_engine, monkeypatch):
    def broken(frames):
        raise RuntimeError("detector failed")

    frames = ((i / 4, np.zeros((64, 64, 3), np.uint8)) for i in range(8))
    stream = tiny_engine.stream(frames)  # warmed up: the detector fails on the stream's frames
    monkeypatch.setattr(tiny_engine.detector, "detect", broken)
    seen = []
    with pytest.raises(RuntimeError, match="detector failed"):
        for event in stream:
            seen.append(event.to_record())
    assert seen[-1]["event"] == "summary" and seen[-1]["end"] == "error"
    assert seen[-1]["error"] == "RuntimeError: detector failed"


def test_a_source_that_never_opens_is_an_error(tiny_engine):
    port = _free_port()  # nothing listens there: refused at once
    events = []
    with pytest.raises(OSError, match="cannot be opened"):
        for event in tiny_engine.stream(f"tcp://127.0.0.1:{port}", reconnect=0, timeout=2):
            events.append(event.to_record())
    assert events[-1]["event"] == "summary" and events[-1]["end"] == "error"


def test_a_slow_scorer_drops_frames_from_a_bounded_queue(tiny_engine, shared_dir, monkeypatch):
    from preprocess.video import read_video

    clip = read_video(shared_dir / "videos" / "pair480p_real.mp4", 48)
    detector = tiny_engine.detector
    fast = detector.detect

    def slow(frames):
        time.sleep(0.15)  # a scorer that manages about 6 batches per second
        return fast(frames)

    monkeypatch.setattr(detector, "detect", slow)
    # 2 s at 24 fps, released at their times, every frame sampled: far more than it scores
    stream = tiny_engine.stream(((i / FPS, f) for i, f in enumerate(clip.frames)),
                                fps=FPS, window=1, hop=0.5, queue=2, realtime=True)  # fmt: skip
    records = [e.to_record() for e in stream]
    summary = records[-1]
    lines = [r for r in records if r["event"] == "verdict"]
    print("drops:", {k: summary[k] for k in ("frames_read", "frames_sampled", "frames_scored",
                                             "frames_dropped", "queue_max")})  # fmt: skip
    assert summary["end"] == "eof" and summary["frames_read"] == 48
    assert summary["frames_dropped"] > 0
    assert summary["frames_scored"] + summary["frames_dropped"] == summary["frames_sampled"] == 48
    assert summary["queue_max"] <= 2  # never more than --queue frames waiting
    assert summary["buffer_max"] <= FPS + 1  # one window of frames at most
    drops = [r["dropped"] for r in lines]
    assert lines and drops == sorted(drops) and drops[-1] <= summary["frames_dropped"]
    assert drops[-1] > 0  # the lines say so as it happens


# --------------------------------------------------------------------------- network


@needs_cli
def test_watch_over_tcp_scores_frames_as_predict_does(ts_clip, ts_frames, tiny_engine,
                                                      tiny_model, models_dir, capsys):  # fmt: skip
    from engine.cli import main

    port = _free_port()
    server = _serve(ts_clip, port)
    try:
        rc = main(["watch", f"tcp://127.0.0.1:{port}", "--reconnect", "0", "--timeout", "10",
                   *_common(tiny_model, models_dir)])  # fmt: skip
    finally:
        _stop(server)
    records = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert rc == 0
    assert [r["event"] for r in records[:2]] == ["start", "opened"]
    assert records[1]["format"] == "mpegts" and records[1]["codec"] == "h264"
    lines = [r for r in records if r["event"] == "verdict"]
    summary = records[-1]
    print("tcp:", [(r["time"], r["frames"], r["latency_ms"]) for r in lines], summary["latency_ms"])
    assert summary["event"] == "summary" and summary["end"] == "eof"
    assert summary["frames_read"] == len(ts_frames)  # every frame of the stream was read
    assert len(lines) >= 2 and {r["track"] for r in lines} == {0}
    times = [r["time"] for r in lines]
    assert times == sorted(times) and times[-1] >= 2.5
    for line in lines:
        assert line["latency_ms"] > 0
        assert line["frame_times"] == pytest.approx([i / FPS for i in line["frame_indices"]])
        _check_like_predict(tiny_engine, line, ts_frames)
    assert summary["latency_ms"]["median"] > 0 and summary["latency_ms"]["p95"] > 0


@needs_cli
def test_a_dropped_stream_is_reopened_and_the_gap_reported(ts_clip, tiny_engine):
    port = _free_port()
    server = _serve(ts_clip, port)
    stream = tiny_engine.stream(f"tcp://127.0.0.1:{port}", reconnect=3, timeout=5)
    watchdog = threading.Timer(40, stream.stop)
    watchdog.start()
    records: list[dict] = []
    try:
        for event in stream:
            record = event.to_record()
            records.append(record)
            kinds = [r["event"] for r in records]
            if (
                record["event"] == "verdict"
                and server.returncode is None
                and kinds.count("verdict") == 1
            ):
                _stop(server)  # the stream drops mid-way ...
                server = _serve(ts_clip, port)  # ... and comes back on the same port
            if record["event"] == "verdict" and "reconnected" in kinds:
                stream.stop()
    finally:
        watchdog.cancel()
        _stop(server)
    kinds = [r["event"] for r in records]
    print("reconnect:", [r for r in records if r["event"] in ("disconnected", "retry",
                                                              "reconnected")])  # fmt: skip
    assert "disconnected" in kinds and "reconnected" in kinds
    assert kinds.index("disconnected") < kinds.index("reconnected")
    back = records[kinds.index("reconnected")]
    assert back["gap_s"] > 0 and back["format"] == "mpegts"
    lines = [r for r in records if r["event"] == "verdict"]
    before = [r for r in lines if records.index(r) < kinds.index("disconnected")]
    after = [r for r in lines if records.index(r) > kinds.index("reconnected")]
    assert before and after
    # stream time goes on across the gap, frame indices keep counting
    assert after[0]["time"] > before[-1]["time"]
    assert min(after[0]["frame_indices"][-1:]) > max(before[-1]["frame_indices"])
    summary = records[-1]
    assert summary["event"] == "summary" and summary["end"] == "stopped"
    assert summary["reconnections"] == 1


# --------------------------------------------------------------------------- signals


@needs_cli
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_ends_the_watch_with_its_summary(sig, ts_clip, tiny_model, models_dir):
    """SIGTERM on a watch of standard input fed live by ffmpeg, SIGINT on a file read at its
    own pace: the summary line, exit 0."""
    cmd = [sys.executable, "-m", "engine.cli", "watch", *_common(tiny_model, models_dir)]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    feeder = None
    if sig == signal.SIGTERM:
        read_end, write_end = os.pipe()
        proc = subprocess.Popen([*cmd, "-"], stdin=read_end, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=env, cwd=REPO)  # fmt: skip
        os.close(read_end)
    else:
        proc = subprocess.Popen([*cmd, str(ts_clip), "--realtime"], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=env, cwd=REPO)  # fmt: skip
    try:
        assert json.loads(proc.stdout.readline())["event"] == "start", proc.stderr.read()
        if sig == signal.SIGTERM:  # fed live once the model is loaded, the clip three times
            feeder = subprocess.Popen([FFMPEG, "-loglevel", "error", "-re", "-stream_loop", "2",
                                       "-i", str(ts_clip), "-c", "copy", "-f", "mpegts", "-"],
                                      stdout=write_end)  # fmt: skip
            os.close(write_end)
        first = None
        for raw in proc.stdout:
            record = json.loads(raw)
            if record["event"] == "verdict":
                first = record
                break
        assert first is not None, proc.stderr.read()
        proc.send_signal(sig)
        rest, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
        if feeder is not None:
            _stop(feeder)
    records = [json.loads(x) for x in rest.splitlines()]
    assert proc.returncode == 0, err
    summary = records[-1]
    assert summary["event"] == "summary" and summary["end"] == "stopped", summary
    assert summary["frames_read"] > 0 and summary["lines"] >= 1
    assert summary["stream_s"] < 2.9  # it stopped before the clip's end
    assert "Traceback" not in err


def test_a_sequence_head_model_runs_its_head_over_each_window(tmp_path, models_dir, shared_dir):
    """The sequence variant keeps each face's features and runs its head over the frames of
    each window: the lines are still ``Engine.predict``'s on those frames."""
    from engine.api import Engine
    from preprocess.video import read_video
    from tests.tiny_model import make_tiny_model

    model = make_tiny_model(tmp_path / "seq", variant="sequence", reduce="last")
    engine = Engine.load(model, backend="ort", models_dir=models_dir, download=False)
    clip = read_video(shared_dir / "videos" / "dfdc_like_fake.mp4", 60)  # 2 s at 29.97 fps
    frames = dict(enumerate(clip.frames))
    stream = engine.stream(iter(clip.frames), input_fps=30000 / 1001, fps=4, window=2, hop=1,
                           seq_len=6)  # fmt: skip
    lines = [e.to_record() for e in stream if e.to_record()["event"] == "verdict"]
    assert len(lines) == 2 and all(r["frames"] == 6 for r in lines[1:])
    for line in lines:
        _check_like_predict(engine, line, frames)


def test_an_ffmpeg_option_ffmpeg_does_not_know_is_refused_before_reading(tiny_engine, shared_dir):
    """FFmpeg would ignore the misspelt name; the watch refuses it, naming the right one."""
    clip = shared_dir / "videos" / "pair480p_real.mp4"
    with pytest.raises(InvalidInputError, match="did you mean rtsp_transport") as info:
        for event in tiny_engine.stream(str(clip), ffmpeg_options={"rtsp_tranport": "tcp"}):
            assert event.to_record()["event"] != "verdict"
    assert "pair480p_real.mp4" in str(info.value) and "--option" in str(info.value)


def test_watch_refuses_a_removed_ffmpeg_option(tiny_model, models_dir, shared_dir, capsys):
    from engine.cli import main

    clip = shared_dir / "videos" / "pair480p_real.mp4"
    args = ["watch", str(clip), "--option", "stimeout=5000000"]
    rc = main([*args, *_common(tiny_model, models_dir)])
    err = capsys.readouterr().err
    assert rc != 0 and "'stimeout' (removed: use timeout" in err, err[-2000:]


def test_an_ffmpeg_option_value_ffmpeg_refuses_is_named(tiny_engine, shared_dir):
    """FFmpeg's EINVAL for a bad value: the message names the options, not --format."""
    clip = shared_dir / "videos" / "pair480p_real.mp4"
    options = {"probesize": "abc", "headers": "Authorization: Bearer SECRET"}
    for value_error in ({"probesize": "abc"}, {"probesize": "-1"}):  # EINVAL, ERANGE
        with pytest.raises(OSError, match="check --option probesize, headers") as info:
            for _ in tiny_engine.stream(str(clip), ffmpeg_options={**options, **value_error}):
                pass
        assert "--format" not in str(info.value)
        assert "SECRET" not in str(info.value)  # values are not repeated: they may be secrets


@pytest.mark.parametrize(
    "bad,match",
    [
        ("threads=2", "mapping"),
        ([("threads", "2")], "mapping"),
        ({"": "x"}, "needs a name"),
        ({"threads\0zzz": "2"}, "needs a name"),
        ({1: "2"}, "needs a name"),
        ({"probesize": b"5000000"}, "or number value"),
        ({"seekable": True}, "or number value"),
        ({"probesize": ["1"]}, "or number value"),
        ({"user_agent": "a\0b"}, "without NUL"),  # C would cut the value there
    ],
)
def test_ffmpeg_options_of_the_wrong_type_are_refused(bad, match):
    with pytest.raises(InvalidInputError, match=match):
        LiveOptions(ffmpeg_options=bad)


def test_ffmpeg_options_for_the_caller_s_frames_are_refused(tiny_engine):
    black = np.zeros((64, 64, 3), np.uint8)
    with pytest.raises(InvalidInputError, match="sources FFmpeg opens"):
        tiny_engine.stream(iter([(0.0, black)]), ffmpeg_options={"probesize": "32"})


@pytest.mark.parametrize(
    "url,kwargs,match",
    [
        ("srt://127.0.0.1:9", {}, "has no 'srt' protocol; its input protocols: .*tcp"),
        ("tcp://127.0.0.1", {}, "Invalid argument"),  # no port: FFmpeg's EINVAL
        ("RTSP://127.0.0.1:9/x", {}, "lower case only: write rtsp://"),
        ("tcp://127.0.0.1:9", {"format": "nosuchfmt"}, "no container format"),
        ("tcp://127.0.0.1:9", {"ffmpeg_options": {"user_agent": "a\udcffb"}}, "not valid text"),
    ],
)
def test_a_network_source_that_cannot_open_whatever_the_wait_is_not_retried(
    tiny_engine, url, kwargs, match
):
    import av

    from preprocess.video.ffmpeg_options import missing_protocol

    if url.startswith("srt:") and missing_protocol(av, url) is None:
        pytest.skip("this PyAV's FFmpeg has SRT")
    events = []
    with pytest.raises(OSError, match=match):
        for event in tiny_engine.stream(url, reconnect=3, timeout=2, **kwargs):
            events.append(event.to_record())
    assert [e["event"] for e in events if e["event"] == "retry"] == []
    assert events[-1]["event"] == "summary" and events[-1]["end"] == "error"


def test_a_camera_password_and_url_tokens_never_reach_the_lines():
    from engine.live import redact_url

    assert redact_url("rtsp://admin:SECRETPW@10.0.0.5:554/s") == "rtsp://admin:***@10.0.0.5:554/s"
    assert redact_url("rtsp://admin@10.0.0.5/s") == "rtsp://admin@10.0.0.5/s"  # no password
    got = redact_url("https://cdn.example/live.m3u8?token=SECRETTOK&quality=hd&X-Amz-Signature=S")
    assert "SECRET" not in got and "quality=hd" in got and got.count("***") == 2
    assert redact_url("tcp://127.0.0.1:9000") == "tcp://127.0.0.1:9000"


def test_a_watch_with_a_password_in_the_url_does_not_print_it(tiny_engine):
    port = _free_port()  # nothing listens there: refused at once
    events = []
    with pytest.raises(OSError) as info:
        for event in tiny_engine.stream(
            f"rtsp://admin:SECRETPW@127.0.0.1:{port}/x", reconnect=0, timeout=2
        ):
            events.append(event.to_record())
    assert events and "SECRETPW" not in json.dumps(events) and "SECRETPW" not in str(info.value)
    assert "admin:***@" in json.dumps(events)


def test_a_file_url_is_a_file(tiny_engine, shared_dir):
    clip = shared_dir / "videos" / "pair480p_real.mp4"
    tiny_engine.stream(f"file://{clip}").stop()  # found: no error
    with pytest.raises(ArtifactNotFoundError, match="does not exist"):
        tiny_engine.stream(f"file://{clip}.missing")
