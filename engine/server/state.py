"""What the routes of ``dfe serve`` share: one :class:`AppState` per app, on ``app.state.server``.

:func:`engine.server.app.create_app` builds it; the route modules (:mod:`engine.server.routes_api`,
:mod:`engine.server.routes_live`, :mod:`engine.server.routes_pages`) read it through the
:data:`ServerState` dependency (or :func:`server_state` of a request or WebSocket), so no route
is a closure over ``create_app``'s locals.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated

from core.deps import require
from engine.server.jobs import Janitor, JobRunner, JobStore
from engine.server.live_ws import LiveHub

require("fastapi", purpose="dfe serve")
from fastapi import Depends  # noqa: E402
from starlette.requests import HTTPConnection  # noqa: E402

if TYPE_CHECKING:
    from engine.api import Engine

log = logging.getLogger(__name__)


class Readiness:
    """Whether the engine's classifier and detector have loaded (``dfe serve`` loads them
    before it serves; an app made by :func:`engine.server.app.create_app` loads them in the
    background and answers 503 with the reason until then, or for good when one cannot
    load)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.state = "loading"
        self.reason = "the classifier and the face detector are loading"
        self._thread: threading.Thread | None = None

    @property
    def ready(self) -> bool:
        """True once both models have loaded."""
        return self.state == "ok"

    def start(self) -> None:
        """Ready at once if the engine is prepared, else load it in a daemon thread."""
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


@dataclass(frozen=True)
class AppState:
    """The state of one app: the engine, the job store, the runner of jobs (its queue), the
    janitor of finished jobs, the live sessions' hub, the models' readiness, and the limits the
    routes report or enforce (``max_upload_bytes``: bytes of one uploaded file; ``max_queue``
    and ``workers``: the runner's)."""

    engine: Engine
    store: JobStore
    runner: JobRunner
    janitor: Janitor
    live: LiveHub
    readiness: Readiness
    max_upload_bytes: int
    max_queue: int
    workers: int


def server_state(connection: HTTPConnection) -> AppState:
    """The :class:`AppState` of the app serving ``connection`` (a request or a WebSocket)."""
    return connection.app.state.server


async def _server_state(connection: HTTPConnection) -> AppState:
    # a coroutine, so FastAPI resolves it on the event loop (a plain function would take a
    # thread of the pool before each request)
    return server_state(connection)


#: A route parameter that receives the app's :class:`AppState` (a FastAPI dependency; not part
#: of the OpenAPI schema).
ServerState = Annotated[AppState, Depends(_server_state)]
