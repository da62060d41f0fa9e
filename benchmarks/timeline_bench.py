"""What a whole-video timeline costs (issue 32): ``dfe predict --timeline`` on long 1080p videos.

A long video is built from the shared 1080p DFDC clips without re-encoding (each clip's video
stream remuxed alone, then FFmpeg's concat demuxer over them, repeated until the duration, cut
with ``-t``; ``-c copy`` throughout, so building a 10-minute video takes seconds). Each video is
scored by ``dfe predict VIDEO --timeline --timeline-fps FPS`` (``engine.cli.main`` in a fresh
child process, as :mod:`benchmarks.throughput` runs it), once per duration (5 and 10 minutes by
default), and per run the JSON has:

- ``wall_s``: the whole process (imports, model loading, the first frames' verdict, the
  timeline); ``timeline_s``: the timeline alone (the record's ``timings.timeline``);
- ``frames_per_s``: timeline frames scored per second of the timeline (decode of every frame,
  detection, crops and classification of the sampled ones), and ``realtime``: seconds of video
  per second of wall time;
- ``peak_rss_mb``: the child's peak resident memory (``VmHWM``, which starts afresh at exec);
- ``cpu_s``: user + system CPU seconds of the child (what another busy process on the machine
  does not inflate; the load averages before and after each run are recorded too).

The summary compares the longest run with the shortest: the marginal rate (extra frames over
extra seconds, which cancels start-up), how the timeline's time grows against the duration
(``time_ratio / duration_ratio``: 1.0 is linear) and how much the peak memory grew (flat: a
streaming timeline keeps per sampled frame only boxes and scores).

``python -m benchmarks.timeline_bench --model DIR --models DIR -o timeline.json`` runs it;
``dfe bench`` runs it as its ``timeline`` section (:func:`benchmarks.suite.bench_timeline`).
:func:`render_table` is the table of the report and of ``docs/timeline.md`` (rendered there
from the committed JSON by ``python -m benchmarks.readme_tables``, as every benchmark table).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.common import ffmpeg_path, machine_info, write_json
from benchmarks.throughput import _OURS_CHILD, REPO, _run_child
from core.errors import EngineError

#: Durations of the quick suite and of ``--full``, seconds.
QUICK_DURATIONS = (300.0, 600.0)
FULL_DURATIONS = (300.0, 600.0)
DEFAULT_FPS = 2.0


def _ffmpeg() -> str:
    return ffmpeg_path("the timeline benchmark builds its long videos")


def _probe(path: Path) -> tuple[float, int, int]:
    """Seconds, width and height of the video stream (PyAV, which dfe itself decodes with)."""
    import av

    with av.open(str(path)) as box:
        stream = box.streams.video[0]
        if stream.duration is not None and stream.time_base is not None:
            seconds = float(stream.duration * stream.time_base)
        else:
            seconds = float(box.duration or 0) / 1e6
        return seconds, stream.codec_context.width, stream.codec_context.height


def long_video(clips: Sequence[Path], seconds: float, path: Path) -> Path:
    """A ``seconds``-long video at ``path`` made of ``clips`` (same codec and size) one after
    another, repeated; stream copies only. Kept when it is already there."""
    if path.is_file():
        return path
    ffmpeg = _ffmpeg()
    work = path.parent / f".{path.stem}-parts"
    work.mkdir(parents=True, exist_ok=True)
    parts, total = [], 0.0
    for k, clip in enumerate(clips):
        part = work / f"{k:02d}.mp4"
        if not part.is_file():  # the video stream alone: the clips' audio layouts differ
            subprocess.run(
                [
                    ffmpeg,
                    "-loglevel",
                    "error",
                    "-y",
                    "-i",
                    str(clip),
                    "-map",
                    "0:v:0",
                    "-c",
                    "copy",
                    "-an",
                    str(part),
                ],
                check=True,
                timeout=300,
            )
        parts.append((part, _probe(part)[0]))
    if not parts or sum(d for _, d in parts) <= 0:
        raise EngineError(f"no clip to build a long video from: {list(clips)}")
    lines = []
    while total < seconds:
        for part, duration in parts:
            lines.append(f"file '{part.resolve()}'")
            total += duration
    listing = work / "list.txt"
    listing.write_text("\n".join(lines) + "\n")
    tmp = path.with_name(f".{path.name}.tmp.mp4")
    subprocess.run(
        [
            ffmpeg,
            "-loglevel",
            "error",
            "-y",
            "-f",
            "concat",
            "-safe",
            "0",
            "-i",
            str(listing),
            "-t",
            f"{seconds:g}",
            "-c",
            "copy",
            str(tmp),
        ],
        check=True,
        timeout=600,
    )
    os.replace(tmp, path)
    shutil.rmtree(work, ignore_errors=True)
    return path


def run_timeline(
    model: Path,
    video: Path,
    *,
    fps: float,
    models_dir: str,
    records: Path,
    options: Sequence[str] = (),
) -> dict[str, Any]:
    """``dfe predict VIDEO --timeline --timeline-fps FPS`` in a child process: one row."""
    args = [sys.executable, "-c", _OURS_CHILD, "predict", str(video.resolve()), "--model",
            str(model.resolve()), "--backend", "ort", "--models", str(Path(models_dir).resolve()),
            "--no-download", "--no-progress", "--out", str(records.resolve()), "--timeline",
            "--timeline-fps", f"{fps:g}", *options]  # fmt: skip
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO)
    records.unlink(missing_ok=True)
    wall, rss_kb, cpu, _ = _run_child(args, env)
    (record,) = [json.loads(line) for line in records.read_text().splitlines() if line.strip()]
    if record.get("status") != "ok" or not record.get("timeline"):
        raise EngineError(f"{video.name}: no timeline in the record: {str(record)[:600]}")
    line = record["timeline"]
    duration, width, height = _probe(video)
    timeline_s = float(record["timings"]["timeline"])
    return {
        "duration_s": round(duration, 3),
        "video_mb": round(video.stat().st_size / 2**20, 1),
        "size": [width, height],
        "timeline_fps": fps,
        "timeline_frames": line["frames"],
        "people": len(line["people"]),
        "segments": len(line["segments"]),
        "wall_s": round(wall, 3),
        "timeline_s": round(timeline_s, 3),
        "frames_per_s": round(line["frames"] / timeline_s, 3),
        "frames_per_s_wall": round(line["frames"] / wall, 3),
        "realtime": round(duration / wall, 3),
        "peak_rss_mb": round(rss_kb / 1024, 1),
        "cpu_s": round(cpu, 2),
        "cores_busy": round(cpu / wall, 2) if wall > 0 else None,
        "timings": record["timings"],
    }


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The longest run against the shortest: marginal rate, growth of time and memory."""
    if len(rows) < 2:
        return {}
    short, long_ = (
        min(rows, key=lambda r: r["duration_s"]),
        max(rows, key=lambda r: r["duration_s"]),
    )
    d_ratio = long_["duration_s"] / short["duration_s"]
    extra_frames = long_["timeline_frames"] - short["timeline_frames"]
    extra_s = long_["wall_s"] - short["wall_s"]
    return {
        "durations_s": [short["duration_s"], long_["duration_s"]],
        "duration_ratio": round(d_ratio, 3),
        "timeline_time_ratio": round(long_["timeline_s"] / short["timeline_s"], 3),
        "wall_time_ratio": round(long_["wall_s"] / short["wall_s"], 3),
        # 1.0: the timeline's time grows exactly as the video's duration
        "linearity": round(long_["timeline_s"] / short["timeline_s"] / d_ratio, 3),
        # the same on CPU seconds, which another busy process on the machine does not inflate
        "cpu_time_ratio": round(long_["cpu_s"] / short["cpu_s"], 3),
        "cpu_linearity": round(long_["cpu_s"] / short["cpu_s"] / d_ratio, 3),
        "marginal_frames_per_s": round(extra_frames / extra_s, 3) if extra_s > 0 else None,
        "peak_rss_growth_mb": round(long_["peak_rss_mb"] - short["peak_rss_mb"], 1),
        "peak_rss_ratio": round(long_["peak_rss_mb"] / short["peak_rss_mb"], 3),
    }


def measure(
    model: Path,
    clips: Sequence[Path],
    *,
    durations: Sequence[float] = QUICK_DURATIONS,
    fps: float = DEFAULT_FPS,
    models_dir: str,
    workdir: Path | None = None,
    options: Sequence[str] = (),
) -> dict[str, Any]:
    """Build one video per duration from ``clips`` and time ``dfe predict --timeline`` on each
    (shortest first). ``workdir`` keeps the videos (default: a temporary directory, removed)."""
    work = workdir or Path(tempfile.mkdtemp(prefix="dfe-timeline-bench-"))
    tmp = None if workdir else work
    work.mkdir(parents=True, exist_ok=True)
    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    load_before = [round(x, 2) for x in os.getloadavg()]
    try:
        rows = []
        for seconds in sorted(durations):
            t = time.perf_counter()
            video = long_video(clips, seconds, work / f"long_{seconds:g}s.mp4")
            build_s = time.perf_counter() - t
            row = run_timeline(
                model,
                video,
                fps=fps,
                models_dir=models_dir,
                records=work / f"long_{seconds:g}s.jsonl",
                options=options,
            )
            row["build_s"] = round(build_s, 3)
            row["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
            rows.append(row)
            print(
                f"timeline {seconds / 60:5.1f} min: wall {row['wall_s']:7.1f} s, timeline "
                f"{row['timeline_s']:7.1f} s, {row['frames_per_s']:6.2f} frames/s, peak RSS "
                f"{row['peak_rss_mb']:7.1f} MB",
                file=sys.stderr,
            )
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    return {
        "benchmark": "whole-video timeline: dfe predict --timeline on long 1080p videos",
        "started": started,
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": machine_info(),
        "cpu_cores": os.cpu_count(),
        "model": str(model),
        "clips": [Path(c).name for c in clips],
        "timeline_fps": fps,
        "options": list(options),
        # another busy process inflates wall times (not CPU seconds): compare with cpu_cores
        "load_average_before": load_before,
        "rows": rows,
        "summary": summarize(rows),
    }


def _clock(seconds: float) -> str:
    m, s = divmod(round(seconds), 60)
    return f"{m}:{s:02d}"


def render_table(result: dict[str, Any]) -> str:
    """The Markdown table and summary line of a timeline run (the report and the doc)."""
    lines = [
        "| video | timeline frames | wall s | timeline s | frames/s | video s per wall s "
        "| peak RSS MB | CPU s (cores busy) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        lines.append(
            f"| {_clock(r['duration_s'])} {r['size'][1]}p ({r['video_mb']:.0f} MB) | "
            f"{r['timeline_frames']} "
            f"| {r['wall_s']:.1f} | {r['timeline_s']:.1f} | {r['frames_per_s']:.2f} | "
            f"{r['realtime']:.2f} | {r['peak_rss_mb']:.0f} | {r['cpu_s']:.0f} "
            f"({r['cores_busy']}) |"
        )
    s = result.get("summary") or {}
    if s:
        lines += [
            "",
            f"From {_clock(s['durations_s'][0])} to {_clock(s['durations_s'][1])} "
            f"({s['duration_ratio']:.2f}x the video): the timeline took "
            f"{s['timeline_time_ratio']:.2f}x the time (linearity {s['linearity']:.2f}; 1.00 is "
            f"linear) and {s['cpu_time_ratio']:.2f}x the CPU time (linearity "
            f"{s['cpu_linearity']:.2f}), the marginal rate is {s['marginal_frames_per_s']} "
            f"frames/s, and the peak RSS changed by {s['peak_rss_growth_mb']:+.0f} MB "
            f"({s['peak_rss_ratio']:.2f}x).",
        ]
    m = result["machine"]

    def load(values: Sequence[float] | None) -> str:
        return ", ".join(f"{x:g}" for x in values or []) or "-"

    loads = ""
    if result.get("load_average_before"):
        after = "; ".join(load(r.get("load_average_after")) for r in result["rows"])
        loads = (
            f"; load average (1, 5, 15 min) before {load(result['load_average_before'])}, "
            f"after each run {after}"
        )
    lines += [
        "",
        f"`dfe predict --timeline --timeline-fps {result['timeline_fps']:g}`, one fresh process "
        f"per video; {m['cpu']}, {result.get('cpu_cores') or m['cores']} cores, "
        f"started {result['started']}{loads}; clips: {', '.join(result['clips'])}.",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.timeline_bench", description=__doc__)
    p.add_argument("--model", type=Path, required=True, help="exported model directory")
    p.add_argument(
        "--models", required=True, help="models directory (the face detector) for dfe predict"
    )
    p.add_argument(
        "--clips",
        nargs="+",
        type=Path,
        default=None,
        help="1080p clips, one codec and size (default: the shared DFDC clips)",
    )
    p.add_argument(
        "--minutes", nargs="+", type=float, default=None, help="durations, minutes (default: 5 10)"
    )
    p.add_argument("--fps", type=float, default=DEFAULT_FPS, help="--timeline-fps")
    p.add_argument("--workdir", type=Path, default=None, help="keep the long videos here")
    p.add_argument("-o", "--out", type=Path, required=True, help="JSON results")
    args = p.parse_args(argv)
    clips = args.clips or default_clips()
    durations = [m * 60 for m in args.minutes] if args.minutes else QUICK_DURATIONS
    result = measure(
        args.model,
        clips,
        durations=durations,
        fps=args.fps,
        models_dir=args.models,
        workdir=args.workdir,
    )
    write_json(args.out, result)
    print(render_table(result))
    return 0


def default_clips() -> list[Path]:
    """The shared 1080p DFDC clips (same codec, size and frame rate)."""
    from engine.demo import shared_dir

    videos = shared_dir() / "videos"
    clips = sorted(videos.glob("dfdc_*.mp4"))
    if not clips:
        raise EngineError(f"no 1080p DFDC clips in {videos} (set DFE_SHARED)")
    return clips


if __name__ == "__main__":
    raise SystemExit(main())
