"""Jobs of ``dfe serve``: a SQLite store that survives restarts and a bounded worker queue.

Everything lives in one private data directory (mode 0700): ``jobs.sqlite3``, ``uploads/<id>``
(deleted once the job ran) and ``results/<id>/`` (the images of the result page). File names are
generated (uuid4 hex), never taken from the client. On start, jobs left ``queued`` or ``running``
by a stopped server are queued again when their upload is still there, else marked ``error``
with a reason: a job is never forgotten.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import sqlite3
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.core.errors import EngineError

if TYPE_CHECKING:
    from engine.api import Engine

log = logging.getLogger(__name__)

STATUSES = ("queued", "running", "done", "error")
ID_PATTERN = r"^[0-9a-f]{32}$"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    stage TEXT,
    filename TEXT NOT NULL,
    seq_len INTEGER,
    created REAL NOT NULL,
    started REAL,
    finished REAL,
    result TEXT,
    files TEXT,
    error TEXT
)
"""


def new_id() -> str:
    return uuid.uuid4().hex


def private_dir(path: Path) -> Path:
    """Create ``path`` (and parents) readable by this user only."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path, 0o700)
    return path


@dataclass(frozen=True)
class Job:
    id: str
    status: str
    stage: str | None
    filename: str
    seq_len: int | None
    created: float
    started: float | None
    finished: float | None
    result: dict[str, Any] | None
    files: dict[str, Any] | None
    error: str | None


class JobStore:
    """Jobs in SQLite; one connection shared by threads under a lock (writes are tiny)."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = private_dir(Path(data_dir))
        self.uploads = private_dir(self.data_dir / "uploads")
        self.results = private_dir(self.data_dir / "results")
        self._lock = threading.Lock()
        self._db = sqlite3.connect(
            self.data_dir / "jobs.sqlite3", check_same_thread=False, isolation_level=None
        )
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def upload_path(self, job_id: str) -> Path:
        return self.uploads / job_id

    def result_dir(self, job_id: str) -> Path:
        return self.results / job_id

    def _exec(self, sql: str, args: tuple = ()) -> list[tuple]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    def create(self, job_id: str, filename: str, seq_len: int | None) -> None:
        self._exec(
            "INSERT INTO jobs (id, status, filename, seq_len, created) VALUES (?, ?, ?, ?, ?)",
            (job_id, "queued", filename, seq_len, time.time()),
        )

    def update(self, job_id: str, **fields: Any) -> None:
        for key in ("result", "files"):
            if key in fields and fields[key] is not None:
                fields[key] = json.dumps(fields[key])
        cols = ", ".join(f"{k} = ?" for k in fields)
        self._exec(f"UPDATE jobs SET {cols} WHERE id = ?", (*fields.values(), job_id))

    def get(self, job_id: str) -> Job | None:
        rows = self._exec(
            "SELECT id, status, stage, filename, seq_len, created, started, finished, result, "
            "files, error FROM jobs WHERE id = ?",
            (job_id,),
        )
        if not rows:
            return None
        r = list(rows[0])
        r[8] = json.loads(r[8]) if r[8] else None
        r[9] = json.loads(r[9]) if r[9] else None
        return Job(*r)

    def unfinished(self) -> list[tuple[str, str]]:
        return self._exec(
            "SELECT id, status FROM jobs WHERE status IN ('queued', 'running') ORDER BY created"
        )

    def counts(self) -> dict[str, int]:
        rows = self._exec("SELECT status, COUNT(*) FROM jobs GROUP BY status")
        return {s: 0 for s in STATUSES} | dict(rows)


class QueueFullError(EngineError, RuntimeError):
    """The job queue is full; retry later."""


class JobRunner:
    """Worker threads over one loaded :class:`Engine`. ``max_queue`` bounds the jobs accepted
    and not finished (queued or running); :meth:`reserve` refuses beyond it."""

    def __init__(
        self, engine: Engine, store: JobStore, *, max_queue: int = 64, workers: int = 1
    ) -> None:
        self.engine = engine
        self.store = store
        self.max_queue = max_queue
        self.workers = workers
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._lock = threading.Lock()
        self._active = 0
        self._order: list[str] = []  # queued ids, oldest first (for the queue position)
        self._threads: list[threading.Thread] = []

    # -------------------------------------------------------------- admission

    def reserve(self) -> None:
        with self._lock:
            if self._active >= self.max_queue:
                raise QueueFullError(
                    f"the job queue is full ({self._active} of {self.max_queue} jobs queued or "
                    "running); retry in a little while"
                )
            self._active += 1

    def release(self) -> None:
        with self._lock:
            self._active -= 1

    def submit(self, job_id: str) -> None:
        """Queue a job whose slot was reserved."""
        with self._lock:
            self._order.append(job_id)
        self._queue.put(job_id)

    def position(self, job_id: str) -> int | None:
        with self._lock:
            return self._order.index(job_id) + 1 if job_id in self._order else None

    @property
    def active(self) -> int:
        with self._lock:
            return self._active

    # -------------------------------------------------------------- life cycle

    def recover(self) -> None:
        """Re-queue jobs a stopped server left unfinished, or mark them failed."""
        for job_id, status in self.store.unfinished():
            if self.store.upload_path(job_id).is_file():
                log.info("re-queueing job %s (was %s when the server stopped)", job_id, status)
                self.store.update(job_id, status="queued", stage="re-queued after a restart")
                with self._lock:
                    self._active += 1
                self.submit(job_id)
            else:
                self.store.update(
                    job_id,
                    status="error",
                    finished=time.time(),
                    error="the server stopped before this job finished and its upload is gone",
                )

    def start(self) -> None:
        self.recover()
        for i in range(self.workers):
            t = threading.Thread(target=self._work, name=f"dfe-serve-{i}", daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self, timeout: float = 30.0) -> None:
        for _ in self._threads:
            self._queue.put(None)
        for t in self._threads:
            t.join(timeout)
        self._threads.clear()

    # -------------------------------------------------------------- work

    def _work(self) -> None:
        while True:
            job_id = self._queue.get()
            if job_id is None:
                return
            with self._lock:
                if job_id in self._order:
                    self._order.remove(job_id)
            try:
                self._run(job_id)
            except Exception:  # never let one job kill the worker
                log.exception("job %s failed unexpectedly", job_id)
                self.store.update(
                    job_id, status="error", finished=time.time(), error="internal error"
                )
            finally:
                self.release()

    def _run(self, job_id: str) -> None:
        from engine.explain import explain, write_explanation

        job = self.store.get(job_id)
        if job is None:
            return
        upload = self.store.upload_path(job_id)
        self.store.update(job_id, status="running", stage="starting", started=time.time())
        try:
            expl = explain(
                self.engine,
                upload,
                seq_len=job.seq_len,
                progress=lambda stage: self.store.update(job_id, stage=stage),
            )
            self.store.update(job_id, stage="drawing heatmaps")
            files = write_explanation(expl, self.store.result_dir(job_id))
        except EngineError as exc:
            message = str(exc).replace(str(upload), job.filename)
            record = {"video": job.filename, "status": "error", "error": message}
            self.store.update(
                job_id,
                status="error",
                stage=None,
                finished=time.time(),
                result=record,
                error=message,
            )
        else:
            record = expl.prediction.to_record()
            record["video"] = job.filename  # never the private path
            self.store.update(
                job_id, status="done", stage=None, finished=time.time(), result=record, files=files
            )
        finally:
            upload.unlink(missing_ok=True)
