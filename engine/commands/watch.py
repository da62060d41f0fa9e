"""``dfe watch SOURCE --model DIR``: rolling per-person verdicts on a live source, one JSON line
per person per hop on standard output (:mod:`engine.live`)."""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path
from typing import Any

from engine.live import (
    DEFAULT_FPS,
    DEFAULT_HOP_S,
    DEFAULT_QUEUE,
    DEFAULT_RECONNECT,
    DEFAULT_RECONNECT_MAX_S,
    DEFAULT_TIMEOUT_S,
    DEFAULT_WINDOW_S,
    LIVE_SEQ_LEN,
)
from engine.options import EXIT_ERROR, EXIT_OK, add_engine_options, engine_config


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "watch",
        help="rolling per-person verdicts on a live stream, a camera, standard input or a file "
        "read at its own pace, one JSON line per person per hop",
        description="Watch a live source and write, every --hop seconds of stream time, one "
        "JSON line per person seen in the last --window seconds (verdict, reasons, calibrated "
        "p_fake, the frames, boxes and per-frame p_fake used, the person's track id, latency, "
        "frames dropped so far), between a 'start' line and a 'summary' line; the source's "
        "events (opened, disconnected, retry, reconnected with the gap) are lines too. SOURCE: "
        "a URL FFmpeg opens (rtsp://, rtmp://, srt://, http(s)://, tcp://, udp://, ...), - for "
        "standard input, a V4L2 camera (/dev/video0), or a file (--realtime: at its own pace). "
        "A live source never waits for the scorer: when it falls behind, frames are dropped "
        "from a bounded queue and counted. A network source that drops is reopened with "
        "back-off (1, 2, 4 ... s). Ctrl-C or SIGTERM ends it with the summary (exit 0), as does "
        "the end of the stream; exit 2 when the source or the model cannot be opened. "
        "Documented in docs/live.md.",
    )
    p.add_argument("source", help="URL, - (standard input), /dev/videoN, or a video file")
    p.add_argument(
        "--model",
        required=True,
        type=Path,
        help="exported model directory, or a directory of them (one per N: pass --seq-len)",
    )
    g = p.add_argument_group("live")
    g.add_argument(
        "--seq-len",
        type=int,
        default=None,
        help=f"frames per verdict, spread over the window (default: the model's N, else "
        f"{LIVE_SEQ_LEN}; all the person's frames when the window has fewer)",
    )
    g.add_argument(
        "--fps",
        type=float,
        default=DEFAULT_FPS,
        help=f"frames scored per second of stream time (default: {DEFAULT_FPS})",
    )
    g.add_argument(
        "--window",
        type=float,
        default=DEFAULT_WINDOW_S,
        help=f"seconds a verdict looks back over (default: {DEFAULT_WINDOW_S})",
    )
    g.add_argument(
        "--hop",
        type=float,
        default=DEFAULT_HOP_S,
        help=f"seconds of stream time between verdicts (default: {DEFAULT_HOP_S})",
    )
    g.add_argument(
        "--queue",
        type=int,
        default=DEFAULT_QUEUE,
        help=f"sampled frames held between the reader and the scorer; a live source drops the "
        f"oldest when it is full (default: {DEFAULT_QUEUE})",
    )
    g.add_argument(
        "--realtime",
        action="store_true",
        help="release a file's frames at their presentation times, as a live source would "
        "(frames are then dropped when the scorer falls behind)",
    )
    g.add_argument(
        "--reconnect",
        type=int,
        default=DEFAULT_RECONNECT,
        help=f"attempts in a row to reopen a network source that dropped or cannot be opened, "
        f"waiting 1, 2, 4 ... s; 0: the stream's end ends the watch (default: "
        f"{DEFAULT_RECONNECT})",
    )
    g.add_argument(
        "--reconnect-max",
        type=float,
        default=DEFAULT_RECONNECT_MAX_S,
        metavar="SECONDS",
        help=f"longest wait between two attempts (default: {DEFAULT_RECONNECT_MAX_S})",
    )
    g.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT_S,
        metavar="SECONDS",
        help=f"how long FFmpeg waits to open the source and for its next data (default: "
        f"{DEFAULT_TIMEOUT_S})",
    )
    g.add_argument(
        "--format",
        default=None,
        help="FFmpeg input format (v4l2, mpegts, ...; default: guessed, v4l2 for /dev/video*)",
    )
    g.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an FFmpeg input option, e.g. rtsp_transport=tcp, video_size=1280x720, "
        "framerate=30, fflags=nobuffer (repeatable)",
    )
    add_engine_options(p, faces="all")
    p.set_defaults(func=_cmd_watch)


def _cmd_watch(args: argparse.Namespace) -> int:
    from engine.api import Engine
    from engine.live import LiveOptions, parse_ffmpeg_options, write_lines

    opts = LiveOptions(
        fps=args.fps,
        window=args.window,
        hop=args.hop,
        seq_len=args.seq_len,
        queue=args.queue,
        realtime=args.realtime,
        reconnect=args.reconnect,
        reconnect_max_s=args.reconnect_max,
        timeout=args.timeout,
        format=args.format,
        ffmpeg_options=parse_ffmpeg_options(args.option),
        faces="main" if args.faces == "main" else "all",
    )
    if args.faces == "per-frame":
        print(
            "warning: --faces per-frame does not apply to live video (people are followed as "
            "tracks); every person is scored",
            file=sys.stderr,
        )
    config = engine_config(args)
    engine = Engine.load(args.model, config=config)
    stream = engine.stream(args.source, options=opts)

    def stop(_signum: int, _frame: Any) -> None:
        stream.stop()

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        summary = write_lines(stream)
    except BrokenPipeError:  # the reader of our output went away: the watch ends quietly
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # Python's own flush at exit must not fail
        return EXIT_OK
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if summary is not None:
        lat = summary.latency_ms
        print(
            f"{summary.source}: {summary.end}; {summary.frames_read} frames read, "
            f"{summary.frames_scored} scored, {summary.frames_dropped} dropped; "
            f"{summary.people} people, {summary.lines} lines "
            + ", ".join(f"{k} {v}" for k, v in summary.verdicts.items() if v)
            + f"; latency median {lat['median']} ms, p95 {lat['p95']} ms",
            file=sys.stderr,
        )
        if summary.end == "error":
            return EXIT_ERROR
    return EXIT_OK
