"""The page's live mode over its WebSocket (``/api/v1/live``, engine/server/live_ws.py): the
lines are ``Engine.stream``'s on the same decoded JPEG frames (the socket adds nothing); a slow
scorer with a tiny queue drops frames and counts them, the queues never hold more than their
capacity; the rate limit drops frames unread; oversized frames, malformed messages and bad
settings end the session with a clear error and the right close code; sessions beyond the limit,
cross-origin pages and a server with live mode off are refused; an idle client is ended; the
server's shutdown ends open sessions cleanly; the upload page carries the live section."""

from __future__ import annotations

import json
import math
import struct
import threading
import time

import numpy as np
import pytest

from engine.server.live_ws import LiveLimits, decode_jpeg, jpeg_size, pack_frame

FPS = 24  # the clip's rate
FAST = LiveLimits(max_fps=1000)  # no rate limit in the way


@pytest.fixture(scope="module")
def clip_frames(shared_dir) -> list[np.ndarray]:
    """The first 2 s of the 480p real clip (48 BGR frames at 24 fps)."""
    from preprocess.video import read_video

    return read_video(shared_dir / "videos" / "pair480p_real.mp4", 48).frames


def _jpeg(image: np.ndarray, quality: int = 90, **flags: int) -> bytes:
    import cv2

    params = [cv2.IMWRITE_JPEG_QUALITY, quality]
    for k, v in flags.items():
        params += [getattr(cv2, k), v]
    ok, buf = cv2.imencode(".jpg", image, params)
    assert ok
    return buf.tobytes()


@pytest.fixture(scope="module")
def clip_jpegs(clip_frames) -> list[tuple[float, bytes]]:
    """(capture time, JPEG) of every frame of the clip."""
    return [(i / FPS, _jpeg(f)) for i, f in enumerate(clip_frames)]


def _run(ws, settings: dict | None, frames=(), *, stop: bool = True) -> tuple[list[dict], int, str]:
    """Send ``settings`` (a dict, or nothing), the frames (``(t, jpeg)`` pairs or raw
    messages) and the stop message; every message the server sent, then its close code and
    reason."""
    from starlette.websockets import WebSocketDisconnect

    if settings is not None:
        ws.send_text(json.dumps(settings))
    for frame in frames:
        ws.send_bytes(frame if isinstance(frame, bytes) else pack_frame(*frame))
    if stop:
        ws.send_text(json.dumps({"event": "stop"}))
    records = []
    while True:
        try:
            records.append(ws.receive_json())
        except WebSocketDisconnect as exc:
            return records, exc.code, exc.reason


def _session(client, settings, frames=(), *, headers=None, stop=True):
    with client.websocket_connect("/api/v1/live", headers=headers or {}) as ws:
        return _run(ws, settings, frames, stop=stop)


def _events(records: list[dict], name: str) -> list[dict]:
    return [r for r in records if r["event"] == name]


def _no_session_threads(timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not [t for t in threading.enumerate() if t.name == "dfe-live-session"]:
            return True
        time.sleep(0.05)
    return False


# --------------------------------------------------------------------------- the lines


def test_live_lines_are_engine_stream_on_the_same_decoded_jpegs(
    make_client, serve_engine, clip_jpegs
):
    import cv2

    client = make_client(live=FAST)
    sent = clip_jpegs[::6]  # 4 frames a second, as the page sends them
    settings = {"fps": 4, "window": 1, "hop": 0.5, "seq_len": 4, "drop": False}
    records, code, reason = _session(client, settings, sent)
    assert (code, reason) == (1000, "stopped by the client")
    ready = records[0]
    assert ready["event"] == "ready" and ready["protocol"] == 1
    assert ready["settings"] == {"fps": 4.0, "window": 1.0, "hop": 0.5, "seq_len": 4,
                                 "faces": "all", "queue": 4, "drop": False}  # fmt: skip
    start = records[1]
    assert start["event"] == "start" and start["kind"] == "frames"
    assert start["fps"] == ready["sampler_fps"] == 8.0 and start["drops"] is False
    acks = _events(records, "ack")
    assert [a["frame"] for a in acks] == list(range(len(sent)))
    assert all(a["accepted"] and a["reason"] is None for a in acks)
    assert [a["time"] for a in acks] == [t for t, _ in sent]

    # the reference: Engine.stream on the same JPEGs decoded by OpenCV, the same options
    decoded = [(t, cv2.imdecode(np.frombuffer(j, np.uint8), cv2.IMREAD_COLOR)) for t, j in sent]
    reference = [
        e.to_record()
        for e in serve_engine.stream(
            iter(decoded), fps=start["fps"], window=start["window_s"], hop=start["hop_s"],
            seq_len=start["seq_len"], queue=start["queue"], live=False,
        )
    ]  # fmt: skip
    lines, expected = _events(records, "verdict"), _events(reference, "verdict")
    assert len(lines) == len(expected) >= 3
    assert [r["time"] for r in lines] == [0.5, 1.0, 1.5, 1.75]  # the hops, then the last frames
    exact = ("time", "track", "verdict", "reasons", "frames", "present", "sampled", "start",
             "end", "frame_indices", "frame_times", "boxes", "quality", "label",
             "dropped")  # fmt: skip
    for line, ref in zip(lines, expected):
        assert {k: line[k] for k in exact} == {k: ref[k] for k in exact}
        assert line["p_fake_calibrated"] == pytest.approx(ref["p_fake_calibrated"], abs=1e-6)
        assert line["p_fake"] == pytest.approx(ref["p_fake"], abs=1e-6)
        assert line["frame_p_fake"] == pytest.approx(ref["frame_p_fake"], abs=1e-6)
    summary, ref_summary = _events(records, "summary")[0], reference[-1]
    counts = ("end", "frames_read", "frames_sampled", "frames_scored", "frames_dropped", "people")
    assert {k: summary[k] for k in counts} == {k: ref_summary[k] for k in counts}
    assert summary["frames_scored"] == len(sent) and summary["end"] == "eof"
    closed = records[-1]
    assert closed["event"] == "closed" and closed["code"] == 1000
    assert closed["received"] == closed["accepted"] == len(sent)
    assert closed["dropped"] == {"rate": 0, "queue": 0} and closed["queue_max"] <= 4
    assert _no_session_threads()


def test_a_slow_scorer_with_a_tiny_queue_drops_frames_and_counts_them(
    make_client, serve_engine, clip_jpegs, monkeypatch
):
    detector = serve_engine.detector
    fast = detector.detect

    def slow(frames):
        time.sleep(0.1)
        return fast(frames)

    monkeypatch.setattr(detector, "detect", slow)
    client = make_client(live=FAST)
    # every frame of 2 s at 24 fps, sent at once: far more than a scorer of ~10 batches/s takes
    settings = {"fps": 12, "window": 1, "hop": 0.5, "queue": 1, "drop": True}
    records, code, _ = _session(client, settings, clip_jpegs)
    assert code == 1000
    summary, closed = _events(records, "summary")[0], records[-1]
    print("drops:", closed["dropped"], {k: summary[k] for k in ("frames_read", "frames_sampled",
          "frames_scored", "frames_dropped", "queue_max")})  # fmt: skip
    assert closed["received"] == closed["accepted"] == len(clip_jpegs)
    assert closed["dropped"]["rate"] == 0
    # every frame is scored or dropped, and each drop is counted where it happened
    assert summary["frames_read"] + closed["dropped"]["queue"] == len(clip_jpegs)
    assert summary["frames_scored"] + summary["frames_dropped"] == summary["frames_sampled"]
    assert summary["frames_dropped"] + closed["dropped"]["queue"] > 0
    # bounded: never more than the queue's one frame waiting, on either side of the decoder
    assert closed["queue_max"] <= 1 and summary["queue_max"] <= 1
    lines = _events(records, "verdict")
    drops = [r["dropped"] for r in lines]
    assert lines and drops == sorted(drops) and drops[-1] <= summary["frames_dropped"]
    acks = _events(records, "ack")
    assert acks[-1]["dropped"]["queue"] <= closed["dropped"]["queue"]


def test_the_rate_limit_drops_frames_before_they_are_decoded(make_client, clip_jpegs):
    client = make_client(live=LiveLimits(fps=2, max_fps=2))  # 2 frames a second, burst 2
    records, code, _ = _session(client, {"fps": 2}, clip_jpegs[:20])  # sent at once
    assert code == 1000
    acks = _events(records, "ack")
    assert len(acks) == 20 and acks[0]["accepted"] and acks[1]["accepted"]
    refused = [a for a in acks if not a["accepted"]]
    assert len(refused) >= 10 and {a["reason"] for a in refused} == {"rate"}
    closed = records[-1]
    assert closed["dropped"]["rate"] == len(refused) == 20 - closed["accepted"]
    assert _events(records, "summary")[0]["frames_read"] == closed["accepted"]
    # a client may not ask for more than the limit
    records, code, _ = _session(client, {"fps": 5}, stop=False)
    assert code == 1008 and "fps must be a number > 0 and at most 2" in records[0]["message"]


# --------------------------------------------------------------------------- refusals


def _header_only_jpeg(image: np.ndarray) -> bytes:
    """A JPEG cut after its frame header: the size reads, the image does not decode."""
    data = _jpeg(image)
    i = 2
    while data[i + 1] not in (0xC0, 0xC1, 0xC2):
        i += 2 + int.from_bytes(data[i + 2 : i + 4], "big")
    end = i + 2 + int.from_bytes(data[i + 2 : i + 4], "big")
    return data[:end] + b"\xff\xd9"


BAD_FRAMES = {
    "too many bytes": (lambda img: pack_frame(0, _jpeg(img, 100) + bytes(40_000)), 1009,
                       "over the limit of 30,000 bytes"),
    "too many pixels": (lambda img: pack_frame(0, _jpeg(np.zeros((8, 4100, 3), np.uint8))),
                        1008, "4100x8 px, over the limit of 4096 px a side"),
    "not a jpeg": (lambda img: pack_frame(0, b"GIF89a" + bytes(100)), 1007,
                   "frame 0: not a JPEG"),
    "no time": (lambda img: b"\xff\xd8\xff", 1007, "an 8-byte little-endian float64"),
    "nan time": (lambda img: pack_frame(math.nan, _jpeg(img)), 1007, "is not finite"),
    "does not decode": (lambda img: pack_frame(0, _header_only_jpeg(img)), 1007,
                        "frame 0: a JPEG that OpenCV cannot decode"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(BAD_FRAMES))
def test_bad_frames_end_the_session_with_a_clear_error(make_client, clip_frames, case):
    make, code, words = BAD_FRAMES[case]
    client = make_client(live=LiveLimits(max_fps=1000, max_bytes=30_000))
    small = clip_frames[0][::4, ::4].copy()  # 214x120: under the byte limit
    records, got, reason = _session(client, {"fps": 4}, [make(small)], stop=False)
    errors = _events(records, "error")
    assert len(errors) == 1 and words in errors[0]["message"], records
    assert "Traceback" not in errors[0]["message"]
    assert got == code and (records[-1]["event"], records[-1]["code"]) == ("closed", code)
    assert reason and reason in errors[0]["message"]
    assert _no_session_threads()


def test_times_must_not_go_back_or_jump(make_client, clip_frames):
    client = make_client(live=FAST)
    jpeg = _jpeg(clip_frames[0][::4, ::4].copy())
    records, code, _ = _session(client, {}, [(1.0, jpeg), (0.5, jpeg)], stop=False)
    message = _events(records, "error")[0]["message"]
    assert code == 1007 and "must not decrease, got 0.5 after 1.0" in message
    records, code, _ = _session(client, {}, [(0.0, jpeg), (700.0, jpeg)], stop=False)
    message = _events(records, "error")[0]["message"]
    assert code == 1007 and "over the limit of 600 s between frames" in message


BAD_MESSAGES = {
    "binary first": (None, [pack_frame(0, b"\xff\xd8")], "the first message must be text"),
    "not json": ("fps=4", [], "the settings are not JSON"),
    "not an object": ("[4]", [], "must be a JSON object"),
    "unknown key": ('{"fps": 4, "colour": 1}', [], "unknown settings ['colour']"),
    "bad faces": ('{"faces": "per-frame"}', [], "faces must be 'all' or 'main'"),
    "bad queue": ('{"queue": 99}', [], "queue must be an integer from 1 to 4"),
    "hop over window": ('{"window": 1, "hop": 2}', [], "hop must be a number > 0 and at most 1"),
    "bad drop": ('{"drop": "yes"}', [], "drop must be true or false"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(BAD_MESSAGES))
def test_malformed_messages_and_settings_are_refused(make_client, case):
    first, frames, words = BAD_MESSAGES[case]
    client = make_client()
    with client.websocket_connect("/api/v1/live") as ws:
        if first is not None:
            ws.send_text(first)
        records, code, _ = _run(ws, None, frames, stop=False)
    assert code == 1008 and records[0]["event"] == "error", records
    assert words in records[0]["message"]
    assert records[-1]["event"] == "closed" and records[-1]["code"] == 1008


def test_a_text_message_other_than_stop_ends_the_session(make_client):
    client = make_client()
    with client.websocket_connect("/api/v1/live") as ws:
        ws.send_text("{}")
        assert ws.receive_json()["event"] == "ready"
        ws.send_text('{"event": "pause"}')
        records, code, _ = _run(ws, None, stop=False)
    assert code == 1008
    assert 'must be {"event": "stop"}' in _events(records, "error")[0]["message"]
    assert _events(records, "summary")[0]["end"] in ("stopped", "eof")


def test_sessions_beyond_the_limit_are_refused(make_client, clip_jpegs):
    client = make_client(live=LiveLimits(sessions=1, max_fps=1000))
    with client.websocket_connect("/api/v1/live") as first:
        first.send_text('{"fps": 4}')
        assert first.receive_json()["event"] == "ready"
        records, code, reason = _session(client, {"fps": 4}, stop=False)
        assert code == 1013 and "all 1 live session of this server are in use" in reason
        assert records[0]["message"].endswith("try again later")
        assert client.app.state.live.active == 1
        records, code, _ = _run(first, None, clip_jpegs[:2])
        assert code == 1000
    deadline = time.monotonic() + 10
    while client.app.state.live.active and time.monotonic() < deadline:
        time.sleep(0.02)
    records, code, _ = _session(client, {"fps": 4}, clip_jpegs[:1])  # the slot is free again
    assert code == 1000 and _events(records, "ack")[0]["accepted"]


def test_cross_origin_pages_and_live_mode_off_are_refused(make_client):
    client = make_client()
    records, code, _ = _session(client, {}, headers={"origin": "http://evil.example"}, stop=False)
    assert code == 1008 and "cross-origin live sessions are refused" in records[0]["message"]
    records, code, _ = _session(client, {}, headers={"origin": "http://testserver"})
    assert code == 1000 and records[0]["event"] == "ready"  # the page's own origin
    off = make_client(live=LiveLimits(sessions=0))
    records, code, _ = _session(off, {}, stop=False)
    assert code == 1008 and "live mode is off" in records[0]["message"]


def test_a_silent_client_is_ended(make_client):
    client = make_client(live=LiveLimits(settings_timeout_s=0.3, idle_timeout_s=0.5))
    records, code, _ = _session(client, None, stop=False)
    assert code == 1008 and "no settings within 0.3 s" in records[0]["message"]
    records, code, _ = _session(client, {}, stop=False)
    assert code == 1008 and "no message for 0.5 s" in _events(records, "error")[0]["message"]
    assert client.app.state.live.active == 0 and _no_session_threads()


def test_a_client_that_goes_away_frees_its_session(make_client, clip_jpegs):
    client = make_client(live=FAST)
    with client.websocket_connect("/api/v1/live") as ws:
        ws.send_text("{}")
        assert ws.receive_json()["event"] == "ready"
        for t, jpeg in clip_jpegs[:6]:
            ws.send_bytes(pack_frame(t, jpeg))
        # the client goes without a stop; wait here for the server to let go (leaving the
        # block first makes the TestClient cancel the app, which a real server never does)
        ws.close(1001)
        deadline = time.monotonic() + 20
        while client.app.state.live.active and time.monotonic() < deadline:
            time.sleep(0.02)
    # the stream ended, its thread was joined, the slot freed
    assert client.app.state.live.active == 0
    assert _no_session_threads()


def test_server_shutdown_ends_open_sessions(make_client, clip_jpegs):
    from starlette.websockets import WebSocketDisconnect

    client = make_client(live=FAST)
    hub = client.app.state.live
    with client.websocket_connect("/api/v1/live") as ws:
        ws.send_text("{}")
        assert ws.receive_json()["event"] == "ready"
        for t, jpeg in clip_jpegs[:8]:
            ws.send_bytes(pack_frame(t, jpeg))
        while ws.receive_json()["event"] != "ack":
            pass
        hub.close()  # what the app's lifespan does at shutdown
        records = []
        with pytest.raises(WebSocketDisconnect) as info:
            while True:
                records.append(ws.receive_json())
    assert info.value.code == 1001
    assert _events(records, "summary")[0]["end"] in ("stopped", "eof")
    assert records[-1]["event"] == "closed" and records[-1]["code"] == 1001
    assert records[-1]["reason"] == "the server is shutting down"
    assert _no_session_threads(0.5)  # close() joined them
    records, code, _ = _session(client, {}, stop=False)
    assert code == 1013 and "shutting down" in records[0]["message"]


# --------------------------------------------------------------------------- the parts


def test_jpeg_size_reads_the_frame_header(clip_frames):
    image = clip_frames[0]
    assert jpeg_size(_jpeg(image)) == (854, 480)
    assert jpeg_size(_jpeg(image, IMWRITE_JPEG_PROGRESSIVE=1)) == (854, 480)  # SOF2
    gray = _jpeg(image[:100, :50, 0].copy())
    assert jpeg_size(gray) == (50, 100)
    assert decode_jpeg(gray).shape == (100, 50, 3)  # always BGR
    for bad in (b"", b"\xff\xd8", b"\x89PNG\r\n", b"\xff\xd8\xff\xda\x00\x02", b"\xff\xd8xx"):
        with pytest.raises(ValueError, match="JPEG"):
            jpeg_size(bad)
    assert struct.unpack("<d", pack_frame(1.25, b"x")[:8]) == (1.25,)


def test_the_upload_page_has_the_live_section(make_client):
    import re

    page = make_client().get("/").text
    for ident in ("live_camera", "live_screen", "live_stop", "live_video", "live_people"):
        assert f"id={ident}" in page
    config = json.loads(re.search(r"id=live_cfg>(.*?)</script>", page).group(1))
    assert config["enabled"] and config["fps"] == 4.0 and config["in_flight"] == 2
    assert config["words"]["FAKE"] == "Manipulated" and "FACE_TOO_SMALL" in config["reasons"]
    assert "getUserMedia" in page and "isSecureContext" in page
    off = json.loads(
        re.search(
            r"id=live_cfg>(.*?)</script>", make_client(live=LiveLimits(sessions=0)).get("/").text
        ).group(1)
    )
    assert not off["enabled"] and "--live-sessions 0" in off["reason"]
