"""The whole-video timeline in ``dfe serve`` (issue 32): the form's checkbox and the API field,
a job that computes it (record fields, verdict, thumbnails on disk and through the file route),
the page's SVG charts, segment words and moment viewer, and a data directory of an older server.
"""

from __future__ import annotations

import re
import sqlite3
from html import unescape

import pytest

from engine.server import pages
from engine.server.jobs import JobStore
from engine.server.routes_pages import FILE_NAME
from tests.engine.server.conftest import wait_done

VIDEO = "pair480p_fake.mp4"  # 10 s: the tiny model finds it manipulated throughout


def _upload(client, path, *, timeline: str | None = "1", seq_len: int = 4):
    data = {"seq_len": str(seq_len)}
    if timeline is not None:
        data["timeline"] = timeline
    with open(path, "rb") as f:
        return client.post("/api/v1/jobs", files={"video": (path.name, f, "video/mp4")}, data=data)


@pytest.fixture(scope="module")
def timeline_job(serve_engine, shared_dir, tmp_path_factory):
    """One finished job with ``timeline=1`` (and the client, still open)."""
    from fastapi.testclient import TestClient

    from engine.server.app import create_app

    app = create_app(serve_engine, tmp_path_factory.mktemp("data"))
    with TestClient(app) as client:
        r = _upload(client, shared_dir / "videos" / VIDEO)
        assert r.status_code == 202, r.text
        job = wait_done(lambda i: client.get(f"/api/v1/jobs/{i}").json(), r.json()["id"])
        yield client, job, app


def test_timeline_job_returns_timeline_and_segments(timeline_job, serve_engine, shared_dir):
    client, job, _app = timeline_job
    assert job["status"] == "done", job
    assert job["timeline"] is True
    rec = job["result"]
    line = rec["timeline"]
    assert line["fps"] == serve_engine.config.timeline_fps == 2.0
    assert line["frames"] == len(line["times"]) == len(line["frame_indices"]) >= 20
    assert len(line["people"]) == 1 and line["people"][0]["frames"] >= 18
    assert rec["segments"] == line["segments"]
    # the same timeline as Engine.timeline on the file, and the verdict considers it
    direct = serve_engine.timeline(shared_dir / "videos" / VIDEO).to_record()
    assert line["frame_indices"] == direct["frame_indices"]
    assert line["segments"] == direct["segments"] and len(rec["segments"]) >= 1
    assert rec["verdict"] == "FAKE" and "MANIPULATED_SEGMENT" in rec["reasons"]
    assert "timeline" in rec["timings"]
    assert all(str(client.app.state.store.data_dir) not in w for w in rec["warnings"])
    # the upload is gone once the job (scores, timeline, thumbnails) is done
    assert not client.app.state.store.upload_path(job["id"]).exists()


def test_timeline_job_stores_thumbnails_served_by_the_file_route(timeline_job):
    client, job, _app = timeline_job
    thumbs = job["files"]["timeline"]
    line = job["result"]["timeline"]
    n = len(thumbs["frames"])
    assert n == min(line["frames"], 120) and thumbs["indices"] == line["frame_indices"][:n]
    assert thumbs["times"] == line["times"][:n]
    assert len(thumbs["crops"]) == len(line["people"])
    assert sum(c is not None for c in thumbs["crops"][0]) == line["people"][0]["frames"]
    for url in [thumbs["frames"][0], thumbs["frames"][-1], thumbs["crops"][0][0]]:
        assert re.fullmatch(rf"/jobs/{job['id']}/files/tl_(frame|p0)_\d{{5}}\.jpg", url), url
        got = client.get(url)
        assert got.status_code == 200 and got.content[:3] == b"\xff\xd8\xff", url
    import cv2
    import numpy as np

    from engine.explain import THUMB_CROP, THUMB_WIDTH

    img = cv2.imdecode(np.frombuffer(client.get(thumbs["frames"][0]).content, np.uint8), 1)
    assert img.shape[1] == THUMB_WIDTH
    crop = cv2.imdecode(np.frombuffer(client.get(thumbs["crops"][0][0]).content, np.uint8), 1)
    assert crop.shape[:2] == (THUMB_CROP, THUMB_CROP)
    # small: what the janitor counts stays bounded
    directory = client.app.state.store.result_dir(job["id"])
    tl_bytes = sum(p.stat().st_size for p in directory.glob("tl_*.jpg"))
    assert tl_bytes < 20_000 * n


def test_timeline_page_has_svg_charts_segments_and_the_viewer(timeline_job):
    client, job, _app = timeline_job
    html = client.get(f"/jobs/{job['id']}").text
    assert "<h2>Whole video timeline</h2>" in html
    assert html.count("<svg class=timeline") == 1
    assert "class=threshold-fake" in html and "class=threshold-real" in html
    assert "class=segment " in html and "class=p-fake" in html
    assert re.search(r"id=tl_frame src='/jobs/[0-9a-f]{32}/files/tl_frame_\d{5}\.jpg'", html)
    assert "id=tl_crop src=" in html and "id=tl_data" in html
    words = re.findall(r"<ul id=segments><li><a [^>]*>([^<]+)</a>", html)
    assert words and re.fullmatch(
        r"Manipulated from \d+:\d\d\.\d to \d+:\d\d\.\d, person 1, confidence (\d+%|>99%)",
        unescape(words[0]),
    ), words
    # no external script: the only scripts are inline
    assert "<script src" not in html
    # the badge says why a video is manipulated: its most confident segment
    assert "data-verdict=FAKE" in html and "MANIPULATED_SEGMENT" in html


def test_job_without_timeline_has_none_and_the_form_has_the_checkbox(make_client, shared_dir):
    client = make_client()
    form = client.get("/").text
    assert "<input type=checkbox name=timeline id=timeline value=1>" in form
    assert "Whole video timeline" in form
    r = _upload(client, shared_dir / "videos" / "pair480p_real.mp4", timeline=None, seq_len=2)
    job = wait_done(lambda i: client.get(f"/api/v1/jobs/{i}").json(), r.json()["id"])
    assert job["status"] == "done" and job["timeline"] is False
    assert job["result"]["timeline"] is None and job["result"]["segments"] == []
    assert "timeline" not in job["files"]
    assert "<svg" not in client.get(f"/jobs/{job['id']}").text
    bad = _upload(client, shared_dir / "videos" / "pair480p_real.mp4", timeline="maybe")
    assert bad.status_code == 422 and "timeline" in bad.json()["detail"]
    schema = client.get("/openapi.json").json()
    body = schema["paths"]["/api/v1/jobs"]["post"]["requestBody"]["content"]
    props = body["multipart/form-data"]["schema"]["properties"]
    assert props["timeline"]["type"] == "boolean" and props["timeline"]["default"] is False


def test_a_server_started_with_timeline_checks_the_box():
    form = pages.upload_page((10, 20), 2**20, timeline=True, timeline_fps=4)
    assert "<input type=checkbox name=timeline id=timeline value=1 checked>" in form
    assert "4\n  frames per second" in form


def test_file_route_pattern_takes_the_thumbnails_only():
    for name in ("tl_frame_00012.jpg", "tl_p0_00012.jpg", "tl_p11_1234567.jpg", "scores.png"):
        assert FILE_NAME.match(name), name
    for name in ("tl_frame_12.jpg", "tl_frame_00012.png", "tl_x_00012.jpg", "../tl_p0_00012.jpg",
                 "tl_p0_00012.jpg/..", "tl_p1234_00012.jpg"):  # fmt: skip
        assert not FILE_NAME.match(name), name


def test_an_older_data_directory_gets_the_timeline_column(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    db = sqlite3.connect(data / "jobs.sqlite3")
    db.execute(
        "CREATE TABLE jobs (id TEXT PRIMARY KEY, status TEXT NOT NULL, stage TEXT, filename TEXT "
        "NOT NULL, seq_len INTEGER, created REAL NOT NULL, started REAL, finished REAL, result "
        "TEXT, files TEXT, error TEXT)"
    )
    db.execute("INSERT INTO jobs (id, status, filename, created) VALUES ('a' , 'done', 'x', 1)")
    db.commit()
    db.close()
    store = JobStore(data)
    try:
        assert store.get("a").timeline is False
        store.create("b" * 32, "clip.mp4", 4, timeline=True)
        assert store.get("b" * 32).timeline is True
    finally:
        store.close()
    JobStore(data).close()  # opening it again changes nothing


# ---------------------------------------------------------------------- the page from a record


def _job(segments, p_fake, *, thumbs=True):
    times = [i * 0.5 for i in range(len(p_fake))]
    rec = {
        "video": "clip.mp4",
        "status": "ok",
        "verdict": "FAKE" if segments else "REAL",
        "reasons": ["MANIPULATED_SEGMENT"] if segments else [],
        "p_fake": 0.1,
        "p_fake_calibrated": 0.1,
        "frames": 4,
        "faces": 4,
        "calibration": {"status": "calibrated", "fake_at": 0.7, "real_below": 0.3},
        "segments": segments,
        "timeline": {
            "fps": 2.0,
            "frames": len(times),
            "frame_indices": [i * 15 for i in range(len(times))],
            "times": times,
            "people": [
                {
                    "track": 3,
                    "frames": sum(p is not None for p in p_fake),
                    "p_fake": p_fake,
                    "boxes": [None] * len(times),
                }
            ],
            "segments": segments,
            "rule": {"opens_at": 0.7, "closes_below": 0.3, "min_segment_s": 1.0},
        },
    }
    files = {}
    if thumbs:
        files["timeline"] = {
            "times": times,
            "indices": rec["timeline"]["frame_indices"],
            "frames": [f"/f/tl_frame_{i * 15:05d}.jpg" for i in range(len(times))],
            "crops": [
                [None if p is None else f"/f/tl_p0_{i * 15:05d}.jpg" for i, p in enumerate(p_fake)]
            ],
        }
    return {"id": "0" * 32, "filename": "clip.mp4", "result": rec, "files": files}


def test_chart_breaks_at_gaps_and_shades_the_segments():
    p = [0.1, 0.2, None, None, 0.9, 0.95, 0.9, 0.92, None, 0.2]
    seg = {"start": 1.75, "end": 3.75, "score": 0.956, "person": 3}
    html = pages._timeline(_job([seg], p))
    path = re.search(r"class=p-fake d='([^']+)'", html)[1]
    assert path.count("M") == 3 and path.count("L") == 1 + 3  # three runs: 2, 4 and 1 points
    assert html.count("class=segment ") == 1
    assert "Manipulated from 0:01.8 to 0:03.8, person 1, confidence 96%" in unescape(html)
    assert "data-person=0" in html and "data-t='2.000'" in html
    assert "manipulated from 70%" in html and "authentic below 30%" in html
    # the data for the script is JSON that cannot close the script element
    assert "</script>" not in re.search(r"id=tl_data>(.*?)</script>", html, re.S)[1]


def test_timeline_section_without_segments_faces_or_thumbnails():
    html = pages._timeline(_job([], [0.1] * 6, thumbs=False))
    assert "id=segments_none" in html and "No thumbnails" in html and "<svg" in html
    none = _job([], [])
    none["result"]["timeline"]["people"] = []
    assert "id=timeline_no_face" in pages._timeline(none)
    assert pages._timeline({"result": {"timeline": None}, "files": {}}) == ""


def test_a_segment_verdict_badge_shows_the_segment_confidence():
    job = _job([{"start": 1.75, "end": 3.75, "score": 0.956, "person": 3}], [0.9] * 10)
    job["result"].update(label="REAL", confidence=90.0, people=1, tracks=[], frame_indices=[],
                         frame_p_fake=[], boxes=[])  # fmt: skip
    job["files"].update(frames=[], crops=[], overlays=[], scores="s.png")
    html = pages.job_page({**job, "status": "done"}, now=0.0)
    assert re.search(r"id=verdict_p>95\.6%<", html), html
    assert "most certain segment" in html
    assert "found 1 segment judged manipulated" in unescape(html)
    assert "<title>Manipulated 95.6% · clip.mp4</title>" in html


def test_a_timeline_with_frames_of_unknown_time_is_strict_json(make_client, shared_dir):
    """The DFDC clips' last frames (flushed from the decoder's reorder buffer) come without a
    time: the API still answers strict JSON (no NaN) and the page and thumbnails skip them."""
    import json

    client = make_client()
    r = _upload(client, shared_dir / "videos" / "dfdc_like_fake.mp4", seq_len=2)
    job_id = r.json()["id"]
    wait_done(lambda i: client.get(f"/api/v1/jobs/{i}").json(), job_id)
    raw = client.get(f"/api/v1/jobs/{job_id}")
    assert raw.status_code == 200

    def no_constants(name):
        raise AssertionError(f"{name} in the API's JSON")

    job = json.loads(raw.text, parse_constant=no_constants)
    assert job["status"] == "done", job
    times = job["result"]["timeline"]["times"]
    assert times and all(t is None or t >= 0 for t in times)
    page = client.get(f"/jobs/{job_id}")
    assert page.status_code == 200 and "<svg class=timeline" in page.text
    assert len(job["files"]["timeline"]["frames"]) == len(times)
