"""What ``dfe serve`` stores stays bounded: retention, the disk budget, DELETE /api/v1/jobs/{id}."""

from __future__ import annotations

import logging
import os
import threading
import time

import pytest

from engine.server.jobs import Janitor, JobRunner, JobStore, new_id
from tests.engine.server.conftest import wait_done

VIDEO = "pair480p_real.mp4"
DAY = 86400.0
KB = 1024


def _job(store: JobStore, status: str, *, finished: float | None, size: int = 0,
         created: float | None = None, upload: int = 0) -> str:  # fmt: skip
    """A job row set through the store, with ``size`` bytes of results and an ``upload``."""
    job_id = new_id()
    store.create(job_id, "clip.mp4", 4)
    when = created if created is not None else (finished or time.time()) - 5
    store.update(job_id, status=status, created=when, finished=finished)
    if status in ("done", "error"):
        store.update(job_id, files={"scores": "scores.png"}, result={"status": "ok"})
    if size:
        store.result_dir(job_id).mkdir()
        (store.result_dir(job_id) / "scores.png").write_bytes(b"\0" * size)
    if upload:
        store.upload_path(job_id).write_bytes(b"\0" * upload)
    return job_id


def _upload(client, path, seq_len=4):
    with open(path, "rb") as f:
        return client.post(
            "/api/v1/jobs",
            files={"video": (path.name, f, "video/mp4")},
            data={"seq_len": str(seq_len)},
        )


# ---------------------------------------------------------------------------- the janitor


def test_retention_deletes_old_finished_jobs_and_keeps_recent_and_unfinished(tmp_path, caplog):
    store = JobStore(tmp_path / "data")
    now = time.time()
    old_done = _job(store, "done", finished=now - 10 * DAY, size=5 * KB)
    old_error = _job(store, "error", finished=now - 2 * DAY)
    recent = _job(store, "done", finished=now - 3600, size=5 * KB)
    old_queued = _job(store, "queued", finished=None, created=now - 30 * DAY, upload=KB)
    old_running = _job(store, "running", finished=None, created=now - 30 * DAY, upload=KB)
    janitor = Janitor(store, retention_s=DAY, max_bytes=0)

    with caplog.at_level(logging.INFO, logger="engine.server.jobs"):
        deleted = janitor.sweep(now)

    assert deleted == [old_done, old_error]  # oldest first
    assert store.get(old_done) is None and store.get(old_error) is None
    assert not store.result_dir(old_done).exists()
    assert store.get(recent).status == "done" and store.result_dir(recent).is_dir()
    assert store.get(old_queued).status == "queued" and store.upload_path(old_queued).is_file()
    assert store.get(old_running).status == "running"
    assert store.upload_path(old_running).is_file()
    logged = caplog.text
    assert old_done in logged and old_error in logged and "retention" in logged
    assert recent not in logged
    # retention 0 keeps finished jobs forever
    assert Janitor(store, retention_s=0, max_bytes=0).sweep(now + 1000 * DAY) == []
    assert store.get(recent) is not None
    store.close()


def test_disk_budget_deletes_the_oldest_finished_jobs_first(tmp_path, caplog):
    store = JobStore(tmp_path / "data")
    now = time.time()
    # finished order differs from creation order: the budget goes by when they finished
    a = _job(store, "done", finished=now - 400, created=now - 100, size=100 * KB)
    b = _job(store, "error", finished=now - 300, created=now - 900, size=60 * KB)
    c = _job(store, "done", finished=now - 200, created=now - 800, size=100 * KB)
    d = _job(store, "done", finished=now - 100, created=now - 700, size=100 * KB)
    queued = _job(store, "queued", finished=None, created=now - 10_000, upload=150 * KB)
    running = _job(store, "running", finished=None, created=now - 10_000, size=20 * KB)
    janitor = Janitor(store, retention_s=0, max_bytes=300 * KB)
    assert janitor.usage() == 530 * KB  # results/<id>/ of every job plus uploads/

    with caplog.at_level(logging.INFO, logger="engine.server.jobs"):
        deleted = janitor.sweep(now)

    # 530 -> 430 (a) -> 370 (b) -> 270 (c): under 300 KB, d stays
    assert deleted == [a, b, c]
    assert [store.get(i) for i in (a, b, c)] == [None, None, None]
    assert not any(store.result_dir(i).exists() for i in (a, b, c))
    assert store.get(d).status == "done" and store.result_dir(d).is_dir()
    assert store.get(queued).status == "queued" and store.upload_path(queued).is_file()
    assert store.get(running).status == "running" and store.result_dir(running).is_dir()
    assert janitor.usage() == 270 * KB
    assert all(i in caplog.text for i in (a, b, c)) and "budget" in caplog.text
    assert janitor.sweep(now) == []  # under budget: nothing more

    # over budget in unfinished jobs only: the finished one goes, the rest stay, one warning
    janitor.max_bytes = 100 * KB
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="engine.server.jobs"):
        assert janitor.sweep(now) == [d]
        assert janitor.sweep(now) == []
    assert store.get(queued) is not None and store.get(running) is not None
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "queued or running" in warnings[0].getMessage()
    store.close()


def test_janitor_removes_results_and_old_uploads_without_a_job(tmp_path):
    store = JobStore(tmp_path / "data")
    kept = _job(store, "done", finished=time.time(), size=KB)
    orphan = new_id()
    store.result_dir(orphan).mkdir()
    (store.result_dir(orphan) / "scores.png").write_bytes(b"x")
    old_upload, fresh_upload = store.upload_path(new_id()), store.upload_path(new_id())
    old_upload.write_bytes(b"x")
    two_hours_ago = time.time() - 2 * 3600
    os.utime(old_upload, (two_hours_ago, two_hours_ago))  # left by a crash
    fresh_upload.write_bytes(b"x")  # being accepted right now: its row comes next
    Janitor(store, retention_s=0, max_bytes=0).sweep()
    assert not store.result_dir(orphan).exists() and not old_upload.exists()
    assert fresh_upload.exists()
    assert store.result_dir(kept).is_dir() and store.get(kept) is not None
    store.close()


def test_app_sweeps_at_start_and_periodically(make_client, tmp_path):
    data = tmp_path / "data"
    store = JobStore(data)
    now = time.time()
    old = _job(store, "done", finished=now - 3 * DAY, size=KB)
    recent = _job(store, "done", finished=now - 60, size=KB)
    queued = _job(store, "queued", finished=None, created=now - 30 * DAY, upload=KB)
    store.close()

    client = make_client(data, workers=0, retention_hours=24, janitor_interval=0.1)
    assert client.get(f"/api/v1/jobs/{old}").status_code == 404  # swept at start
    assert client.get(f"/api/v1/jobs/{recent}").json()["status"] == "done"
    assert client.get(f"/api/v1/jobs/{queued}").json()["status"] == "queued"
    # a job that becomes old while the server runs goes on a later sweep
    app_store = client.app.state.store
    app_store.update(recent, finished=now - 2 * DAY)
    deadline = time.monotonic() + 10
    while client.get(f"/api/v1/jobs/{recent}").status_code != 404:
        assert time.monotonic() < deadline, "the periodic sweep did not delete the old job"
        time.sleep(0.05)
    assert not app_store.result_dir(recent).exists()
    assert client.get(f"/api/v1/jobs/{queued}").json()["status"] == "queued"


def test_app_sweeps_after_each_finished_job(make_client, shared_dir):
    # one byte of budget: the finished job itself is over it. The periodic sweep is an hour
    # away, so only the sweep after the job can delete it.
    client = make_client(max_results_bytes=1, janitor_interval=3600)
    job_id = _upload(client, shared_dir / "videos" / VIDEO).json()["id"]
    deadline = time.monotonic() + 180
    while (r := client.get(f"/api/v1/jobs/{job_id}")).status_code == 200:
        assert r.json()["status"] in ("queued", "running", "done"), r.json()
        assert time.monotonic() < deadline, "the finished job was not swept"
        time.sleep(0.1)
    assert r.status_code == 404
    assert not client.app.state.store.result_dir(job_id).exists()


def test_create_app_refuses_non_finite_limits(serve_engine, tmp_path):
    from core.errors import InvalidInputError
    from engine.server.app import create_app

    for options in ({"retention_hours": float("nan")}, {"max_results_bytes": -1},
                    {"retention_hours": float("inf")}, {"janitor_interval": 0}):  # fmt: skip
        with pytest.raises(InvalidInputError, match=next(iter(options))):
            create_app(serve_engine, tmp_path / "data", **options)


# ---------------------------------------------------------------------------- DELETE


def test_delete_finished_job_removes_it_and_its_files(make_client, shared_dir):
    client = make_client()
    job_id = _upload(client, shared_dir / "videos" / VIDEO).json()["id"]
    job = wait_done(lambda i: client.get(f"/api/v1/jobs/{i}").json(), job_id)
    assert job["status"] == "done"
    url = job["files"]["scores"]
    assert client.get(url).status_code == 200

    r = client.delete(f"/api/v1/jobs/{job_id}")
    assert r.status_code == 204 and r.content == b""
    assert client.get(f"/api/v1/jobs/{job_id}").status_code == 404
    assert client.get(url).status_code == 404
    assert client.get(f"/jobs/{job_id}").status_code == 404
    assert not client.app.state.store.result_dir(job_id).exists()
    assert client.delete(f"/api/v1/jobs/{job_id}").status_code == 404


def test_delete_queued_job_cancels_it_and_releases_its_slot(make_client, shared_dir, tmp_path):
    client = make_client(max_queue=1, workers=0)  # accepts, never runs
    video = shared_dir / "videos" / VIDEO
    job_id = _upload(client, video).json()["id"]
    assert _upload(client, video).status_code == 429  # the one slot is taken
    store = client.app.state.store
    assert store.upload_path(job_id).is_file()

    assert client.delete(f"/api/v1/jobs/{job_id}").status_code == 204
    assert client.get(f"/api/v1/jobs/{job_id}").status_code == 404
    assert not store.upload_path(job_id).exists()
    assert not any((tmp_path / "data" / "uploads").iterdir())
    assert client.get("/api/v1/health").json()["queue"]["active"] == 0
    second = _upload(client, video)
    assert second.status_code == 202  # the slot was released
    assert client.get(f"/api/v1/jobs/{second.json()['id']}").json()["queue_position"] == 1


def test_worker_skips_a_job_cancelled_while_queued(tmp_path):
    store = JobStore(tmp_path / "data")
    runner = JobRunner(None, store, max_queue=3, workers=0)  # type: ignore[arg-type]
    ran, finished = [], []
    runner._run = ran.append  # the worker loop, without the engine
    runner.on_finished = finished.append
    ids = [new_id() for _ in range(3)]
    for job_id in ids:
        runner.reserve()
        store.create(job_id, "clip.mp4", 4)
        runner.submit(job_id)
    assert runner.cancel(ids[1]) and runner.active == 2
    assert runner.position(ids[2]) == 2
    runner._queue.put(None)
    runner._work()  # takes the three ids, then the stop mark
    assert ran == [ids[0], ids[2]] and finished == [ids[0], ids[2]]
    assert runner.active == 0  # each slot released exactly once
    assert not runner.cancel(ids[0])  # a worker had it: not cancellable
    store.close()


def test_delete_running_job_is_409_until_it_has_finished(make_client, shared_dir):
    client = make_client()
    runner, store = client.app.state.runner, client.app.state.store
    taken, go_on, running, finish = (threading.Event() for _ in range(4))
    run = runner._run

    def held(job_id: str) -> None:
        taken.set()  # a worker took the job; the store still says queued
        go_on.wait(30)
        store.update(job_id, status="running", stage="held by the test")
        running.set()
        finish.wait(30)
        run(job_id)

    runner._run = held
    job_id = _upload(client, shared_dir / "videos" / VIDEO).json()["id"]
    assert taken.wait(30)
    r = client.delete(f"/api/v1/jobs/{job_id}")
    assert r.status_code == 409 and "running" in r.json()["detail"]
    go_on.set()
    assert running.wait(30)
    r = client.delete(f"/api/v1/jobs/{job_id}")
    assert r.status_code == 409
    detail = r.json()["detail"]
    assert "running" in detail and "retry" in detail and "finished" in detail
    assert client.get(f"/api/v1/jobs/{job_id}").json()["status"] == "running"
    finish.set()
    job = wait_done(lambda i: client.get(f"/api/v1/jobs/{i}").json(), job_id)
    assert job["status"] == "done"
    assert client.delete(f"/api/v1/jobs/{job_id}").status_code == 204
    assert client.get(f"/api/v1/jobs/{job_id}").status_code == 404


def test_delete_unknown_or_malformed_job(make_client):
    client = make_client()
    r = client.delete("/api/v1/jobs/" + "0" * 32)
    assert r.status_code == 404 and "no job" in r.json()["detail"]
    assert client.delete("/api/v1/jobs/not-an-id").status_code == 422


def test_openapi_documents_delete(make_client):
    paths = make_client().get("/openapi.json").json()["paths"]
    op = paths["/api/v1/jobs/{job_id}"]["delete"]
    assert "Delete" in op["summary"] and "queued" in op["summary"]
    assert {"204", "404", "409"} <= set(op["responses"])
