"""The ASGI application of ``dfe serve``: an upload page and a versioned JSON API on one Engine.

Limits: the request body is counted while it streams in (413 past the limit, before the rest
is read; a larger Content-Length is refused at once), the queue is checked before the body is
read (429), the type is decided by decoding the saved file (415 with the decoder's reason), and
files get generated names in the private data directory. No debug mode, no secret. What is
stored stays bounded: a janitor deletes finished jobs past the retention time and, over the
disk budget, the oldest finished jobs first; ``DELETE /api/v1/jobs/{id}`` deletes one.
"""

from __future__ import annotations

import logging
import math
import re
import shutil
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.core.deps import require
from engine.core.errors import EngineError, InvalidInputError
from engine.server import pages
from engine.server.jobs import (
    FINISHED,
    ID_PATTERN,
    JANITOR_INTERVAL_S,
    MAX_RESULTS_MB,
    RETENTION_HOURS,
    Janitor,
    JobRunner,
    JobStore,
    QueueFullError,
    new_id,
)
from engine.server.live_ws import LiveHub, LiveLimits

require("fastapi", purpose="dfe serve")
require("multipart", purpose="dfe serve (multipart uploads)")
from fastapi import FastAPI, HTTPException, Request  # noqa: E402
from fastapi import Path as PathParam  # noqa: E402
from fastapi.concurrency import run_in_threadpool  # noqa: E402
from fastapi.responses import (  # noqa: E402
    FileResponse,
    HTMLResponse,
    JSONResponse,
    RedirectResponse,
    Response,
)
from starlette.datastructures import UploadFile  # noqa: E402

if TYPE_CHECKING:
    from engine.api import Engine

log = logging.getLogger(__name__)

MAX_UPLOAD_BYTES = 100 * 1024 * 1024  # the original's MAX_UPLOAD_SIZE
MULTIPART_SLACK = 64 * 1024  # form fields and part headers around the file
MAX_SEQ_LEN = 300
SLIDER_STEPS = (10, 20, 40, 60, 80, 100)
_FILE_NAME = re.compile(
    r"^(p\d{1,3}_)?(overlay|crop|frame)_\d{5}\.(png|jpg)$|^(scores|contact_sheet)\.png$"
    r"|^tl_(frame|p\d{1,3})_\d{5,7}\.jpg$"  # the timeline's thumbnails (engine.explain)
)
_JOB_ID = PathParam(pattern=ID_PATTERN, description="job id (32 hex digits)")

_UPLOAD_SCHEMA = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["video"],
                    "properties": {
                        "video": {"type": "string", "format": "binary"},
                        "seq_len": {"type": "integer", "minimum": 1, "maximum": MAX_SEQ_LEN},
                        "timeline": {
                            "type": "boolean",
                            "default": False,
                            "description": "also score the whole video over time, per person "
                            "(the timeline-fps the server runs with, 2 frames per second by "
                            "default), and find the segments judged manipulated: the result "
                            "gets `timeline` and `segments`, and a video with a segment is not "
                            "REAL (reason MANIPULATED_SEGMENT)",
                        },
                    },
                }
            }
        },
    }
}


class _TooLarge(Exception):
    pass


def _display_name(name: str | None) -> str:
    """The client's file name for display only (never a path on disk)."""
    base = Path((name or "upload").replace("\\", "/")).name
    return re.sub(r"[^\w.\- ]", "_", base)[:120] or "upload"


def _parse_seq_len(value: Any) -> int | None:
    if value is None or value == "":
        return None
    try:
        n = int(str(value))
    except ValueError:
        n = 0
    if not 1 <= n <= MAX_SEQ_LEN:
        raise HTTPException(
            422, f"seq_len must be an integer from 1 to {MAX_SEQ_LEN}, got {value!r}"
        )
    return n


_TRUE = ("1", "true", "on", "yes")
_FALSE = ("", "0", "false", "off", "no")


def _parse_flag(name: str, value: Any) -> bool:
    """A form's boolean field: absent or ``0/false/off/no`` is off, ``1/true/on/yes`` on."""
    if value is None:
        return False
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise HTTPException(
        422,
        f"{name} must be one of {', '.join(_TRUE)} or {', '.join(repr(v) for v in _FALSE)}, "
        f"got {value!r}",
    )


def create_app(
    engine: Engine,
    data_dir: str | Path,
    *,
    max_upload_bytes: int = MAX_UPLOAD_BYTES,
    max_queue: int = 64,
    workers: int = 1,
    retention_hours: float = RETENTION_HOURS,
    max_results_bytes: int = int(MAX_RESULTS_MB * 2**20),
    janitor_interval: float = JANITOR_INTERVAL_S,
    live: LiveLimits | None = None,
) -> FastAPI:
    """The app; the runner's and the janitor's threads start and stop with the app's lifespan.
    ``workers=0`` accepts jobs without running them (for tests of the queue). Finished jobs
    are deleted ``retention_hours`` after they finished (0: kept), and the oldest finished
    first while results and uploads exceed ``max_results_bytes`` (0: no limit); the janitor
    runs at start, every ``janitor_interval`` seconds and after each finished job. ``live``:
    the limits of the page's live mode (``/api/v1/live``, :mod:`engine.server.live_ws`)."""
    _check_number("retention_hours", retention_hours)
    _check_number("max_results_bytes", max_results_bytes)
    _check_number("janitor_interval", janitor_interval, positive=True)
    store = JobStore(Path(data_dir))
    janitor = Janitor(
        store,
        retention_s=retention_hours * 3600,
        max_bytes=int(max_results_bytes),
        interval=janitor_interval,
    )
    runner = JobRunner(
        engine, store, max_queue=max_queue, workers=workers, on_finished=janitor.poke
    )
    readiness = Readiness(engine)
    live_hub = LiveHub(engine, live, ready=lambda: (readiness.ready, readiness.reason))

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        readiness.start()  # the classifier and the detector load in the background
        runner.start()
        await run_in_threadpool(janitor.start)  # sweeps once now, then in its own thread
        try:
            yield
        finally:
            live_hub.close()
            janitor.stop()
            runner.stop()
            store.close()

    app = FastAPI(
        title="deepfake-engine",
        version="1",
        description="Upload a video, poll the job, read REAL/FAKE with per-frame scores.",
        debug=False,
        lifespan=lifespan,
    )
    app.state.store, app.state.runner, app.state.engine = store, runner, engine
    app.state.janitor, app.state.live = janitor, live_hub
    app.add_api_websocket_route("/api/v1/live", live_hub.endpoint)

    @app.middleware("http")
    async def security_headers(request: Request, call_next):
        response = await call_next(request)
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["X-Frame-Options"] = "DENY"
        response.headers["Referrer-Policy"] = "no-referrer"
        return response

    async def create_job(request: Request) -> str:
        if not readiness.ready:
            raise HTTPException(503, readiness.reason, headers={"Retry-After": "5"})
        try:
            runner.reserve()
        except QueueFullError as exc:
            raise HTTPException(429, str(exc), headers={"Retry-After": "5"}) from exc
        try:
            return await _accept(request)
        except BaseException:
            runner.release()
            raise

    async def _accept(request: Request) -> str:
        limit = max_upload_bytes + MULTIPART_SLACK
        too_big = f"the upload is larger than the limit of {max_upload_bytes / 2**20:.0f} MB"
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > limit:
            raise HTTPException(413, too_big)
        seen = 0

        async def receive() -> dict:
            nonlocal seen
            message = await request.receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise _TooLarge
            return message

        try:
            form = await Request(request.scope, receive).form(max_files=1, max_fields=8)
        except _TooLarge:
            raise HTTPException(413, too_big) from None
        except Exception as exc:  # malformed multipart
            raise HTTPException(400, f"could not read the multipart form: {exc}") from exc
        try:
            video = form.get("video")
            if not isinstance(video, UploadFile):
                raise HTTPException(422, "the multipart form needs a file field named 'video'")
            seq_len = _parse_seq_len(form.get("seq_len"))
            timeline = _parse_flag("timeline", form.get("timeline"))
            name = _display_name(video.filename)
            job_id = new_id()
            path = store.upload_path(job_id)
            await run_in_threadpool(_save, video, path)
        finally:
            await form.close()
        try:
            size = path.stat().st_size
            if size > max_upload_bytes:
                raise HTTPException(413, too_big)
            await run_in_threadpool(_check_video, path, name)
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        store.create(job_id, name, seq_len, timeline=timeline)
        runner.submit(job_id)
        return job_id

    # ------------------------------------------------------------------ JSON API v1

    @app.post(
        "/api/v1/jobs",
        status_code=202,
        openapi_extra=_UPLOAD_SCHEMA,
        summary="Upload a video (multipart field `video`, optional `seq_len` and `timeline`)",
        responses={
            413: {"description": "upload too large"},
            415: {"description": "not a video"},
            429: {"description": "queue full"},
        },
    )
    async def post_job(request: Request) -> dict[str, str]:
        return {"id": await create_job(request)}

    @app.get("/api/v1/jobs/{job_id}", summary="Poll a job; `result` is the dfe predict record")
    def get_job(job_id: str = _JOB_ID) -> dict[str, Any]:
        return _job_json(job_id)

    @app.delete(
        "/api/v1/jobs/{job_id}",
        status_code=204,
        response_class=Response,
        summary="Delete a finished job and its files, or cancel a queued one (409 while it runs)",
        responses={
            404: {"description": "no such job"},
            409: {"description": "the job is running; retry when it has finished"},
        },
    )
    def delete_job(job_id: str = _JOB_ID) -> Response:
        job = store.get(job_id)
        if job is None:
            raise HTTPException(404, f"no job {job_id}")
        if job.status in FINISHED:
            if not store.delete(job_id, FINISHED):
                raise HTTPException(404, f"no job {job_id}")  # deleted meanwhile
            log.info("deleted job %s (%s) on request", job_id, job.status)
        elif job.status == "queued" and runner.cancel(job_id):
            store.delete(job_id, ("queued",))
            log.info("cancelled and deleted queued job %s on request", job_id)
        else:  # running, or taken by a worker that is starting it
            raise HTTPException(
                409,
                f"job {job_id} is running and cannot be deleted now; retry the DELETE when it "
                "has finished (status done or error)",
            )
        return Response(status_code=204)

    @app.get(
        "/api/v1/health",
        summary="Backend and model; 503 with the reason until the models have loaded",
        responses={503: {"description": "the classifier or the detector is not loaded (yet)"}},
    )
    def health() -> JSONResponse:
        desc = engine.describe()
        body = {
            "status": "ok" if readiness.ready else readiness.state,
            "backend": desc["backend"],
            "model": desc,
            "queue": {"active": runner.active, "max": max_queue, "workers": workers},
        }
        if not readiness.ready:
            body["reason"] = readiness.reason
            return JSONResponse(body, status_code=503, headers={"Retry-After": "5"})
        return JSONResponse(body)

    def _job_json(job_id: str) -> dict[str, Any]:
        job = store.get(job_id)
        if job is None:
            raise HTTPException(404, f"no job {job_id}")
        files = None
        if job.files:
            files = _file_urls(job.files, f"/jobs/{job_id}/files/")
        return {
            "id": job.id,
            "status": job.status,
            "stage": job.stage,
            "queue_position": runner.position(job_id) if job.status == "queued" else None,
            "filename": job.filename,
            "seq_len": job.seq_len,
            "timeline": job.timeline,
            "created": job.created,
            "started": job.started,
            "finished": job.finished,
            "error": job.error,
            "result": job.result,
            "files": files,
        }

    # ------------------------------------------------------------------ pages

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def index() -> str:
        return pages.upload_page(
            SLIDER_STEPS,
            max_upload_bytes,
            demo=engine.describe()["demo"],
            ready=readiness.ready,
            timeline_fps=engine.config.timeline_fps,
            timeline=engine.config.timeline,
            live=live_hub.page_settings(),
        )

    @app.post("/upload", include_in_schema=False)
    async def upload_form(request: Request):
        try:
            job_id = await create_job(request)
        except HTTPException as exc:
            return HTMLResponse(pages.error_page(exc.status_code, str(exc.detail)), exc.status_code)
        return RedirectResponse(f"/jobs/{job_id}", status_code=303)

    @app.get("/jobs/{job_id}", response_class=HTMLResponse, include_in_schema=False)
    def job_page(job_id: str = _JOB_ID):
        job = store.get(job_id)
        if job is None:
            return HTMLResponse(pages.error_page(404, f"no job {job_id}"), 404)
        return pages.job_page(_job_json(job_id), now=time.time(), demo=engine.describe()["demo"])

    @app.get("/jobs/{job_id}/files/{name}", include_in_schema=False)
    def job_file(name: str, job_id: str = _JOB_ID):
        if not _FILE_NAME.match(name):
            raise HTTPException(404, "no such file")
        path = store.result_dir(job_id) / name
        if not path.is_file():
            raise HTTPException(404, "no such file")
        return FileResponse(path, headers={"Cache-Control": "private, max-age=3600"})

    @app.exception_handler(EngineError)
    async def engine_error(_request: Request, exc: EngineError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=400)

    return app


class Readiness:
    """Whether the engine's classifier and detector have loaded (``dfe serve`` loads them
    before it serves; an app made by :func:`create_app` loads them in the background and
    answers 503 with the reason until then, or for good when one cannot load)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.state = "loading"
        self.reason = "the classifier and the face detector are loading"
        self._thread: threading.Thread | None = None

    @property
    def ready(self) -> bool:
        return self.state == "ok"

    def start(self) -> None:
        if self.engine.is_prepared():
            self.state, self.reason = "ok", ""
            return
        if self._thread is None:
            self._thread = threading.Thread(target=self._load, name="dfe-load", daemon=True)
            self._thread.start()

    def _load(self) -> None:
        try:
            self.engine.prepare()
        except Exception as exc:  # reported by /api/v1/health, never raised into a request
            log.error("the models could not be loaded: %s", exc)
            self.reason = f"the models could not be loaded: {exc}"
            self.state = "error"
        else:
            self.state, self.reason = "ok", ""


def _check_number(name: str, value: float, *, positive: bool = False) -> None:
    if not math.isfinite(value) or value < 0 or (positive and value == 0):
        bound = "> 0" if positive else ">= 0"
        raise InvalidInputError(f"{name} must be a finite number {bound}, got {value!r}")


def _file_urls(files: dict[str, Any], base: str) -> dict[str, Any]:
    """The job's result files as URLs (names nested in lists and per-person dicts too)."""

    def url(value: Any) -> Any:
        if isinstance(value, str):
            return base + value
        if isinstance(value, list):
            return [url(v) for v in value]
        if isinstance(value, dict):
            return {k: url(v) if k in ("crops", "overlays") else v for k, v in value.items()}
        return value

    def thumbs(value: Any) -> Any:  # the timeline's: times and indices stay, names (or None) go
        if not isinstance(value, dict):
            return value
        return {k: url(v) if k in ("frames", "crops") else v for k, v in value.items()}

    return {k: thumbs(v) if k == "timeline" else url(v) for k, v in files.items()}


def _save(upload: UploadFile, path: Path) -> None:
    upload.file.seek(0)
    with open(path, "xb") as out:
        shutil.copyfileobj(upload.file, out, 1 << 20)


def _check_video(path: Path, name: str) -> None:
    """Decide the type by decoding one frame; 415 with the decoder's reason otherwise."""
    from preprocess.video import read_video

    try:
        read_video(path, 1)
    except EngineError as exc:
        reason = str(exc).replace(f"'{path}'", repr(name)).replace(str(path), name)
        raise HTTPException(415, f"not a video that can be decoded: {reason}") from exc
