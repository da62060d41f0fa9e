"""``dfe serve --model DIR``: the upload page and the JSON API on uvicorn (extra ``serve``)."""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import sys
from pathlib import Path

from engine.options import add_engine_options, engine_config

log = logging.getLogger(__name__)


def default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(base) / "deepfake-engine" / "serve"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve",
        help="web upload page and JSON API (needs the `serve` extra)",
        description="Serve an upload page and a JSON API (/api/v1, docs at /docs) on one loaded "
        "model. Binds to 127.0.0.1 unless --host says otherwise; put a TLS proxy in front for "
        "anything but local use.",
    )
    p.add_argument("--model", required=True, type=Path, help="exported model directory")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument(
        "--data",
        type=Path,
        default=None,
        help=f"private data directory for jobs and results (default {default_data_dir()})",
    )
    p.add_argument("--max-upload-mb", type=float, default=100.0, help="upload limit (MB)")
    p.add_argument("--queue", type=int, default=64, help="jobs queued or running at most (429)")
    p.add_argument("--workers", type=int, default=1, help="jobs processed at once")
    add_engine_options(p)
    p.set_defaults(func=_cmd_serve)


def _cmd_serve(args: argparse.Namespace) -> int:
    from engine.api import Engine
    from engine.core.deps import require
    from engine.core.errors import InvalidInputError

    uvicorn = require("uvicorn", purpose="dfe serve")
    from engine.server.app import create_app

    if args.queue < 1 or args.workers < 1 or args.max_upload_mb <= 0:
        raise InvalidInputError("--queue and --workers must be >= 1 and --max-upload-mb > 0")
    try:
        public = not ipaddress.ip_address(args.host).is_loopback
    except ValueError:
        public = args.host != "localhost"
    if public:
        log.warning("binding to %s: the service is reachable from other machines", args.host)
    engine = Engine.load(args.model, config=engine_config(args))
    engine.prepare()  # the classifier and the detector load now, or serving fails at once
    app = create_app(
        engine,
        args.data or default_data_dir(),
        max_upload_bytes=int(args.max_upload_mb * 2**20),
        max_queue=args.queue,
        workers=args.workers,
    )
    print(f"dfe serve: http://{args.host}:{args.port}/ (API docs /docs)", file=sys.stderr)
    uvicorn.run(app, host=args.host, port=args.port, log_level="info", server_header=False)
    return 0
