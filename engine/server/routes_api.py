"""The JSON API v1 of ``dfe serve``: upload a video as a job, poll it, delete it, and the
server's health. Every route reads the app's :class:`engine.server.state.AppState`.

The handlers are described by comments, not docstrings: FastAPI would publish a handler's
docstring as its operation's description in ``/openapi.json``, whose descriptions are the
routes' ``summary`` and ``responses``."""

from __future__ import annotations

import logging
from typing import Any

from core.deps import require
from engine.server.jobs import FINISHED, ID_PATTERN
from engine.server.state import AppState, ServerState
from engine.server.uploads import UPLOAD_SCHEMA, create_job

require("fastapi", purpose="dfe serve")
from fastapi import APIRouter, HTTPException, Request  # noqa: E402
from fastapi import Path as PathParam  # noqa: E402
from fastapi.responses import JSONResponse, Response  # noqa: E402

log = logging.getLogger(__name__)

#: The ``{job_id}`` path parameter of the API's and the pages' routes.
JOB_ID = PathParam(pattern=ID_PATTERN, description="job id (32 hex digits)")

router = APIRouter()


@router.post(
    "/api/v1/jobs",
    status_code=202,
    openapi_extra=UPLOAD_SCHEMA,
    summary="Upload a video (multipart field `video`, optional `seq_len` and `timeline`)",
    responses={
        413: {"description": "upload too large"},
        415: {"description": "not a video"},
        429: {"description": "queue full"},
    },
)
async def post_job(request: Request, state: ServerState) -> dict[str, str]:
    # Queue the uploaded video: ``{"id": job_id}`` (202).
    return {"id": await create_job(state, request)}


@router.get("/api/v1/jobs/{job_id}", summary="Poll a job; `result` is the dfe predict record")
def get_job(state: ServerState, job_id: str = JOB_ID) -> dict[str, Any]:
    # The job's JSON (:func:`job_json`); 404 for an unknown id.
    return job_json(state, job_id)


@router.delete(
    "/api/v1/jobs/{job_id}",
    status_code=204,
    response_class=Response,
    summary="Delete a finished job and its files, or cancel a queued one (409 while it runs)",
    responses={
        404: {"description": "no such job"},
        409: {"description": "the job is running; retry when it has finished"},
    },
)
def delete_job(state: ServerState, job_id: str = JOB_ID) -> Response:
    # Delete a finished job, or cancel and delete a queued one (204); 404 for an unknown id,
    # 409 while the job runs.
    store, runner = state.store, state.runner
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


@router.get(
    "/api/v1/health",
    summary="Backend and model; 503 with the reason until the models have loaded",
    responses={503: {"description": "the classifier or the detector is not loaded (yet)"}},
)
def health(state: ServerState) -> JSONResponse:
    # Backend, model and queue; 503 (``Retry-After: 5``) with the reason until the models
    # have loaded.
    readiness = state.readiness
    desc = state.engine.describe()
    body = {
        "status": "ok" if readiness.ready else readiness.state,
        "backend": desc["backend"],
        "model": desc,
        "queue": {"active": state.runner.active, "max": state.max_queue, "workers": state.workers},
    }
    if not readiness.ready:
        body["reason"] = readiness.reason
        return JSONResponse(body, status_code=503, headers={"Retry-After": "5"})
    return JSONResponse(body)


def job_json(state: AppState, job_id: str) -> dict[str, Any]:
    """The API's view of job ``job_id`` (status, stage, queue position, the result and its
    files as URLs). Raises :class:`fastapi.HTTPException` 404 for an unknown id."""
    job = state.store.get(job_id)
    if job is None:
        raise HTTPException(404, f"no job {job_id}")
    files = None
    if job.files:
        files = _file_urls(job.files, f"/jobs/{job_id}/files/")
    return {
        "id": job.id,
        "status": job.status,
        "stage": job.stage,
        "queue_position": state.runner.position(job_id) if job.status == "queued" else None,
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
