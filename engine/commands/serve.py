"""``dfe serve --model DIR``: the upload page and the JSON API on uvicorn (extra ``serve``)."""

from __future__ import annotations

import argparse
import errno
import ipaddress
import logging
import math
import os
import socket
import sys
import textwrap
from pathlib import Path

from engine.options import add_engine_options, engine_config
from engine.server.jobs import MAX_RESULTS_MB, RETENTION_HOURS

log = logging.getLogger(__name__)


def default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(base) / "deepfake-engine" / "serve"


def register(sub: argparse._SubParsersAction) -> None:
    about = (
        "Serve an upload page and a JSON API (/api/v1, docs at /docs) on one loaded model. "
        "Binds to 127.0.0.1 unless --host says otherwise; put a TLS proxy in front for anything "
        "but local use.",
        "Finished jobs are deleted --retention-hours after they finished, and the oldest "
        "finished first while results and uploads exceed --max-results-mb; DELETE "
        "/api/v1/jobs/{id} deletes one (a queued job is cancelled; a running one: 409).",
        "The page's live mode judges a camera or a shared screen/tab over a WebSocket "
        "(/api/v1/live, docs/live.md): --live-sessions at once, --live-fps frames a second. "
        "Browsers give the camera only to https pages or localhost.",
    )
    p = sub.add_parser(
        "serve",
        help="web upload page and JSON API (needs the `serve` extra)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="\n\n".join(textwrap.fill(t, 79, break_on_hyphens=False) for t in about)
        + "\n\nexit codes:\n"
        "  0  ok (the server was stopped)\n"
        "  2  error: a bad option, an unknown --host, a model or detector that cannot load\n"
        "  3  some inputs failed (batch commands only; not used by serve)\n"
        "  4  --port is already in use on --host (checked before the models load)",
    )
    p.add_argument("--model", required=True, type=Path, help="exported model directory")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port, 1-65535 (default 8000)")
    p.add_argument(
        "--data",
        type=Path,
        default=None,
        help=f"private data directory for jobs and results (default {default_data_dir()})",
    )
    p.add_argument("--max-upload-mb", type=float, default=100.0, help="upload limit (MB)")
    p.add_argument("--queue", type=int, default=64, help="jobs queued or running at most (429)")
    p.add_argument("--workers", type=int, default=1, help="jobs processed at once")
    p.add_argument(
        "--retention-hours",
        type=float,
        default=RETENTION_HOURS,
        help=f"delete finished jobs this long after they finished; 0 keeps them "
        f"(default {RETENTION_HOURS:g} = 7 days)",
    )
    p.add_argument(
        "--max-results-mb",
        type=float,
        default=MAX_RESULTS_MB,
        help="disk budget of results and uploads: past it the oldest finished jobs are "
        f"deleted; 0: no limit (default {MAX_RESULTS_MB:g})",
    )
    p.add_argument(
        "--live-sessions",
        type=int,
        default=2,
        help="live sessions (camera or screen over a WebSocket) at once; 0 turns live mode off "
        "(default 2)",
    )
    p.add_argument(
        "--live-fps",
        type=float,
        default=4.0,
        help="frames per second the page sends in live mode; the server accepts up to twice "
        "that per session (default 4)",
    )
    p.add_argument(
        "--allowed-host",
        action="append",
        default=[],
        metavar="NAME",
        help="a Host name the server answers to (repeat for more; *.example.com patterns); "
        "others get 400. Default: localhost, 127.0.0.1 and [::1] when --host is a loopback "
        "address (a page whose name is made to resolve to this machine is refused), any name "
        "otherwise",
    )
    add_engine_options(p)
    p.set_defaults(func=_cmd_serve)


LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "[::1]")


def allowed_hosts(bind: str, extra: list[str]) -> list[str] | None:
    """The ``Host`` names ``dfe serve`` answers to: ``extra`` (``--allowed-host``) plus, when
    ``bind`` (``--host``) is a loopback address or ``localhost``, :data:`LOOPBACK_HOSTS`; None
    (any name) for another address with no ``--allowed-host``. The loopback default is what
    stops DNS rebinding: a web page at ``evil.example`` that makes its name resolve to 127.0.0.1
    reaches the server with ``Host: evil.example`` (its Origin then matches its Host, so the
    live WebSocket's same-origin check alone would let it in)."""
    names = [h.strip().lower() for h in extra if h.strip()]
    if _is_loopback(bind):
        return [*LOOPBACK_HOSTS, *names]
    return names or None


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return host == "localhost"


def validate_options(args: argparse.Namespace) -> None:
    """Refuse out-of-range or non-finite numbers, naming the flag (InvalidInputError)."""
    from core.errors import InvalidInputError

    if not 1 <= args.port <= 65535:
        raise InvalidInputError(f"--port must be from 1 to 65535, got {args.port}")
    checks = (
        ("--queue", args.queue, 1, ">= 1"),
        ("--workers", args.workers, 1, ">= 1"),
        ("--max-upload-mb", args.max_upload_mb, None, "> 0"),
        ("--retention-hours", args.retention_hours, 0, ">= 0 (0 keeps finished jobs)"),
        ("--max-results-mb", args.max_results_mb, 0, ">= 0 (0: no limit)"),
        ("--live-sessions", args.live_sessions, 0, ">= 0 (0: live mode off)"),
        ("--live-fps", args.live_fps, None, "> 0"),
    )
    for flag, value, low, bound in checks:
        ok = math.isfinite(value) and (value > 0 if low is None else value >= low)
        if not ok:
            raise InvalidInputError(f"{flag} must be a finite number {bound}, got {value}")


def check_port_free(host: str, port: int) -> None:
    """Bind (and close) a socket on each address ``host`` resolves to, as uvicorn will (asyncio
    ``create_server``: SO_REUSEADDR, IPv6 sockets IPv6 only). Raises PortBusyError when
    another process has the port, InvalidInputError when ``host`` does not resolve or is not
    an address of this machine, or binding is refused."""
    from core.errors import InvalidInputError, PortBusyError

    try:
        infos = socket.getaddrinfo(
            host or None, port, socket.AF_UNSPEC, socket.SOCK_STREAM, 0, socket.AI_PASSIVE
        )
    except (socket.gaierror, UnicodeError) as exc:
        raise InvalidInputError(f"--host {host!r} cannot be resolved to an address: {exc}") from exc
    held: list[socket.socket] = []
    try:
        for family, type_, proto, _canon, address in dict.fromkeys(infos):
            sock = socket.socket(family, type_, proto)
            held.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6 and hasattr(socket, "IPPROTO_IPV6"):
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                sock.bind(address)
            except OSError as exc:
                where = f"--port {port} on {host}"
                if exc.errno == errno.EADDRINUSE:
                    raise PortBusyError(
                        f"{where} is already in use (EADDRINUSE: another process has it); "
                        "choose another port with --port"
                    ) from exc
                if exc.errno == errno.EADDRNOTAVAIL:
                    raise InvalidInputError(
                        f"--host {host} is not an address of this machine ({exc.strerror}); "
                        "use 127.0.0.1, 0.0.0.0 or one of its addresses"
                    ) from exc
                if exc.errno == errno.EACCES:
                    raise InvalidInputError(
                        f"cannot bind {where}: permission denied (ports below 1024 need "
                        "privileges); choose another port with --port"
                    ) from exc
                raise InvalidInputError(f"cannot bind {where}: {exc.strerror or exc}") from exc
    finally:
        for sock in held:
            sock.close()


def _cmd_serve(args: argparse.Namespace) -> int:
    validate_options(args)  # before anything loads
    from core.deps import require
    from engine.api import Engine

    uvicorn = require("uvicorn", purpose="dfe serve")
    from engine.server.app import create_app
    from engine.server.live_ws import LiveLimits, require_websockets

    live = LiveLimits(sessions=args.live_sessions, fps=args.live_fps)
    if live.sessions:
        require_websockets()  # uvicorn would refuse every live session without one
    check_port_free(args.host, args.port)  # a busy port fails now, not after the models load
    hosts = allowed_hosts(args.host, args.allowed_host)
    if not _is_loopback(args.host):
        log.warning("binding to %s: the service is reachable from other machines", args.host)
        if hosts is None:
            log.warning(
                "any Host name is answered; pass --allowed-host NAME for the names clients use"
            )
    engine = Engine.load(args.model, config=engine_config(args))
    engine.prepare()  # the classifier and the detector load now, or serving fails at once
    app = create_app(
        engine,
        args.data or default_data_dir(),
        max_upload_bytes=int(args.max_upload_mb * 2**20),
        max_queue=args.queue,
        workers=args.workers,
        retention_hours=args.retention_hours,
        max_results_bytes=int(args.max_results_mb * 2**20),
        live=live,
        allowed_hosts=hosts,
    )
    check_port_free(args.host, args.port)  # again: loading took a while
    server_log = logging.getLogger("engine.server")
    if server_log.getEffectiveLevel() > logging.INFO:
        server_log.setLevel(logging.INFO)  # what the janitor deletes is always logged
    print(f"dfe serve: http://{args.host}:{args.port}/ (API docs /docs)", file=sys.stderr)
    uvicorn.run(app, host=args.host, port=args.port, log_level="info", server_header=False)
    return 0
