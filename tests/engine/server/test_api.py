"""The JSON API v1 of ``dfe serve``: upload, poll, result, limits, queue, restart."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import httpx

from tests.engine.server.conftest import live_server, no_face_video, wait_done

VIDEO = "pair480p_real.mp4"


def _upload(client, path, seq_len=4, name=None):
    with open(path, "rb") as f:
        return client.post(
            "/api/v1/jobs",
            files={"video": (name or path.name, f, "video/mp4")},
            data={"seq_len": str(seq_len)},
        )


def test_jobs_upload_poll_result_matches_predict_record(make_client, shared_dir, serve_engine):
    client = make_client()
    r = _upload(client, shared_dir / "videos" / VIDEO, seq_len=4)
    assert r.status_code == 202, r.text
    job_id = r.json()["id"]
    job = wait_done(lambda i: client.get(f"/api/v1/jobs/{i}").json(), job_id)
    assert job["status"] == "done", job
    rec = job["result"]
    assert rec["status"] == "ok" and rec["video"] == VIDEO
    assert rec["label"] in ("REAL", "FAKE") and 50 <= rec["confidence"] <= 100
    assert rec["frames"] == 4 and len(rec["frame_p_fake"]) == 4 and rec["faces"] == 4
    direct = serve_engine.predict(shared_dir / "videos" / VIDEO, seq_len=4).to_record()
    assert set(rec) == set(direct)
    assert abs(rec["p_fake"] - direct["p_fake"]) < 1e-5
    assert rec["frame_indices"] == direct["frame_indices"] and rec["boxes"] == direct["boxes"]
    assert {"decode", "detect", "classify", "explain", "total"} <= set(rec["timings"])
    # how it was made, as in a dfe predict record; the upload named by its content only
    assert rec["provenance"]["settings"] == direct["provenance"]["settings"]
    assert rec["provenance"]["model"] == direct["provenance"]["model"]
    from core.hashing import sha256_file

    video = shared_dir / "videos" / VIDEO
    assert rec["provenance"]["input"] == {"path": None, "name": VIDEO, "mtime_ns": None,
                                          "size": video.stat().st_size,
                                          "sha256": sha256_file(video)}  # fmt: skip
    for url in [job["files"]["scores"], *job["files"]["overlays"], *job["files"]["crops"]]:
        got = client.get(url)
        assert got.status_code == 200 and got.content[:4] == b"\x89PNG"
    # the page leads with the record's verdict; the tiny model is not calibrated, and says so
    page = client.get(f"/jobs/{job_id}")
    assert page.status_code == 200 and rec["verdict"] == direct["verdict"]
    assert f"id=verdict data-verdict={rec['verdict']}>" in page.text
    assert rec["calibration"]["status"] == "uncalibrated" and "id=uncalibrated" in page.text
    assert "1 person was found" in page.text and "4 frames analysed" in page.text


def test_health_reports_backend_and_model(make_client, tiny_model):
    body = make_client().get("/api/v1/health").json()
    assert body["backend"] == "ort" and str(tiny_model) in body["model"]["models"]


def test_openapi_documents_the_v1_api(make_client):
    paths = make_client().get("/openapi.json").json()["paths"]
    assert {"/api/v1/jobs", "/api/v1/jobs/{job_id}", "/api/v1/health"} <= set(paths)
    body = paths["/api/v1/jobs"]["post"]["requestBody"]["content"]["multipart/form-data"]
    assert "video" in body["schema"]["properties"]


def test_upload_too_large_is_413_and_nothing_is_kept(make_client, tmp_path):
    client = make_client(max_upload_bytes=200_000)
    big = tmp_path / "big.mp4"
    big.write_bytes(b"\0" * 600_000)
    r = _upload(client, big)
    assert r.status_code == 413 and "limit" in r.json()["detail"]
    assert not any((tmp_path / "data" / "uploads").iterdir())
    assert client.get("/api/v1/health").json()["queue"]["active"] == 0


def test_upload_too_large_is_413_while_streaming_without_content_length(make_client):
    client = make_client(max_upload_bytes=100_000)

    def body():  # a chunked body: no Content-Length, the limit must hold while streaming
        yield b"--xx\r\nContent-Disposition: form-data; name=video; filename=a.mp4\r\n\r\n"
        for _ in range(100):
            yield b"\0" * 10_000

    r = client.post(
        "/api/v1/jobs", content=body(), headers={"content-type": "multipart/form-data; boundary=xx"}
    )
    assert r.status_code == 413


def test_not_a_video_is_415_with_a_message(make_client, tmp_path):
    client = make_client()
    fake = tmp_path / "notes.mp4"  # the extension says video; decoding says otherwise
    fake.write_text("hello, this is not a video\n" * 50)
    r = _upload(client, fake)
    assert r.status_code == 415
    detail = r.json()["detail"]
    assert "not a video" in detail and "text file" in detail and "uploads" not in detail


def test_missing_field_and_bad_seq_len_are_422(make_client, shared_dir):
    client = make_client()
    assert client.post("/api/v1/jobs", data={"seq_len": "4"}).status_code == 422
    r = _upload(client, shared_dir / "videos" / VIDEO, seq_len=0)
    assert r.status_code == 422 and "seq_len" in r.json()["detail"]


def test_queue_full_is_429(make_client, shared_dir):
    client = make_client(max_queue=1, workers=0)  # accepts, never runs: the queue fills
    assert _upload(client, shared_dir / "videos" / VIDEO).status_code == 202
    r = _upload(client, shared_dir / "videos" / VIDEO)
    assert r.status_code == 429 and "full" in r.json()["detail"]
    assert r.headers["retry-after"]


def test_unknown_and_malformed_job_ids(make_client):
    client = make_client()
    assert client.get("/api/v1/jobs/" + "0" * 32).status_code == 404
    assert client.get("/api/v1/jobs/..%2F..%2Fetc").status_code in (404, 422)
    assert client.get("/jobs/" + "0" * 32 + "/files/..%2Fjobs.sqlite3").status_code == 404


def test_restart_keeps_finished_results_and_requeues_unfinished(make_client, shared_dir, tmp_path):
    data = tmp_path / "persist"
    first = make_client(data)
    done_id = _upload(first, shared_dir / "videos" / VIDEO).json()["id"]
    job = wait_done(lambda i: first.get(f"/api/v1/jobs/{i}").json(), done_id)
    assert job["status"] == "done"
    first.__exit__(None, None, None)
    # a server that accepted a job and stopped before running it
    stopped = make_client(data, workers=0)
    queued_id = _upload(stopped, shared_dir / "videos" / VIDEO).json()["id"]
    stopped.__exit__(None, None, None)

    again = make_client(data)
    kept = again.get(f"/api/v1/jobs/{done_id}").json()
    assert kept["status"] == "done" and kept["result"] == job["result"]
    assert again.get(kept["files"]["scores"]).status_code == 200
    requeued = wait_done(lambda i: again.get(f"/api/v1/jobs/{i}").json(), queued_id)
    assert requeued["status"] == "done" and requeued["result"]["frames"] == 4


def test_video_without_a_face_gets_a_result_saying_so(make_client, tmp_path):
    client = make_client()
    r = _upload(client, no_face_video(tmp_path / "noface.mp4"), seq_len=4)
    assert r.status_code == 202, r.text
    job = wait_done(lambda i: client.get(f"/api/v1/jobs/{i}").json(), r.json()["id"])
    rec = job["result"]
    assert job["status"] == "done" and rec["faces"] == 0 and rec["people"] == 0
    assert rec["boxes"] == [None] * 4
    assert rec["verdict"] == "NO_FACE" and rec["reasons"] == ["NO_FACE_DETECTED"]
    page = client.get(f"/jobs/{job['id']}").text
    assert "id=verdict data-verdict=NO_FACE>" in page and "No face to judge" in page
    assert "No face was found in any frame used" in page
    # no person panel (explain still lists the whole frames as a sequence), no verdict as a
    # percentage, no heatmaps or crops of whole frames
    assert len(job["files"]["people"]) == 1
    for absent in ("id=person_", "id=people_intro", "id='heatmaps'", "id='crops'", "%</span>"):
        assert absent not in page, absent


def test_twenty_concurrent_uploads_all_finish(serve_engine, shared_dir, tmp_path):
    videos = sorted((shared_dir / "videos").glob("*.mp4"))
    with live_server(serve_engine, tmp_path / "data", max_queue=32) as base:

        def one(k: int) -> dict:
            path = videos[k % len(videos)]
            with httpx.Client(base_url=base, timeout=60) as c:
                r = c.post(
                    "/api/v1/jobs",
                    files={"video": (path.name, path.read_bytes(), "video/mp4")},
                    data={"seq_len": "2"},
                )
                assert r.status_code == 202, r.text
                return wait_done(lambda i: c.get(f"/api/v1/jobs/{i}").json(), r.json()["id"])

        t0 = time.monotonic()
        with ThreadPoolExecutor(20) as pool:
            jobs = list(pool.map(one, range(20)))
    assert len({j["id"] for j in jobs}) == 20
    assert all(j["status"] == "done" and j["result"]["frames"] == 2 for j in jobs), jobs
    assert time.monotonic() - t0 < 600


def test_health_is_503_with_the_reason_until_the_models_load(tiny_model, shared_dir, tmp_path):
    """A server whose detector cannot load says why on /api/v1/health (503) and refuses
    uploads, instead of answering ok while every job fails."""
    from fastapi.testclient import TestClient

    from engine.api import Engine
    from engine.server.app import create_app

    broken = Engine.load(tiny_model, backend="ort", models_dir=str(tmp_path / "none"),
                         download=False)  # fmt: skip
    with TestClient(create_app(broken, tmp_path / "data")) as client:
        deadline = time.monotonic() + 30
        while client.get("/api/v1/health").json()["status"] == "loading":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        r = client.get("/api/v1/health")
        assert r.status_code == 503 and r.json()["status"] == "error"
        assert "det_500m.onnx" in r.json()["reason"]
        video = (shared_dir / "videos" / "pair480p_real.mp4").read_bytes()
        up = client.post("/api/v1/jobs", files={"video": ("a.mp4", video, "video/mp4")})
        assert up.status_code == 503 and "could not be loaded" in up.json()["detail"]
        assert "still loading" in client.get("/").text
    fresh = Engine.load(tiny_model, backend="ort", models_dir=str(shared_dir / "models"))
    with TestClient(create_app(fresh, tmp_path / "data2")) as client:
        deadline = time.monotonic() + 60
        while client.get("/api/v1/health").status_code == 503:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert client.get("/api/v1/health").json()["status"] == "ok"


def test_demo_model_page_has_a_banner(tmp_path, shared_dir):
    from fastapi.testclient import TestClient

    from engine.api import Engine
    from engine.server.app import create_app
    from tests.tiny_model import make_tiny_model

    demo = make_tiny_model(tmp_path / "demo", demo=True)
    engine = Engine.load(demo, backend="ort", models_dir=str(shared_dir / "models"))
    engine.prepare()
    with TestClient(create_app(engine, tmp_path / "data")) as client:
        assert "Demo model." in client.get("/").text
        # its verdicts: UNCERTAIN, the untrained model the main reason, and the page says why
        r = _upload(client, shared_dir / "videos" / VIDEO, seq_len=2)
        job = wait_done(lambda i: client.get(f"/api/v1/jobs/{i}").json(), r.json()["id"])
        assert job["result"]["verdict"] == "UNCERTAIN"
        assert job["result"]["reasons"][0] == "UNTRAINED_MODEL"
        page = client.get(f"/jobs/{job['id']}").text
        assert "id=verdict data-verdict=UNCERTAIN>" in page and "Cannot tell" in page
        assert "The model is the untrained demo: its scores mean nothing." in page
        assert "id=untrained" in page
