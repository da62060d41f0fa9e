"""The ASGI application of ``dfe serve``: an upload page and a versioned JSON API on one Engine.

Limits: the request body is counted while it streams in (413 past the limit, before the rest
is read; a larger Content-Length is refused at once), the queue is checked before the body is
read (429), the type is decided by decoding the saved file (415 with the decoder's reason), and
files get generated names in the private data directory. No debug mode, no secret. What is
stored stays bounded: a janitor deletes finished jobs past the retention time and, over the
disk budget, the oldest finished jobs first; ``DELETE /api/v1/jobs/{id}`` deletes one.

:func:`create_app` builds the shared state (:mod:`engine.server.state`) and includes the routers:
the JSON API (:mod:`engine.server.routes_api`; uploads are accepted by
:mod:`engine.server.uploads`), the live WebSocket (:mod:`engine.server.routes_live`) and the
HTML pages with the result files (:mod:`engine.server.routes_pages`).
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from core.deps import require
from core.errors import EngineError, InvalidInputError
from engine.server import routes_api, routes_live, routes_pages
from engine.server.jobs import (
    JANITOR_INTERVAL_S,
    MAX_RESULTS_MB,
    RETENTION_HOURS,
    Janitor,
    JobRunner,
    JobStore,
)
from engine.server.live_ws import LiveHub, LiveLimits
from engine.server.state import AppState, Readiness
from engine.server.uploads import MAX_UPLOAD_BYTES

require("fastapi", purpose="dfe serve")
require("multipart", purpose="dfe serve (multipart uploads)")
from fastapi import FastAPI, Request  # noqa: E402
from fastapi.concurrency import run_in_threadpool  # noqa: E402
from fastapi.responses import JSONResponse  # noqa: E402

if TYPE_CHECKING:
    from engine.api import Engine


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
    allowed_hosts: Sequence[str] | None = None,
) -> FastAPI:
    """The app; the runner's and the janitor's threads start and stop with the app's lifespan.
    ``workers=0`` accepts jobs without running them (for tests of the queue). Finished jobs
    are deleted ``retention_hours`` after they finished (0: kept), and the oldest finished
    first while results and uploads exceed ``max_results_bytes`` (0: no limit); the janitor
    runs at start, every ``janitor_interval`` seconds and after each finished job. ``live``:
    the limits of the page's live mode (``/api/v1/live``, :mod:`engine.server.live_ws`).
    ``allowed_hosts``: the only ``Host`` header values (names or addresses, no port;
    ``*.example.com`` patterns) a request or WebSocket may carry, others get 400 (Starlette's
    ``TrustedHostMiddleware``): with a browser, a page on another site whose name is made to
    resolve to this server (DNS rebinding) sends its own name as ``Host`` and is refused; None
    accepts any host (``dfe serve`` passes the loopback names when it binds to loopback, see
    :func:`engine.commands.serve.allowed_hosts`).

    The routes are those of :mod:`engine.server.routes_live`, :mod:`engine.server.routes_api`
    and :mod:`engine.server.routes_pages`; they share an :class:`engine.server.state.AppState`
    on ``app.state.server`` (its store, runner, engine, janitor and live hub are also
    ``app.state.store``, ``.runner``, ``.engine``, ``.janitor`` and ``.live``). Raises
    :class:`InvalidInputError` for a negative or non-finite ``retention_hours`` or
    ``max_results_bytes``, or a ``janitor_interval`` that is not > 0."""
    _check_number("retention_hours", retention_hours)
    _check_number("max_results_bytes", max_results_bytes)
    _check_number("janitor_interval", janitor_interval, positive=True)
    state = _build_state(
        engine,
        Path(data_dir),
        max_upload_bytes=max_upload_bytes,
        max_queue=max_queue,
        workers=workers,
        retention_s=retention_hours * 3600,
        max_results_bytes=int(max_results_bytes),
        janitor_interval=janitor_interval,
        live=live,
    )
    app = FastAPI(
        title="deepfake-engine",
        version="1",
        description="Upload a video, poll the job, read REAL/FAKE with per-frame scores.",
        debug=False,
        lifespan=_lifespan,
    )
    app.state.server = state
    app.state.store, app.state.runner, app.state.engine = state.store, state.runner, engine
    app.state.janitor, app.state.live = state.janitor, state.live
    app.include_router(routes_live.router)
    app.include_router(routes_api.router)
    app.include_router(routes_pages.router)
    app.middleware("http")(security_headers)
    if allowed_hosts is not None:
        from starlette.middleware.trustedhost import TrustedHostMiddleware

        app.add_middleware(TrustedHostMiddleware, allowed_hosts=list(allowed_hosts))
    app.add_exception_handler(EngineError, engine_error)
    return app


def _build_state(
    engine: Engine,
    data_dir: Path,
    *,
    max_upload_bytes: int,
    max_queue: int,
    workers: int,
    retention_s: float,
    max_results_bytes: int,
    janitor_interval: float,
    live: LiveLimits | None,
) -> AppState:
    """The store in ``data_dir``, the janitor, the runner (poking the janitor after each job),
    the readiness of the models and the live hub (which refuses sessions until ready)."""
    store = JobStore(data_dir)
    janitor = Janitor(
        store, retention_s=retention_s, max_bytes=max_results_bytes, interval=janitor_interval
    )
    runner = JobRunner(
        engine, store, max_queue=max_queue, workers=workers, on_finished=janitor.poke
    )
    readiness = Readiness(engine)
    live_hub = LiveHub(engine, live, ready=lambda: (readiness.ready, readiness.reason))
    return AppState(
        engine=engine,
        store=store,
        runner=runner,
        janitor=janitor,
        live=live_hub,
        readiness=readiness,
        max_upload_bytes=max_upload_bytes,
        max_queue=max_queue,
        workers=workers,
    )


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Start the models' loading (in the background), the runner and the janitor; on
    shutdown close the live sessions, stop the janitor and the runner, close the store."""
    state: AppState = app.state.server
    state.readiness.start()  # the classifier and the detector load in the background
    state.runner.start()
    await run_in_threadpool(state.janitor.start)  # sweeps once now, then in its own thread
    try:
        yield
    finally:
        state.live.close()
        state.janitor.stop()
        state.runner.stop()
        state.store.close()


async def security_headers(request: Request, call_next):
    """HTTP middleware: ``nosniff``, ``X-Frame-Options: DENY`` and ``no-referrer`` on every
    response."""
    response = await call_next(request)
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Referrer-Policy"] = "no-referrer"
    return response


async def engine_error(_request: Request, exc: EngineError) -> JSONResponse:
    """An :class:`EngineError` that escapes a route: 400 with its message as ``detail``."""
    return JSONResponse({"detail": str(exc)}, status_code=400)


def _check_number(name: str, value: float, *, positive: bool = False) -> None:
    if not math.isfinite(value) or value < 0 or (positive and value == 0):
        bound = "> 0" if positive else ">= 0"
        raise InvalidInputError(f"{name} must be a finite number {bound}, got {value!r}")
