"""The live mode's WebSocket of ``dfe serve``, ``/api/v1/live``: each session is served by the
app's :class:`engine.server.live_ws.LiveHub` (the protocol: :mod:`engine.server.live_ws`)."""

from __future__ import annotations

from core.deps import require
from engine.server.state import server_state

require("fastapi", purpose="dfe serve")
from fastapi import APIRouter  # noqa: E402
from starlette.websockets import WebSocket  # noqa: E402 (FastAPI reads the annotation)

router = APIRouter()


@router.websocket("/api/v1/live")
async def live_session(websocket: WebSocket) -> None:
    """One live session, run by the app's hub (``LiveHub.endpoint``)."""
    await server_state(websocket).live.endpoint(websocket)
