"""Accepting an upload of ``dfe serve`` as a job (the API's ``POST /api/v1/jobs`` and the page's
``POST /upload``): 503 until the models load, the queue checked before the body is read (429),
the body counted while it streams in (413 past the limit, before the rest is read; a larger
Content-Length is refused at once), the form's fields checked (400 a malformed form, 422 a
missing file or a bad field), the type decided by decoding the saved file (415 with the
decoder's reason), and the file saved under a generated name in the private data directory.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

from core.deps import require
from core.errors import EngineError
from engine.server.jobs import QueueFullError, new_id
from engine.server.state import AppState

require("fastapi", purpose="dfe serve")
require("multipart", purpose="dfe serve (multipart uploads)")
from fastapi import HTTPException, Request  # noqa: E402
from fastapi.concurrency import run_in_threadpool  # noqa: E402
from starlette.datastructures import UploadFile  # noqa: E402

MAX_UPLOAD_BYTES = 100 * 1024 * 1024  # the original's MAX_UPLOAD_SIZE
MULTIPART_SLACK = 64 * 1024  # form fields and part headers around the file
MAX_SEQ_LEN = 300

#: The OpenAPI description of the multipart body of ``POST /api/v1/jobs``.
UPLOAD_SCHEMA = {
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


async def create_job(state: AppState, request: Request) -> str:
    """Accept the multipart upload of ``request`` as a queued job; returns the job's id.

    Raises :class:`fastapi.HTTPException`: 503 (models not loaded; ``Retry-After: 5``), 429
    (queue full; ``Retry-After: 5``), 413, 400, 422, 415 (see the module docstring). The queue
    place reserved first is released on any failure."""
    readiness, runner = state.readiness, state.runner
    if not readiness.ready:
        raise HTTPException(503, readiness.reason, headers={"Retry-After": "5"})
    try:
        runner.reserve()
    except QueueFullError as exc:
        raise HTTPException(429, str(exc), headers={"Retry-After": "5"}) from exc
    try:
        return await _accept(state, request)
    except BaseException:
        runner.release()
        raise


async def _accept(state: AppState, request: Request) -> str:
    """Read, check and save the upload, then create and submit its job."""
    max_upload_bytes = state.max_upload_bytes
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
        path = state.store.upload_path(job_id)
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
    state.store.create(job_id, name, seq_len, timeline=timeline)
    state.runner.submit(job_id)
    return job_id


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
