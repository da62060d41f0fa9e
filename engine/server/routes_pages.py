"""The HTML side of ``dfe serve``: the upload page, the form's upload, a job's page and its
result files (overlays, crops, charts, the timeline's thumbnails). Every route reads the app's
:class:`engine.server.state.AppState`; the HTML comes from :mod:`engine.server.pages`."""

from __future__ import annotations

import re
import time

from core.deps import require
from engine.server import pages
from engine.server.routes_api import JOB_ID, job_json
from engine.server.state import ServerState
from engine.server.uploads import create_job

require("fastapi", purpose="dfe serve")
from fastapi import APIRouter, HTTPException, Request  # noqa: E402
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse  # noqa: E402

SLIDER_STEPS = (10, 20, 40, 60, 80, 100)
#: The names of the result files a job's page may fetch (anything else is 404).
FILE_NAME = re.compile(
    r"^(p\d{1,3}_)?(overlay|crop|frame)_\d{5}\.(png|jpg)$|^(scores|contact_sheet)\.png$"
    r"|^tl_(frame|p\d{1,3})_\d{5,7}\.jpg$"  # the timeline's thumbnails (engine.explain)
)

router = APIRouter()


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
def index(state: ServerState) -> str:
    """The upload page (with the live section)."""
    engine = state.engine
    return pages.upload_page(
        SLIDER_STEPS,
        state.max_upload_bytes,
        demo=engine.describe()["demo"],
        ready=state.readiness.ready,
        timeline_fps=engine.config.timeline_fps,
        timeline=engine.config.timeline,
        live=state.live.page_settings(),
    )


@router.post("/upload", include_in_schema=False)
async def upload_form(request: Request, state: ServerState):
    """The page's form: a redirect to the job's page (303), or an error page with the
    status of the refusal."""
    try:
        job_id = await create_job(state, request)
    except HTTPException as exc:
        return HTMLResponse(pages.error_page(exc.status_code, str(exc.detail)), exc.status_code)
    return RedirectResponse(f"/jobs/{job_id}", status_code=303)


@router.get("/jobs/{job_id}", response_class=HTMLResponse, include_in_schema=False)
def job_page(state: ServerState, job_id: str = JOB_ID):
    """A job's page; an error page (404) for an unknown id."""
    if state.store.get(job_id) is None:
        return HTMLResponse(pages.error_page(404, f"no job {job_id}"), 404)
    return pages.job_page(
        job_json(state, job_id), now=time.time(), demo=state.engine.describe()["demo"]
    )


@router.get("/jobs/{job_id}/files/{name}", include_in_schema=False)
def job_file(state: ServerState, name: str, job_id: str = JOB_ID):
    """One result file of a job (``Cache-Control: private, max-age=3600``); 404 for a name
    outside :data:`FILE_NAME` or a file that does not exist."""
    if not FILE_NAME.match(name):
        raise HTTPException(404, "no such file")
    path = state.store.result_dir(job_id) / name
    if not path.is_file():
        raise HTTPException(404, "no such file")
    return FileResponse(path, headers={"Cache-Control": "private, max-age=3600"})
