"""Live video, as a user runs it (issue 34): ``dfe watch`` on a 1080p30 and a 720p30 stream.

A shared 1080p clip is encoded once, as a live encoder would (``libx264 -preset ultrafast -tune
zerolatency -g 30``, 30 frames per second, scaled to 1920x1080 and to 1280x720), into a file per
resolution. For each run that file is served on loopback as a live MPEG-TS stream over TCP by
``ffmpeg -re -stream_loop -1 -i FILE -t SECONDS -c copy -f mpegts tcp://127.0.0.1:PORT?listen=1``
(a stream copy: the serving process costs little CPU), and ``dfe watch tcp://127.0.0.1:PORT
--fps F --reconnect 0`` (``python -m engine.cli``, a fresh process per run) watches it until
the stream ends. Per resolution the ``--fps`` ladder (4, 8, 16, 30) goes up until a rate falls
behind; with ``refine`` one more run halfway between the last rate that kept up and the first
that did not (2 when 4 did not). Optionally one long run (10 minutes for the committed result)
at 720p at the highest rate that kept up gives the memory curve.

Per run the JSON has, from the watch's own lines: frames read, sampled, scored and dropped (the
``summary`` line; the last verdict line's ``dropped`` too; ``dropped_warmup``: those dropped
before the first verdict line, while the sessions run for the first time), the verdict lines'
latency (median, p95, max, and the median of the first and of the last third of the lines), how
far reading fell behind the stream (``read_lag_growth_s``: the growth, from the first third of
the lines to the last, of each line's frame arrival in wall-clock time minus its stream time; a
reader that decodes slower than 30 frames per second falls further behind every second), and
whether it **kept up**: nothing dropped after the first line, the latency not growing (last
third's median at most :data:`LATENCY_GROWTH_RATIO` times the first's plus
:data:`LATENCY_GROWTH_SLACK_MS`), reading not behind (growth under :data:`LAG_GROWTH_MAX_S`) and
the stream watched to its end. From ``/proc``: the watch's resident memory (``VmRSS``) every
second, summarised as the first (once the first verdict line is out), largest and last value,
the least-squares slope in MB per minute after a warm-up, and one sample per 10 s; its CPU
seconds (and the server's) from ``wait4``. The load average is recorded at the start and end of
every run: the benchmark machine is shared, and another busy process slows the watch.

``python -m benchmarks.live_bench --duration 60 --long 600 --out FILE.json`` runs it (about 20
minutes on 2 cores); ``dfe bench`` runs a short version as its ``live`` section
(:func:`benchmarks.suite.bench_live`; ``--full``: the long one). ``benchmarks/readme_tables.py``
renders :func:`render_table` of the committed JSON into docs/live.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from benchmarks.common import ffmpeg_path, machine_info, write_json
from core.errors import EngineError

REPO = Path(__file__).resolve().parents[1]

#: The streams: name -> (width, height); both at :data:`RATE` frames per second.
RESOLUTIONS: dict[str, tuple[int, int]] = {"1080p": (1920, 1080), "720p": (1280, 720)}
RATE = 30
#: The ``--fps`` ladder, and the seconds of stream per run, of ``dfe bench`` and of ``--full``.
QUICK_LADDER = (4.0, 8.0)
QUICK_DURATION_S = 15.0
FULL_LADDER = (4.0, 8.0, 16.0, 30.0)
FULL_DURATION_S = 60.0
#: The long run of ``dfe bench --full`` (seconds of stream, at 720p).
FULL_LONG_S = 600.0
LONG_RESOLUTION = "720p"
#: The kept-up rule: the last third's median latency at most RATIO x the first's + SLACK ...
LATENCY_GROWTH_RATIO = 1.5
LATENCY_GROWTH_SLACK_MS = 100.0
#: ... and reading at most this many seconds further behind the stream at the end.
LAG_GROWTH_MAX_S = 1.0
#: The issue's goal: 720p30 followed live with p95 latency under this, memory flat ...
GOAL_P95_MS = 1000.0
#: ... flat: a fitted RSS slope within this many MB per minute (10 MB over 10 minutes).
FLAT_MB_PER_MIN = 1.0
#: The table shows the RSS slope of runs this long or longer (a shorter one's is noise: the
#: heap's free pages go back to the OS every 30 s, tens of MB at a time).
SLOPE_MIN_S = 300.0
#: Seconds between RSS samples, and between the samples kept in the JSON.
SAMPLE_S = 1.0
KEEP_EVERY_S = 10.0
#: Encoder settings of the served files (a live encoder's).
ENCODER = ("-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency", "-g", str(RATE),
           "-pix_fmt", "yuv420p")  # fmt: skip


# --------------------------------------------------------------------------- streams


def _ffmpeg() -> str:
    return ffmpeg_path("the live benchmark encodes and serves its streams")


def encode_stream(clip: Path, size: tuple[int, int], path: Path, seconds: float = 0) -> Path:
    """``clip`` scaled to ``size`` at :data:`RATE` frames per second as a live encoder makes it
    (:data:`ENCODER`), video only, MP4 at ``path`` (kept when already there); ``seconds`` > 0
    keeps only the start of the clip."""
    if path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    cut = ["-t", f"{seconds:g}"] if seconds > 0 else []
    tmp = path.with_name(f".{path.name}.tmp.mp4")
    subprocess.run(
        [_ffmpeg(), "-loglevel", "error", "-y", *cut, "-i", str(clip), "-an", "-vf",
         f"scale={size[0]}:{size[1]}", "-r", str(RATE), *ENCODER, str(tmp)],
        check=True,
        timeout=600,
    )  # fmt: skip
    os.replace(tmp, path)
    return path


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _listening(port: int) -> bool:
    """Whether something listens on 127.0.0.1:``port`` (read from /proc: a connection would be
    the one client an ``ffmpeg ... ?listen=1`` server serves)."""
    try:
        rows = Path("/proc/net/tcp").read_text().splitlines()[1:]
    except OSError:
        return False
    for row in rows:
        fields = row.split()
        if int(fields[1].split(":")[1], 16) == port and fields[3] == "0A":
            return True
    return False


def serve(path: Path, port: int, seconds: float) -> subprocess.Popen:
    """``ffmpeg -re -stream_loop -1`` serving ``path`` (a stream copy) as live MPEG-TS on
    tcp://127.0.0.1:``port`` for ``seconds`` of stream; returns once it listens."""
    proc = subprocess.Popen(
        [_ffmpeg(), "-nostdin", "-loglevel", "error", "-re", "-stream_loop", "-1", "-i",
         str(path), "-t", f"{seconds:g}", "-c", "copy", "-f", "mpegts",
         f"tcp://127.0.0.1:{port}?listen=1"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 20
    while not _listening(port):
        _reap(proc, block=False)  # an ffmpeg that failed to start
        if proc.returncode is not None or time.monotonic() > deadline:
            _end(proc, 0.0)
            raise EngineError(f"ffmpeg did not listen on port {port} (exit {proc.returncode})")
        time.sleep(0.02)
    return proc


def _end(proc: subprocess.Popen, grace: float) -> float:
    """Wait up to ``grace`` s for ``proc``, then kill it; reap it and return its CPU seconds."""
    deadline = time.monotonic() + grace
    cpu = _reap(proc, block=False)
    while cpu is None and proc.returncode is None and time.monotonic() < deadline:
        time.sleep(0.05)
        cpu = _reap(proc, block=False)
    if cpu is None and proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        cpu = _reap(proc, block=True)
    return cpu or 0.0


def _reap(proc: subprocess.Popen, *, block: bool) -> float | None:
    """Reap ``proc`` with ``wait4`` (its exit code goes to ``proc.returncode``); its user +
    system CPU seconds, or None when it is still running (``block=False``) or already reaped."""
    if proc.returncode is not None:
        return None
    try:
        pid, status, usage = os.wait4(proc.pid, 0 if block else os.WNOHANG)
    except ChildProcessError:
        return None
    if pid == 0:
        return None
    proc.returncode = os.waitstatus_to_exitcode(status)
    return usage.ru_utime + usage.ru_stime


# --------------------------------------------------------------------------- memory


def vm_rss_mb(pid: int) -> float | None:
    """``VmRSS`` of ``pid`` in MB (from ``/proc/PID/status``), None once it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


class RssSampler:
    """Samples :func:`vm_rss_mb` of one process every ``interval`` seconds in a thread;
    ``samples`` holds ``(unix time, MB)`` pairs."""

    def __init__(self, pid: int, interval: float = SAMPLE_S) -> None:
        self.pid = pid
        self.interval = interval
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="live-rss", daemon=True)

    def _run(self) -> None:
        while True:
            mb = vm_rss_mb(self.pid)
            if mb is not None and mb > 0:
                self.samples.append((time.time(), mb))
            if self._stop.wait(self.interval):
                return

    def start(self) -> RssSampler:
        """Start sampling (returns self)."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop sampling and wait for the thread."""
        self._stop.set()
        self._thread.join()


def fit_slope(xs: Sequence[float], ys: Sequence[float]) -> tuple[float, float] | None:
    """Least-squares slope of ``ys`` against ``xs`` and its standard error; None with fewer
    than 3 points or no spread in ``xs``."""
    from benchmarks.soak import fit_slope as fit

    return fit(list(xs), list(ys))


def summarize_rss(
    samples: Sequence[tuple[float, float]], started: float | None, warmup_s: float
) -> dict[str, Any]:
    """RSS of a run from its ``(unix time, MB)`` samples: ``first`` (the first sample at or
    after ``started``, the first verdict line's wall time), ``max``, ``last``, the slope in MB
    per minute fitted on the samples from ``started + warmup_s`` on (with its standard error
    and the seconds it spans), and from ``started`` on one sample per :data:`KEEP_EVERY_S` s as
    ``[seconds since the first verdict line, MB]``."""
    if not samples:
        return {"samples": 0}
    after = [s for s in samples if started is None or s[0] >= started] or list(samples)
    t0 = after[0][0]
    fitted = [s for s in after if s[0] >= t0 + warmup_s]
    slope = fit_slope([t / 60 for t, _ in fitted], [mb for _, mb in fitted])
    kept: list[list[float]] = []
    next_t = t0
    for t, mb in after:
        if t >= next_t:
            kept.append([round(t - t0, 1), round(mb, 1)])
            next_t = t + KEEP_EVERY_S - SAMPLE_S / 2
    if kept[-1][0] != round(after[-1][0] - t0, 1):
        kept.append([round(after[-1][0] - t0, 1), round(after[-1][1], 1)])
    return {
        "samples": len(samples),
        "first": round(after[0][1], 1),
        "max": round(max(mb for _, mb in samples), 1),
        "last": round(samples[-1][1], 1),
        "slope_mb_per_min": None if slope is None else round(slope[0], 3),
        "slope_stderr": None if slope is None else round(slope[1], 3),
        "fit_span_s": round(fitted[-1][0] - fitted[0][0], 1) if len(fitted) > 1 else 0.0,
        "every_10s": kept,
    }


# --------------------------------------------------------------------------- the lines


def _median(values: Sequence[float]) -> float | None:
    import numpy as np

    return round(float(np.median(values)), 2) if len(values) else None


def _quantile(values: Sequence[float], q: float) -> float | None:
    """As the watch's summary computes it (linear interpolation), rounded to 0.01."""
    import numpy as np

    return round(float(np.quantile(np.asarray(values), q)), 2) if len(values) else None


def _thirds(values: Sequence[float]) -> tuple[list[float], list[float]]:
    k = max(len(values) // 3, 1)
    return list(values[:k]), list(values[-k:])


def _by_minute(verdicts: Sequence[dict[str, Any]]) -> list[list[float]]:
    """``[stream time, dropped so far]`` at the first line at or after each whole minute of
    stream time, and at the last line."""
    out: list[list[float]] = []
    minute = 0
    for v in verdicts:
        if v["time"] >= minute * 60:
            out.append([round(float(v["time"]), 1), v["dropped"]])
            minute = int(v["time"] // 60) + 1
    if verdicts and out[-1][0] != round(float(verdicts[-1]["time"]), 1):
        out.append([round(float(verdicts[-1]["time"]), 1), verdicts[-1]["dropped"]])
    return out


def analyse_lines(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """What one watch's lines say: the summary's counts, the verdict lines' latency (median,
    p95, max, first and last third's median), the growth of the reading lag and the count of
    lines per event. Every figure is computed from the lines alone."""
    verdicts = [r for r in records if r.get("event") == "verdict"]
    summary = next((r for r in reversed(records) if r.get("event") == "summary"), None)
    opened = next((r for r in records if r.get("event") == "opened"), None)
    lat = [float(v["latency_ms"]) for v in verdicts]
    first, last = _thirds(lat) if lat else ([], [])
    # when each line's newest frame arrived (wall clock) less its stream time: constant while
    # the reader keeps pace with the stream, growing when it decodes slower than it arrives
    lag = [float(v["wall"]) - float(v["latency_ms"]) / 1000 - float(v["time"]) for v in verdicts]
    lag_first, lag_last = _thirds(lag) if lag else ([], [])
    events: dict[str, int] = {}
    for r in records:
        events[r.get("event", "?")] = events.get(r.get("event", "?"), 0) + 1
    out: dict[str, Any] = {
        "events": events,
        "lines": len(verdicts),
        "stream": None
        if opened is None
        else {k: opened.get(k) for k in ("format", "codec", "width", "height", "rate")},
        "latency_ms": {
            "median": _quantile(lat, 0.5),
            "p95": _quantile(lat, 0.95),
            "max": round(max(lat), 2) if lat else None,
            "first_third_median": _median(first),
            "last_third_median": _median(last),
        },
        "read_lag_growth_s": round(_median(lag_last) - _median(lag_first), 3) if lag else None,
        "dropped_last_line": verdicts[-1]["dropped"] if verdicts else None,
        # frames dropped so far at the first line of each minute of stream time
        "dropped_by_minute": _by_minute(verdicts),
        # frames dropped before the first line: the first seconds, while the sessions warm up
        "dropped_warmup": verdicts[0]["dropped"] if verdicts else None,
        "first_line_wall": float(verdicts[0]["wall"]) if verdicts else None,
    }
    if summary is not None:
        out["summary"] = {
            k: summary.get(k)
            for k in ("end", "error", "seconds", "stream_s", "frames_read", "frames_sampled",
                      "frames_scored", "frames_dropped", "people", "lines", "verdicts",
                      "latency_ms", "queue_max", "buffer_max")
        }  # fmt: skip
        out["dropped_after_warmup"] = summary["frames_dropped"] - (out["dropped_warmup"] or 0)
    return out


def behind(row: dict[str, Any]) -> list[str]:
    """Why a run did not keep up with its stream (empty: it kept up): frames dropped, latency
    growing, reading falling behind, the stream not watched to its end."""
    reasons = []
    s = row.get("summary")
    if row.get("exit_code") != 0:
        reasons.append(f"dfe watch exited {row.get('exit_code')}")
    if s is None:
        return [*reasons, "no summary line"]
    if s["end"] != "eof":
        reasons.append(f"ended {s['end']}: {s.get('error') or ''}".strip())
    if row.get("dropped_after_warmup"):
        n = row["dropped_after_warmup"]
        reasons.append(f"{n} frame{'s' if n > 1 else ''} dropped after the first line")
    if not row["lines"]:
        reasons.append("no verdict line")
        return reasons
    lat = row["latency_ms"]
    if lat["last_third_median"] > (
        LATENCY_GROWTH_RATIO * lat["first_third_median"] + LATENCY_GROWTH_SLACK_MS
    ):
        reasons.append(
            f"latency grew: median {lat['first_third_median']:.0f} ms in the first third of the "
            f"lines, {lat['last_third_median']:.0f} ms in the last"
        )
    if row["read_lag_growth_s"] is not None and row["read_lag_growth_s"] > LAG_GROWTH_MAX_S:
        reasons.append(f"reading fell {row['read_lag_growth_s']:.1f} s behind the stream")
    if s["stream_s"] is None or s["stream_s"] < 0.9 * row["duration_s"] - 1:
        reasons.append(f"stream watched {s['stream_s']} s of {row['duration_s']:g}")
    return reasons


# --------------------------------------------------------------------------- one run


def watch_command(
    model: Path, port: int, fps: float, models_dir: str | None, options: Sequence[str] = ()
) -> list[str]:
    """The ``dfe watch`` command line of a run (``python -m engine.cli``: the CLI)."""
    cmd = [sys.executable, "-m", "engine.cli", "watch", f"tcp://127.0.0.1:{port}", "--model",
           str(Path(model).resolve()), "--fps", f"{fps:g}", "--reconnect", "0", "--backend",
           "ort", *options]  # fmt: skip
    if models_dir:
        cmd += ["--models", str(Path(models_dir).resolve()), "--no-download"]
    return cmd


def run_watch(
    model: Path,
    stream: Path,
    *,
    fps: float,
    duration: float,
    models_dir: str | None,
    options: Sequence[str] = (),
    lines_out: Path | None = None,
) -> dict[str, Any]:
    """One run: ``stream`` served live for ``duration`` seconds, ``dfe watch`` at ``fps`` on
    it; the row (see the module docstring). ``lines_out`` keeps the watch's lines."""
    port = free_port()
    load_start = [round(x, 2) for x in os.getloadavg()]
    server = serve(stream, port, duration)
    cmd = watch_command(model, port, fps, models_dir, options)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    records: list[dict[str, Any]] = []
    err = tempfile.TemporaryFile()  # noqa: SIM115 (closed below, after the run)
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=err, text=True)  # fmt: skip
    sampler = RssSampler(proc.pid).start()
    lock = threading.Lock()
    # a watch still running this long after its stream should have ended is stopped
    cap = duration * 1.5 + 90

    def watchdog() -> None:
        for sig, wait in ((signal.SIGTERM, cap), (signal.SIGKILL, 20.0)):
            if done.wait(wait):
                return
            with lock:
                if proc.returncode is None:
                    proc.send_signal(sig)

    done = threading.Event()
    dog = threading.Thread(target=watchdog, name="live-watchdog", daemon=True)
    dog.start()
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            line = line.strip()
            if line:
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError:
                    records.append({"event": "unparsed", "text": line[:200]})
    finally:
        sampler.stop()
        done.set()
        with lock:
            cpu = _end(proc, 30.0)
        wall = time.perf_counter() - t0
        server_cpu = _end(server, 5.0)
    err.seek(0)
    stderr = err.read().decode(errors="replace")
    err.close()
    if lines_out is not None:
        lines_out.parent.mkdir(parents=True, exist_ok=True)
        lines_out.write_text("".join(json.dumps(r) + "\n" for r in records))
    info = analyse_lines(records)
    started = info.pop("first_line_wall")
    rss = summarize_rss(sampler.samples, started, warmup_s=min(60.0, duration / 4))
    row: dict[str, Any] = {
        "fps": fps,
        "duration_s": duration,
        "exit_code": proc.returncode,
        "wall_s": round(wall, 2),
        **info,
        "rss_mb": rss,
        "cpu_s": round(cpu, 2),
        "cores_busy": round(cpu / wall, 2) if wall > 0 else None,
        "server_cpu_s": round(server_cpu, 2),
        "load_average_start": load_start,
        "load_average_end": [round(x, 2) for x in os.getloadavg()],
    }
    if proc.returncode != 0 or "summary" not in info:
        row["stderr_tail"] = stderr[-800:]
    row["behind"] = behind(row)
    row["kept_up"] = not row["behind"]
    return row


# --------------------------------------------------------------------------- the ladder


def highest_kept_up(rows: Sequence[dict[str, Any]]) -> float | None:
    """The highest ``fps`` that kept up, below every rate that did not (None: none did)."""
    failed = min((r["fps"] for r in rows if not r["kept_up"]), default=float("inf"))
    ok = [r["fps"] for r in rows if r["kept_up"] and r["fps"] < failed]
    return max(ok, default=None)


def climb(
    run: Callable[[float], dict[str, Any]], ladder: Sequence[float], refine: bool
) -> list[dict[str, Any]]:
    """``run(fps)`` up ``ladder`` until a rate falls behind; with ``refine``, once more halfway
    between the last rate that kept up and that one (half the first rate when none did)."""
    rows: list[dict[str, Any]] = []
    ok, bad = None, None
    for fps in sorted(ladder):
        row = run(fps)
        rows.append(row)
        if not row["kept_up"]:
            bad = fps
            break
        ok = fps
    if refine and bad is not None:
        mid = round(((ok or 0.0) + bad) / 2, 1)
        if (ok or 0.0) < mid < bad:
            rows.append(run(mid))
    return rows


def measure(
    model: Path,
    clip: Path,
    *,
    models_dir: str | None,
    duration: float = FULL_DURATION_S,
    ladder: Sequence[float] = FULL_LADDER,
    resolutions: Sequence[str] = ("1080p", "720p"),
    long: float = 0.0,
    long_resolution: str = LONG_RESOLUTION,
    refine: bool = True,
    workdir: Path | None = None,
    options: Sequence[str] = (),
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Encode the streams, climb the ``--fps`` ladder per resolution (``duration`` s of stream
    per run), then the ``long`` run (seconds, 0: none) at ``long_resolution`` at its highest
    rate that kept up; the result JSON. ``workdir`` keeps the encoded streams and each run's
    lines (default: a temporary directory, removed)."""
    say = log or (lambda text: print(text, file=sys.stderr, flush=True))
    work = workdir or Path(tempfile.mkdtemp(prefix="dfe-live-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    load_start = [round(x, 2) for x in os.getloadavg()]
    runs: list[dict[str, Any]] = []
    streams: dict[str, dict[str, Any]] = {}
    try:
        for name in resolutions:
            size = RESOLUTIONS[name]
            t = time.perf_counter()
            path = encode_stream(clip, size, work / f"{clip.stem}_{name}{RATE}.mp4")
            streams[name] = {
                "size": list(size),
                "rate": RATE,
                "file": path.name,
                "file_mb": round(path.stat().st_size / 2**20, 2),
                "mbit_per_s": round(path.stat().st_size * 8 / 1e6 / _seconds(path), 2),
                "encode_s": round(time.perf_counter() - t, 1),
            }

        def one(name: str, fps: float, seconds: float, kind: str) -> dict[str, Any]:
            row = run_watch(
                model,
                work / streams[name]["file"],
                fps=fps,
                duration=seconds,
                models_dir=models_dir,
                options=options,
                lines_out=None if workdir is None else work / f"lines_{name}_{fps:g}_{kind}.jsonl",
            )
            row = {"resolution": name, "kind": kind, **row}
            runs.append(row)
            say(_progress(row))
            return row

        for name in resolutions:
            climb(lambda fps, name=name: one(name, fps, duration, "ladder"), ladder, refine)
        if long > 0:
            if long_resolution not in streams:
                raise EngineError(f"the long run's resolution {long_resolution} is not measured")
            rows = [r for r in runs if r["resolution"] == long_resolution]
            fps = highest_kept_up(rows) or min(ladder)
            one(long_resolution, fps, long, "long")
    finally:
        if workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    result = {
        "benchmark": "live: dfe watch on looping 1080p30 and 720p30 MPEG-TS streams over TCP "
        "on loopback",
        "started": started,
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "seconds": round(time.perf_counter() - t_start, 1),
        "host": {"machine": machine_info(), "cpu_cores": os.cpu_count()},
        "model": _model_info(model),
        "clip": clip.name,
        "settings": {
            "duration_s": duration,
            "ladder": list(ladder),
            "refine": refine,
            "long_s": long,
            "long_resolution": long_resolution if long > 0 else None,
            "resolutions": list(resolutions),
            "rate": RATE,
            "encoder": " ".join(ENCODER),
            "server": "ffmpeg -re -stream_loop -1 -i FILE -t SECONDS -c copy -f mpegts "
            "tcp://127.0.0.1:PORT?listen=1",
            "watch": "python -m engine.cli watch tcp://127.0.0.1:PORT --model MODEL --fps F "
            "--reconnect 0 --backend ort"
            + (" --models MODELS --no-download" if models_dir else "")
            + "".join(f" {o}" for o in options),
            "detector": "det_500m (the default)",
            "window_s": 4.0,
            "hop_s": 1.0,
            "queue": 4,
            "kept_up": f"no frame dropped after the first line; last third's median latency <= "
            f"{LATENCY_GROWTH_RATIO:g} x the first third's + {LATENCY_GROWTH_SLACK_MS:g} ms; "
            f"reading no more than {LAG_GROWTH_MAX_S:g} s further behind the stream; the "
            "stream watched to its end",
        },
        # the machine is shared: another busy process slows the watch (see each run's too)
        "load_average_start": load_start,
        "load_average_end": [round(x, 2) for x in os.getloadavg()],
        "streams": streams,
        "runs": runs,
    }
    result["results"] = summarize(result)
    return result


def _seconds(path: Path) -> float:
    import av

    with av.open(str(path)) as box:
        s = box.streams.video[0]
        if s.duration is not None and s.time_base is not None:
            return float(s.duration * s.time_base)
        return float(box.duration or 0) / 1e6 or 1.0


def _model_info(model: Path) -> dict[str, Any]:
    from core.sidecar import load_sidecar

    out: dict[str, Any] = {"path": str(model), "backend": "ort", "precision": "fp32"}
    try:
        spec = load_sidecar(model)
        out["architecture"] = spec.model.architecture
        out["seq_len"] = spec.seq_len
        out["demo"] = spec.demo
    except (OSError, ValueError):
        pass
    return out


def _progress(row: dict[str, Any]) -> str:
    s = row.get("summary") or {}
    lat = row["latency_ms"]
    return (
        f"live {row['resolution']} --fps {row['fps']:g} ({row['kind']}, {row['duration_s']:g} s):"
        f" {s.get('frames_read')} read, {s.get('frames_scored')} scored, "
        f"{s.get('frames_dropped')} dropped; latency median {lat['median']} ms, p95 "
        f"{lat['p95']} ms; RSS {row['rss_mb'].get('first')}->{row['rss_mb'].get('last')} MB; "
        f"{'kept up' if row['kept_up'] else 'behind: ' + '; '.join(row['behind'])}; load "
        f"{row['load_average_start'][0]:g}->{row['load_average_end'][0]:g}"
    )


def summarize(result: dict[str, Any]) -> dict[str, Any]:
    """Per resolution the highest ``--fps`` that kept up and that run's figures; the long run's
    figures; whether the issue's goal (720p30 followed live, p95 under 1 s, memory flat) was
    met."""
    out: dict[str, Any] = {}
    runs = result["runs"]
    for name in result["settings"]["resolutions"]:
        rows = [r for r in runs if r["resolution"] == name and r["kind"] == "ladder"]
        best = highest_kept_up(rows)
        row = next((r for r in rows if r["fps"] == best), None)
        out[name] = {"highest_fps_kept_up": best, **({} if row is None else _figures(row))}
    long_row = next((r for r in runs if r["kind"] == "long"), None)
    if long_row is not None:
        out["long"] = {
            "resolution": long_row["resolution"],
            "fps": long_row["fps"],
            "kept_up": long_row["kept_up"],
            **_figures(long_row),
        }
    goal_row = long_row or next(
        (r for r in runs if r["resolution"] == LONG_RESOLUTION
         and r["fps"] == out.get(LONG_RESOLUTION, {}).get("highest_fps_kept_up")),
        None,
    )  # fmt: skip
    if goal_row is not None:
        slope = goal_row["rss_mb"].get("slope_mb_per_min")
        flat = None if long_row is None or slope is None else abs(slope) <= FLAT_MB_PER_MIN
        p95 = goal_row["latency_ms"]["p95"]
        out["goal"] = {
            "text": f"{LONG_RESOLUTION}{RATE} followed live with p95 latency under "
            f"{GOAL_P95_MS / 1000:g} s, memory flat (|RSS slope| <= {FLAT_MB_PER_MIN:g} MB/min "
            "over the long run)",
            "fps": goal_row["fps"],
            "kept_up": goal_row["kept_up"],
            "p95_under_1s": p95 is not None and p95 < GOAL_P95_MS,
            "memory_flat": flat,
            "met": bool(goal_row["kept_up"] and p95 is not None and p95 < GOAL_P95_MS and flat),
        }
    return out


def _figures(row: dict[str, Any]) -> dict[str, Any]:
    s = row.get("summary") or {}
    rss = row["rss_mb"]
    return {
        "frames_read": s.get("frames_read"),
        "frames_scored": s.get("frames_scored"),
        "frames_dropped": s.get("frames_dropped"),
        "latency_median_ms": row["latency_ms"]["median"],
        "latency_p95_ms": row["latency_ms"]["p95"],
        "rss_first_mb": rss.get("first"),
        "rss_max_mb": rss.get("max"),
        "rss_last_mb": rss.get("last"),
        "rss_slope_mb_per_min": rss.get("slope_mb_per_min"),
        "cpu_s": row["cpu_s"],
        "cores_busy": row["cores_busy"],
    }


# --------------------------------------------------------------------------- the table


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def _load(values: Sequence[float] | None) -> str:
    return ", ".join(f"{x:g}" for x in values or []) or "-"


def render_table(result: dict[str, Any]) -> str:
    """The Markdown table of a live run (one row per watch), the highest rates that kept up,
    the long run's memory and the conditions (docs/live.md, the ``dfe bench`` report)."""
    lines = [
        "| stream | `--fps` | stream s | frames read / scored / dropped (after the first line) "
        "| latency ms: median / p95 / max | median ms, first / last third of the lines | kept up "
        "| RSS MB first / max / last (slope MB/min, long run) | CPU s (cores busy) | load average "
        "start, end |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["runs"]:
        s = r.get("summary") or {}
        lat, rss = r["latency_ms"], r["rss_mb"]
        slope = rss.get("slope_mb_per_min") if r["duration_s"] >= SLOPE_MIN_S else None
        name = f"{r['resolution']}{result['settings']['rate']}"
        if r["kind"] == "long":
            name = f"**{name}, {r['duration_s'] / 60:g} min**"
        kept = "yes" if r["kept_up"] else "no: " + "; ".join(r["behind"])
        lines.append(
            f"| {name} | {r['fps']:g} | {r['duration_s']:g} | {s.get('frames_read', '-')} / "
            f"{s.get('frames_scored', '-')} / {s.get('frames_dropped', '-')} "
            f"({r.get('dropped_after_warmup', '-')}) | {_ms(lat['median'])} / {_ms(lat['p95'])}"
            f" / {_ms(lat['max'])} | {_ms(lat['first_third_median'])} / "
            f"{_ms(lat['last_third_median'])} | {kept} | {rss.get('first', '-')} / "
            f"{rss.get('max', '-')} / {rss.get('last', '-')} "
            f"({'-' if slope is None else f'{slope:+.2f}'}) | {r['cpu_s']:.0f} "
            f"({r['cores_busy']}) | {r['load_average_start'][0]:g}, "
            f"{r['load_average_end'][0]:g} |"
        )
    res = result.get("results") or {}
    best = [
        f"{name}{result['settings']['rate']}: "
        + (f"{res[name]['highest_fps_kept_up']:g}" if res[name]["highest_fps_kept_up"] else "none")
        for name in result["settings"]["resolutions"]
        if name in res
    ]
    lines += ["", f"Highest `--fps` followed without falling behind: {', '.join(best)}."]
    long_ = res.get("long")
    if long_:
        run = next(r for r in result["runs"] if r["kind"] == "long")
        curve = ", ".join(f"{mb:g}" for _, mb in run["rss_mb"]["every_10s"][::6])
        lines.append(
            f"Long run ({long_['resolution']}{result['settings']['rate']}, `--fps "
            f"{long_['fps']:g}`, {run['duration_s'] / 60:g} minutes): RSS "
            f"{long_['rss_first_mb']} MB at the first line, at most {long_['rss_max_mb']} MB, "
            f"{long_['rss_last_mb']} MB at the end, slope {long_['rss_slope_mb_per_min']:+.2f} "
            f"MB per minute after the first minute (RSS every minute, MB: {curve})."
            + (
                " Frames dropped so far at each minute of the stream: "
                + ", ".join(str(d) for _, d in run["dropped_by_minute"])
                + "."
                if run.get("dropped_by_minute")
                else ""
            )
        )
    goal = res.get("goal")
    if goal:
        flat = {True: "yes", False: "no", None: "not measured"}[goal["memory_flat"]]
        lines.append(
            f"Goal ({goal['text']}): {'met' if goal['met'] else 'not met'} at `--fps "
            f"{goal['fps']:g}` (kept up: {'yes' if goal['kept_up'] else 'no'}; p95 under 1 s: "
            f"{'yes' if goal['p95_under_1s'] else 'no'}; memory flat: {flat})."
        )
    m = result["host"]["machine"]
    model = result["model"]
    lines += [
        "",
        f"{m['cpu']}, {result['host']['cpu_cores']} cores; {model.get('architecture') or 'model'}"
        f" ({'untrained demo, ' if model.get('demo') else ''}ONNX Runtime fp32), det_500m; "
        f"`dfe watch` defaults (4 s window, 1 s hop, queue 4); clip {result['clip']}, "
        f"encoded `{result['settings']['encoder']}`; started {result['started']}, "
        f"{result['seconds'] / 60:.1f} minutes in all; load average (1, 5, 15 min) "
        f"{_load(result['load_average_start'])} at the start, "
        f"{_load(result['load_average_end'])} at the end.",
    ]
    return "\n".join(lines)


# --------------------------------------------------------------------------- entry


def default_clip() -> Path:
    """The shared 1080p clip with one face (``dfdc_like_real.mp4``), else the first 1080p one."""
    from engine.demo import shared_dir

    videos = shared_dir() / "videos"
    for name in ("dfdc_like_real.mp4", "dfdc_like_fake.mp4"):
        if (videos / name).is_file():
            return videos / name
    clips = sorted(videos.glob("dfdc_*.mp4"))
    if not clips:
        raise EngineError(f"no 1080p clip in {videos} (set DFE_SHARED, or pass --clip)")
    return clips[0]


def demo_model(workdir: Path) -> Path:
    """The untrained demo checkpoint exported to ONNX fp32 in ``workdir/model`` (the model of
    ``dfe bench``; speed does not depend on the weights). Needs torch."""
    from export.demo import make_demo_checkpoint
    from export.onnx_export import export_checkpoint

    model = workdir / "model"
    if not (model / "classifier.json").is_file():
        ckpt = make_demo_checkpoint(workdir)
        export_checkpoint(ckpt, model, seq_len=20, extra={"demo": True})
    return model


def main(argv: list[str] | None = None) -> int:
    """``python -m benchmarks.live_bench``: run and write the JSON (and print the table)."""
    p = argparse.ArgumentParser(prog="python -m benchmarks.live_bench", description=__doc__)
    p.add_argument("--model", type=Path, default=None,
                   help="exported model directory (default: export the demo checkpoint into "
                   "--workdir, or a temporary directory)")  # fmt: skip
    p.add_argument("--models", default=None,
                   help="models directory (the face detector; default: $DFE_MODELS or the "
                   "shared models)")  # fmt: skip
    p.add_argument("--clip", type=Path, default=None, help="a 1080p clip (default: shared)")
    p.add_argument("--duration", type=float, default=FULL_DURATION_S,
                   help=f"seconds of stream per ladder run (default: {FULL_DURATION_S:g})",
                   )  # fmt: skip
    p.add_argument("--fps", type=float, nargs="+", default=list(FULL_LADDER),
                   help="the --fps ladder, climbed until a rate falls behind (default: "
                   f"{' '.join(f'{f:g}' for f in FULL_LADDER)})")  # fmt: skip
    p.add_argument("--no-refine", action="store_true",
                   help="no run halfway between the last rate that kept up and the first that "
                   "did not")  # fmt: skip
    p.add_argument("--resolutions", nargs="+", choices=list(RESOLUTIONS),
                   default=list(RESOLUTIONS))  # fmt: skip
    p.add_argument("--long", type=float, default=0.0,
                   help=f"seconds of the long run at {LONG_RESOLUTION} at its highest rate that "
                   "kept up (0: none; the committed result: 600)")  # fmt: skip
    p.add_argument("--workdir", type=Path, default=None,
                   help="keep the encoded streams and each run's lines here")  # fmt: skip
    p.add_argument("--out", "-o", type=Path, required=True, help="JSON results")
    args = p.parse_args(argv)
    from engine.demo import default_models_dir

    tmp = None
    model = args.model
    if model is None:
        base = args.workdir or Path(tmp := tempfile.mkdtemp(prefix="dfe-live-model-"))
        model = demo_model(base)
    try:
        result = measure(
            model,
            args.clip or default_clip(),
            models_dir=args.models or default_models_dir(),
            duration=args.duration,
            ladder=args.fps,
            resolutions=args.resolutions,
            long=args.long,
            refine=not args.no_refine,
            workdir=args.workdir,
        )
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    result["command"] = "python -m benchmarks.live_bench " + " ".join(
        sys.argv[1:] if argv is None else argv
    )
    write_json(args.out, result)
    print(render_table(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
