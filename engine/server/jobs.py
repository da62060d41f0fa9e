"""Jobs of ``dfe serve``: a SQLite store that survives restarts and a bounded worker queue.

Everything lives in one private data directory (mode 0700): ``jobs.sqlite3``, ``uploads/<id>``
(deleted once the job ran) and ``results/<id>/`` (the images of the result page; with the
whole-video timeline, also at most :data:`engine.explain.TIMELINE_THUMBS` small JPEG
thumbnails of its moments and of each person's face there). File names are
generated (uuid4 hex), never taken from the client. On start, jobs left ``queued`` or ``running``
by a stopped server are queued again when their upload is still there, else marked ``error``
with a reason: a job is never forgotten by a restart.

What is stored stays bounded: a :class:`Janitor` deletes finished jobs (``done`` or ``error``)
older than the retention time, then, while ``results/`` and ``uploads/`` together exceed the
disk budget, the oldest finished jobs first. Queued and running jobs are never deleted by it.
"""

from __future__ import annotations

import json
import logging
import math
import os
import queue
import re
import shutil
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.errors import EngineError

if TYPE_CHECKING:
    from engine.api import Engine

log = logging.getLogger(__name__)

STATUSES = ("queued", "running", "done", "error")
FINISHED = ("done", "error")
ID_PATTERN = r"^[0-9a-f]{32}$"
_ID = re.compile(ID_PATTERN)

RETENTION_HOURS = 168.0  # finished jobs are kept 7 days (0: forever)
MAX_RESULTS_MB = 2048.0  # results/ + uploads/ at most (0: no limit)
JANITOR_INTERVAL_S = 60.0
ORPHAN_UPLOAD_AGE_S = 3600.0  # an upload without a job row (a crash while accepting it)

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
    error TEXT,
    timeline INTEGER NOT NULL DEFAULT 0
)
"""
# columns added since the first schema: (name, definition), added to an older database on open
_ADDED_COLUMNS = (("timeline", "INTEGER NOT NULL DEFAULT 0"),)


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
    timeline: bool = False  # also compute the whole-video timeline (engine.timeline)


def json_safe(value: Any) -> Any:
    """``value`` with every float that is not finite (NaN, infinity) replaced by None: the API
    answers strict JSON, which has no NaN (a timeline's time a decoder could not give)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


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
        have = {row[1] for row in self._db.execute("PRAGMA table_info(jobs)")}
        for name, definition in _ADDED_COLUMNS:  # a data directory of an older server
            if name not in have:
                self._db.execute(f"ALTER TABLE jobs ADD COLUMN {name} {definition}")

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

    def create(
        self, job_id: str, filename: str, seq_len: int | None, *, timeline: bool = False
    ) -> None:
        self._exec(
            "INSERT INTO jobs (id, status, filename, seq_len, created, timeline) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (job_id, "queued", filename, seq_len, time.time(), int(timeline)),
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
            "files, error, timeline FROM jobs WHERE id = ?",
            (job_id,),
        )
        if not rows:
            return None
        r = list(rows[0])
        r[8] = json.loads(r[8]) if r[8] else None
        r[9] = json.loads(r[9]) if r[9] else None
        r[11] = bool(r[11])
        return Job(*r)

    def delete(self, job_id: str, statuses: tuple[str, ...] = FINISHED) -> bool:
        """Delete the job's row if its status is one of ``statuses`` (atomically), then its
        upload and results directory. True when this call deleted the row."""
        marks = ", ".join("?" * len(statuses))
        with self._lock:
            cur = self._db.execute(
                f"DELETE FROM jobs WHERE id = ? AND status IN ({marks})", (job_id, *statuses)
            )
            deleted = cur.rowcount > 0
        if deleted:
            self.remove_files(job_id)
        return deleted

    def remove_files(self, job_id: str) -> None:
        self.upload_path(job_id).unlink(missing_ok=True)
        shutil.rmtree(self.result_dir(job_id), ignore_errors=True)

    def finished_jobs(self, before: float | None = None) -> list[tuple[str, float]]:
        """``(id, finished)`` of the finished jobs (finished before ``before``), oldest first."""
        sql = "SELECT id, COALESCE(finished, created) FROM jobs WHERE status IN ('done', 'error')"
        args: tuple = ()
        if before is not None:
            sql += " AND COALESCE(finished, created) < ?"
            args = (before,)
        return self._exec(sql + " ORDER BY COALESCE(finished, created), created", args)

    def ids(self) -> set[str]:
        return {r[0] for r in self._exec("SELECT id FROM jobs")}

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
        self,
        engine: Engine,
        store: JobStore,
        *,
        max_queue: int = 64,
        workers: int = 1,
        on_finished: Callable[[str], None] | None = None,
    ) -> None:
        self.engine = engine
        self.store = store
        self.max_queue = max_queue
        self.workers = workers
        self.on_finished = on_finished  # called with the id after each job a worker ran
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._lock = threading.Lock()
        self._active = 0
        self._order: list[str] = []  # queued ids, oldest first (for the queue position)
        self._cancelled: set[str] = set()  # cancelled ids still in self._queue
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

    def cancel(self, job_id: str) -> bool:
        """Take a queued job out of the queue and release its slot. False when no worker can
        be kept from it: a worker has already taken it (it is starting or running)."""
        with self._lock:
            if job_id not in self._order:
                return False
            self._order.remove(job_id)
            self._cancelled.add(job_id)  # the worker that meets it in the queue skips it
            self._active -= 1
        return True

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
                if job_id in self._cancelled:  # deleted while queued; its slot is released
                    self._cancelled.discard(job_id)
                    continue
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
            if self.on_finished is not None:
                try:
                    self.on_finished(job_id)
                except Exception:
                    log.exception("after job %s", job_id)

    def _run(self, job_id: str) -> None:
        from engine.explain import explain, write_explanation

        job = self.store.get(job_id)
        if job is None:
            return
        upload = self.store.upload_path(job_id)
        self.store.update(job_id, status="running", stage="starting", started=time.time())
        try:  # the upload stays until the first frames, the timeline and its thumbnails are done
            expl = explain(
                self.engine,
                upload,
                seq_len=job.seq_len,
                progress=lambda stage: self.store.update(job_id, stage=stage),
                timeline=job.timeline,
            )
            self.store.update(job_id, stage="drawing heatmaps")
            files = write_explanation(expl, self.store.result_dir(job_id))
            if expl.prediction.timeline:
                self.store.update(job_id, stage="drawing the timeline's thumbnails")
                files["timeline"] = self._thumbnails(job_id, upload, expl.prediction.timeline)
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
            record["warnings"] = [
                w.replace(str(upload), job.filename) for w in record.get("warnings") or []
            ]
            prov = record.get("provenance")
            if prov and prov.get("input"):  # the upload is identified by its content
                from core.hashing import sha256_file

                prov["input"] = {
                    "path": None,
                    "name": job.filename,
                    "size": prov["input"].get("size"),
                    "mtime_ns": None,
                    "sha256": sha256_file(upload),
                }
            self.store.update(
                job_id,
                status="done",
                stage=None,
                finished=time.time(),
                result=json_safe(record),
                files=json_safe(files),
            )
        finally:
            upload.unlink(missing_ok=True)

    def _thumbnails(self, job_id: str, upload: Path, timeline: dict[str, Any]) -> dict | None:
        """The timeline's thumbnails in the job's results (None, logged, when the video cannot
        be read again: the page then draws the charts without them)."""
        from engine.explain import write_timeline_thumbnails

        try:
            return write_timeline_thumbnails(
                self.engine, upload, timeline, self.store.result_dir(job_id)
            )
        except EngineError as exc:
            log.warning("job %s: no timeline thumbnails: %s", job_id, exc)
        except Exception:  # the thumbnails are optional: never fail a scored job over them
            log.exception("job %s: no timeline thumbnails", job_id)
        return None


class Janitor:
    """Keeps a :class:`JobStore` bounded. :meth:`sweep` deletes finished jobs (``done`` or
    ``error``) that finished more than ``retention_s`` ago (0: never), then, while the bytes
    under ``results/`` and ``uploads/`` exceed ``max_bytes`` (0: no limit), the finished jobs
    that finished first; queued and running jobs are never deleted. It also removes result
    directories left without a job row and uploads without one older than an hour (a crash
    between two steps). :meth:`start` sweeps once, then a daemon thread sweeps every
    ``interval`` seconds and after each :meth:`poke` (one per finished job)."""

    def __init__(
        self,
        store: JobStore,
        *,
        retention_s: float = RETENTION_HOURS * 3600,
        max_bytes: int = int(MAX_RESULTS_MB * 2**20),
        interval: float = JANITOR_INTERVAL_S,
    ) -> None:
        self.store = store
        self.retention_s = retention_s
        self.max_bytes = max_bytes
        self.interval = interval
        self._sweep_lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._sizes: dict[str, int] = {}  # bytes of finished jobs' result directories
        self._warned_over = False

    # -------------------------------------------------------------- life cycle

    def start(self) -> None:
        self._safe_sweep()
        self._stopping = False
        self._thread = threading.Thread(target=self._loop, name="dfe-janitor", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        self._stopping = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def poke(self, _job_id: str | None = None) -> None:
        """Sweep soon (the thread wakes up); called after each finished job."""
        self._wake.set()

    def _loop(self) -> None:
        while True:
            self._wake.wait(self.interval)
            self._wake.clear()
            if self._stopping:
                return
            self._safe_sweep()

    def _safe_sweep(self) -> None:
        try:
            self.sweep()
        except Exception:  # a failed sweep must not stop the server or the next sweep
            log.exception("the janitor could not clean the data directory")

    # -------------------------------------------------------------- sweeping

    def sweep(self, now: float | None = None) -> list[str]:
        """One pass; returns the ids of the jobs deleted, in order."""
        now = time.time() if now is None else now
        deleted: list[str] = []
        with self._sweep_lock:
            if self.retention_s > 0:
                hours = self.retention_s / 3600
                for job_id, finished in self.store.finished_jobs(before=now - self.retention_s):
                    if self.store.delete(job_id):
                        deleted.append(job_id)
                        log.info(
                            "deleted job %s: finished %.1f h ago, past the retention of %g h",
                            job_id,
                            (now - finished) / 3600,
                            hours,
                        )
            self._remove_orphans(now)
            if self.max_bytes > 0:
                deleted += self._enforce_budget()
        return deleted

    def usage(self) -> int:
        """Bytes under ``results/`` and ``uploads/`` now."""
        with self._sweep_lock:
            sizes, uploads = self._measure({job_id for job_id, _ in self.store.finished_jobs()})
        return sum(sizes.values()) + uploads

    def _enforce_budget(self) -> list[str]:
        finished = self.store.finished_jobs()
        sizes, uploads = self._measure({job_id for job_id, _ in finished})
        total = sum(sizes.values()) + uploads
        deleted: list[str] = []
        budget_mb = self.max_bytes / 2**20
        for job_id, _finished in finished:
            if total <= self.max_bytes:
                break
            size = sizes.get(job_id, 0)
            if self.store.delete(job_id):
                deleted.append(job_id)
                log.info(
                    "deleted job %s (%.1f MB): the results took %.1f MB, over the budget of "
                    "%g MB; oldest finished jobs go first",
                    job_id,
                    size / 2**20,
                    total / 2**20,
                    budget_mb,
                )
            total -= size  # gone either way (a DELETE request may have been first)
            self._sizes.pop(job_id, None)
        if total > self.max_bytes:
            if not self._warned_over:
                log.warning(
                    "the data directory holds %.1f MB, over the budget of %g MB, in jobs that "
                    "are queued or running (never deleted); it shrinks once they finish",
                    total / 2**20,
                    budget_mb,
                )
            self._warned_over = True
        else:
            self._warned_over = False
        return deleted

    def _measure(self, finished: set[str]) -> tuple[dict[str, int], int]:
        """Bytes of each directory under ``results/`` (cached for finished jobs, whose
        results no longer change) and of ``uploads/`` in all."""
        sizes: dict[str, int] = {}
        for entry in _scandir(self.store.results):
            name = entry.name
            if name in self._sizes:
                sizes[name] = self._sizes[name]
                continue
            size = _tree_bytes(entry)
            sizes[name] = size
            if name in finished:
                self._sizes[name] = size
        for stale in set(self._sizes) - set(sizes):
            del self._sizes[stale]
        uploads = sum(_tree_bytes(entry) for entry in _scandir(self.store.uploads))
        return sizes, uploads

    def _remove_orphans(self, now: float) -> None:
        # list the files before reading the rows: a row is created before its results exist
        results = [e.name for e in _scandir(self.store.results) if _ID.match(e.name)]
        uploads = [e for e in _scandir(self.store.uploads) if _ID.match(e.name)]
        known = self.store.ids()
        for name in results:
            if name not in known:
                shutil.rmtree(self.store.result_dir(name), ignore_errors=True)
                self._sizes.pop(name, None)
                log.info("removed the results directory of job %s, which has no record", name)
        for entry in uploads:
            if entry.name in known:
                continue
            try:
                age = now - entry.stat(follow_symlinks=False).st_mtime
            except OSError:
                continue
            if age > ORPHAN_UPLOAD_AGE_S:
                Path(entry.path).unlink(missing_ok=True)
                log.info("removed upload %s, which has no job record", entry.name)


def _scandir(path: Path) -> list[os.DirEntry]:
    try:
        with os.scandir(path) as it:
            return list(it)
    except FileNotFoundError:
        return []


def _tree_bytes(entry: os.DirEntry) -> int:
    """Bytes of the files under ``entry`` (symbolic links are not followed)."""
    try:
        if entry.is_dir(follow_symlinks=False):
            return sum(_tree_bytes(e) for e in _scandir(Path(entry.path)))
        return entry.stat(follow_symlinks=False).st_size
    except OSError:  # deleted meanwhile
        return 0
