"""Soak benchmark: does resident memory stay flat over a long job?

Three long jobs, each the real command in its own process(es), over N entries of a directory
made for it (the test clips linked many times, plus zero-byte, text and truncated files):

- ``predict``: ``dfe predict DIR --seq-len 4 --out scores.jsonl`` (one process);
- ``serve``: ``dfe serve`` on 127.0.0.1, fed one upload after another by ``--clients`` client
  threads that poll each job to its end (the server's process);
- ``ray``: ``dfe score DIR --ray --out scores.parquet`` (the driver, Ray's GCS and raylet, and
  every worker and actor of the local cluster: all descendants of the command's process).

While a job runs, the resident memory of the whole job (the process and all its descendants,
read from ``/proc``: the sum of RSS, and of PSS, which counts shared pages once) is sampled every
``--interval`` seconds together with the number of videos done (records written, answers
received). The summary gives the least-squares **slope of RSS against videos done after the
warm-up** (the first ``--warmup`` fraction of the entries, at least 100 videos), in MB per 1,000
videos, with its standard error; the peak; RSS at the end of the warm-up and at the end; and
records written against inputs (every entry must get exactly one record, or one answer for the
server: a job that ends ``done`` or ``error``, or a refusal of a file that is not a video).

Results of each mode are merged into one JSON file (``-o``) under the run's name (the mode, or
``--run NAME`` to keep a variant beside it), and a PNG (RSS against videos done, one panel per
run, with the fitted line) is drawn from it::

    python -m benchmarks.soak predict --model DIR --models ../shared/models -o soak.json
    python -m benchmarks.soak serve --model DIR --models ../shared/models -o soak.json
    python -m benchmarks.soak ray --model DIR --models ../shared/models -o soak.json

The JSON keeps the samples summarised: the fit and the totals (``summary``) and, per minute of
the run (``profile``, :func:`profile`), the videos done and the minimum, median and maximum RSS
(median PSS) of the samples taken in it. ``--raw-samples`` keeps every sample too (``samples``;
a 10,000-video job takes about 800 of them).

``dfe bench --full`` runs it too. Not a unit test: the default 10,000-entry ``predict`` job
takes about an hour on 2 cores. ``tests/benchmarks/test_soak.py`` runs a short version as a
guard.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.common import machine_info, process_tree, wait_for_job, write_json

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[1]
PAGE_MB = os.sysconf("SC_PAGE_SIZE") / 2**20
MODES = ("predict", "serve", "ray")
#: Default entries per mode: the issue's 10,000 for ``dfe predict``; the server and the Ray pool
#: are slower per video on 2 cores (explanations drawn per job; Ray's start-up), so shorter.
DEFAULT_ENTRIES = {"predict": 10_000, "serve": 2_000, "ray": 5_000}
#: The bound of the issue: RSS after warm-up grows by less than this per 1,000 videos.
SLOPE_BOUND_MB = 50.0
#: Seconds of the run per row of a result's ``profile``.
PROFILE_PERIOD_S = 60.0


# --------------------------------------------------------------------------- inputs


def make_inputs(videos: list[Path], directory: Path, entries: int, bad: int) -> list[str]:
    """``entries`` files in ``directory``: ``bad`` broken ones (zero-byte, text, truncated
    copies of the first video, in turn) spread evenly through the sorted order, the rest hard
    links (copies across file systems) cycling over ``videos``: distinct inputs, where symlinks
    to one file would be one input (``engine.batch`` scores a real path once). Returns the
    sorted paths."""
    if not videos:
        raise ValueError("no videos to link")
    if not 0 <= bad <= entries:
        raise ValueError(f"bad must be in [0, entries], got {bad} of {entries}")
    directory.mkdir(parents=True, exist_ok=True)
    head = videos[0].read_bytes()[: 4000 + 997 * 16]
    every = entries // bad if bad else entries + 1
    k = 0
    for i in range(entries):
        if bad and i % every == every - 1 and i // every < bad:
            path = directory / f"{i:06d}_bad.mp4"
            kind = (i // every) % 3
            if kind == 0:
                path.write_bytes(b"")
            elif kind == 1:
                path.write_text("this is not a video\n")
            else:
                path.write_bytes(head[: 4000 + 997 * ((i // every) % 16)])
        else:
            src = videos[k % len(videos)]
            k += 1
            dst = directory / f"{i:06d}_{src.name}"
            try:
                os.link(src.resolve(), dst)
            except OSError:  # another file system, or links not allowed
                shutil.copyfile(src, dst)
    return sorted(str(p) for p in directory.iterdir())


def default_bad(entries: int) -> int:
    """One broken file per 100 entries (at least 3, one of each kind, when there is room)."""
    return min(entries, max(3, entries // 100))


# --------------------------------------------------------------------------- memory


def _rss_pss_mb(pid: int) -> tuple[float, float]:
    """(RSS, PSS) of one process in MB; (0, 0) once it is gone."""
    try:
        rss = int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE_MB
    except (OSError, IndexError, ValueError):
        return 0.0, 0.0
    pss = rss
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                pss = int(line.split()[1]) / 1024
                break
    except (OSError, ValueError):
        pass
    return rss, pss


def job_memory(root: int) -> dict[str, float]:
    """Resident memory of ``root`` and its descendants: summed RSS and PSS (MB), processes."""
    rss = pss = 0.0
    pids = process_tree(root)
    for pid in pids:
        r, p = _rss_pss_mb(pid)
        rss += r
        pss += p
    return {"rss_mb": round(rss, 1), "pss_mb": round(pss, 1), "processes": len(pids)}


class Sampler:
    """Samples :func:`job_memory` of a process tree and ``done()`` every ``interval`` seconds in
    a thread, from ``start()`` to ``stop()``; ``samples`` holds ``{t, done, rss_mb, pss_mb,
    processes}`` dicts."""

    def __init__(self, root: int, done: Callable[[], int], interval: float = 2.0) -> None:
        self.root = root
        self.done = done
        self.interval = interval
        self.samples: list[dict[str, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="soak-sampler", daemon=True)
        self._t0 = 0.0

    def _run(self) -> None:
        while True:
            self.sample()
            if self._stop.wait(self.interval):
                return

    def sample(self) -> None:
        row: dict[str, float] = {"t": round(time.perf_counter() - self._t0, 2)}
        row["done"] = self.done()
        row.update(job_memory(self.root))
        if row["rss_mb"] > 0:
            self.samples.append(row)

    def start(self) -> Sampler:
        self._t0 = time.perf_counter()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


# --------------------------------------------------------------------------- summary


def fit_slope(xs: list[float], ys: list[float]) -> tuple[float, float] | None:
    """Least-squares slope of ``ys`` against ``xs`` and its standard error; None with fewer
    than 3 points or no spread in ``xs``."""
    n = len(xs)
    if n < 3:
        return None
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    if sxx == 0:
        return None
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx
    resid = sum((y - my - slope * (x - mx)) ** 2 for x, y in zip(xs, ys))
    return slope, (resid / (n - 2) / sxx) ** 0.5


def warmup_videos(entries: int, warmup: float) -> int:
    """Videos of the warm-up: the ``warmup`` fraction of the entries, at least 100 (or half the
    entries when they are fewer than 200)."""
    return min(max(100, int(entries * warmup)), entries // 2)


def summarize(
    samples: list[dict[str, float]], entries: int, warmup: float, key: str = "rss_mb"
) -> dict[str, Any]:
    """Slope of ``key`` (MB) per 1,000 videos done after the warm-up (until the last video is
    done: the shutdown frees memory), peak, start and end. ``rss_fit_mb`` is the fitted RSS
    line at the first and the last steady sample, ``[[videos done, MB], [videos done, MB]]``
    (what the plot draws; None without a fit)."""
    start = warmup_videos(entries, warmup)
    # after the warm-up, until the last video: not the shutdown (sessions freed, summary)
    steady = [s for s in samples if start <= s["done"] < entries]
    out: dict[str, Any] = {
        "warmup_videos": start,
        "steady_samples": len(steady),
        "peak_rss_mb": max((s["rss_mb"] for s in samples), default=None),
        "peak_pss_mb": max((s["pss_mb"] for s in samples), default=None),
        "rss_mb_at_warmup_end": steady[0]["rss_mb"] if steady else None,
        "rss_mb_at_end": samples[-1]["rss_mb"] if samples else None,
    }
    xs = [s["done"] for s in steady]
    for name in ("rss_mb", "pss_mb"):
        fit = fit_slope(xs, [s[name] for s in steady])
        label = name[:-3]
        out[f"{label}_slope_mb_per_1000"] = round(fit[0] * 1000, 2) if fit else None
        out[f"{label}_slope_stderr_mb_per_1000"] = round(fit[1] * 1000, 2) if fit else None
        if name == "rss_mb":
            line = None
            if fit:
                mx, my = sum(xs) / len(xs), sum(s[name] for s in steady) / len(steady)
                line = [[x, round(my + fit[0] * (x - mx), 1)] for x in (xs[0], xs[-1])]
            out["rss_fit_mb"] = line
    out["slope_mb_per_1000"] = out[f"{key[:-3]}_slope_mb_per_1000"]
    return out


def profile(
    samples: list[dict[str, float]], period_s: float = PROFILE_PERIOD_S
) -> list[dict[str, Any]]:
    """The samples summarised per ``period_s`` seconds of the run (by their time ``t``), in
    order, one row per period that has samples: ``t_s`` and ``done`` (videos done) of its first
    and last sample, ``samples``, ``rss_mb`` (``min``, ``p50``, ``max``), ``pss_mb`` (``p50``)
    and ``processes`` (the most seen). Raises ``ValueError`` for ``period_s`` <= 0."""
    if period_s <= 0:
        raise ValueError(f"period_s must be > 0, got {period_s}")
    periods: dict[int, list[dict[str, float]]] = {}
    for s in samples:
        periods.setdefault(int(s["t"] // period_s), []).append(s)
    rows = []
    for k in sorted(periods):
        group = periods[k]
        rss = [s["rss_mb"] for s in group]
        rows.append(
            {
                "t_s": [group[0]["t"], group[-1]["t"]],
                "done": [group[0]["done"], group[-1]["done"]],
                "samples": len(group),
                "rss_mb": {
                    "min": min(rss),
                    "p50": round(statistics.median(rss), 1),
                    "max": max(rss),
                },
                "pss_mb": {"p50": round(statistics.median(s["pss_mb"] for s in group), 1)},
                "processes": max(int(s.get("processes", 1)) for s in group),
            }
        )
    return rows


def check_records(inputs: list[str], videos: list[str]) -> dict[str, Any]:
    """Records written against inputs: counts, missing, duplicated, unknown."""
    counts = Counter(videos)
    wanted = set(inputs)
    missing = [p for p in inputs if p not in counts]
    duplicated = sorted(p for p, c in counts.items() if c > 1)
    unknown = sorted(p for p in counts if p not in wanted)
    return {
        "inputs": len(inputs),
        "records": len(videos),
        "missing": len(missing),
        "duplicated": len(duplicated),
        "unknown": len(unknown),
        "one_record_each": not missing and not duplicated and not unknown,
        "examples": {"missing": missing[:5], "duplicated": duplicated[:5], "unknown": unknown[:5]},
    }


# --------------------------------------------------------------------------- the jobs


@dataclass(frozen=True)
class SoakConfig:
    model: Path
    models: str | None
    videos: list[Path]
    entries: int
    bad: int
    seq_len: int = 4
    interval: float = 2.0
    warmup: float = 0.1
    workdir: Path | None = None  # default: a temporary directory, removed afterwards
    clients: int = 2  # serve
    num_workers: int = 2  # ray
    extra_args: tuple[str, ...] = ()  # more `dfe` options (e.g. --threads 1)
    raw_samples: bool = False  # keep every sample in the result (``samples``), not only the profile


def _dfe(*args: str) -> list[str]:
    return [sys.executable, "-m", "engine.cli", *args]


def _engine_args(cfg: SoakConfig) -> list[str]:
    args = ["--backend", "ort", *cfg.extra_args]
    if cfg.models:
        args += ["--models", str(cfg.models), "--no-download"]
    return args


class _LineCounter:
    """Counts the lines of a growing file, reading only what was appended since the last call."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.lines = 0

    def __call__(self) -> int:
        try:
            with self.path.open("rb") as f:
                f.seek(self.offset)
                chunk = f.read()
        except OSError:
            return self.lines
        end = chunk.rfind(b"\n") + 1  # a line still being written is counted once complete
        self.lines += chunk.count(b"\n", 0, end)
        self.offset += end
        return self.lines


@contextlib.contextmanager
def _workdir(cfg: SoakConfig, mode: str) -> Iterator[Path]:
    if cfg.workdir is not None:
        path = cfg.workdir / mode
        if path.exists():
            shutil.rmtree(path)
        path.mkdir(parents=True)
        yield path
        return
    with tempfile.TemporaryDirectory(prefix=f"dfe-soak-{mode}-") as tmp:
        yield Path(tmp)


def _run_monitored(
    cmd: list[str], cfg: SoakConfig, done: Callable[[], int], log_path: Path, **popen: Any
) -> tuple[int, float, Sampler]:
    """Run ``cmd`` (cwd: the repository), sampling its process tree until it exits."""
    with log_path.open("w") as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=err, **popen)
        sampler = Sampler(proc.pid, done, cfg.interval).start()
        try:
            rc = proc.wait()
        finally:
            if proc.poll() is None:
                proc.kill()
            sampler.stop()
    return rc, time.perf_counter() - t0, sampler


def soak_predict(cfg: SoakConfig) -> dict[str, Any]:
    """``dfe predict DIR --seq-len N --out scores.jsonl`` over ``cfg.entries`` entries."""
    with _workdir(cfg, "predict") as tmp:
        paths = make_inputs(cfg.videos, tmp / "in", cfg.entries, cfg.bad)
        out = tmp / "scores.jsonl"
        cmd = _dfe(
            "predict",
            str(tmp / "in"),
            "--model",
            str(cfg.model),
            "--seq-len",
            str(cfg.seq_len),
            "--out",
            str(out),
            "--no-progress",
            *_engine_args(cfg),
        )
        rc, seconds, sampler = _run_monitored(cmd, cfg, _LineCounter(out), tmp / "stderr.txt")
        records = [json.loads(line) for line in out.read_text().splitlines() if line.strip()]
        tail = (tmp / "stderr.txt").read_text()[-2000:]
    return _result("predict", cmd, cfg, rc, seconds, sampler, paths, records, tail)


def _result(
    mode: str,
    cmd: list[str],
    cfg: SoakConfig,
    rc: int,
    seconds: float,
    sampler: Sampler,
    paths: list[str],
    records: list[dict[str, Any]],
    stderr_tail: str,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    summary = summarize(sampler.samples, len(paths), cfg.warmup)
    summary.update(check_records(paths, [r["video"] for r in records]))
    summary.update(
        {
            "ok": sum(r.get("status") == "ok" for r in records),
            "errors": sum(r.get("status") != "ok" for r in records),
            "exit_code": rc,
            "seconds": round(seconds, 1),
            "videos_per_s": round(len(paths) / seconds, 3) if seconds else None,
            "slope_bound_mb_per_1000": SLOPE_BOUND_MB,
        }
    )
    summary["flat"] = (
        summary["slope_mb_per_1000"] is not None and summary["slope_mb_per_1000"] < SLOPE_BOUND_MB
    )
    if extra:
        summary.update(extra)
    if rc not in (0, 3):
        log.error("%s exited with %s: %s", mode, rc, stderr_tail)
    return {
        "mode": mode,
        "command": " ".join(Path(c).name if c == sys.executable else c for c in cmd),
        "config": {
            "entries": len(paths),
            "bad": cfg.bad,
            "seq_len": cfg.seq_len,
            "interval_s": cfg.interval,
            "warmup": cfg.warmup,
            "model": str(cfg.model),
            "videos": [v.name for v in cfg.videos],
            "profile_period_s": PROFILE_PERIOD_S,
        },
        "summary": summary,
        "profile": profile(sampler.samples),
        **({"samples": sampler.samples} if cfg.raw_samples else {}),
        "stderr_tail": stderr_tail if rc not in (0, 3) else "",
    }


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def soak_serve(cfg: SoakConfig) -> dict[str, Any]:
    """``dfe serve`` fed ``cfg.entries`` uploads, ``cfg.clients`` at a time, each polled to its
    end; finished jobs' result files are deleted by the client to keep the disk bounded."""
    import httpx

    with _workdir(cfg, "serve") as tmp:
        paths = make_inputs(cfg.videos, tmp / "in", cfg.entries, cfg.bad)
        data = tmp / "data"
        port = _free_port()
        cmd = _dfe(
            "serve",
            "--model",
            str(cfg.model),
            "--port",
            str(port),
            "--data",
            str(data),
            "--queue",
            str(max(4, 2 * cfg.clients)),
            *_engine_args(cfg),
        )
        base = f"http://127.0.0.1:{port}"
        answers: list[dict[str, Any]] = []
        lock = threading.Lock()
        todo = iter(paths)
        contents: dict[str, bytes] = {}

        def body(path: str) -> bytes:
            real = os.path.realpath(path)
            if real not in contents:
                contents[real] = Path(path).read_bytes()
            return contents[real]

        def client() -> None:
            with httpx.Client(base_url=base, timeout=300) as c:
                while True:
                    with lock:
                        path = next(todo, None)
                        payload = body(path) if path else b""
                    if path is None:
                        return
                    name = Path(path).name
                    while True:
                        r = c.post(
                            "/api/v1/jobs",
                            files={"video": (name, payload, "video/mp4")},
                            data={"seq_len": str(cfg.seq_len)},
                        )
                        if r.status_code not in (429, 503):
                            break
                        time.sleep(0.2)
                    if r.status_code != 202:
                        answer = {"video": path, "status": f"refused {r.status_code}"}
                    else:
                        job_id = r.json()["id"]
                        job = wait_for_job(c, job_id)
                        ok = job["filename"] == name
                        answer = {
                            "video": path if ok else job["filename"],
                            "status": job["status"],
                            "id": job_id,
                        }
                        shutil.rmtree(data / "results" / job_id, ignore_errors=True)
                    with lock:
                        answers.append(answer)

        def answered() -> int:
            with lock:
                return len(answers)

        with (tmp / "stderr.txt").open("w") as err:
            t0 = time.perf_counter()
            proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=err)
            try:
                _wait_ready(base, proc)
                sampler = Sampler(proc.pid, answered, cfg.interval).start()
                threads = [threading.Thread(target=client) for _ in range(cfg.clients)]
                for t in threads:
                    t.start()
                for t in threads:
                    t.join()
                sampler.sample()
                sampler.stop()
                seconds = time.perf_counter() - t0
            finally:
                proc.send_signal(signal.SIGINT)
                try:
                    proc.wait(60)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        tail = (tmp / "stderr.txt").read_text()[-2000:]
    statuses = Counter(a["status"] for a in answers)
    records = [
        {"video": a["video"], "status": "ok" if a["status"] == "done" else a["status"]}
        for a in answers
    ]
    extra = {
        "answers": dict(statuses),
        "unique_job_ids": len({a["id"] for a in answers if "id" in a}),
        "jobs": sum(1 for a in answers if "id" in a),
    }
    return _result("serve", cmd, cfg, 0, seconds, sampler, paths, records, tail, extra)


def _wait_ready(base: str, proc: subprocess.Popen, timeout: float = 300.0) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"dfe serve exited with {proc.returncode} before it was ready")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{base}/api/v1/health", timeout=5).status_code == 200:
                return
        time.sleep(0.5)
    raise RuntimeError(f"dfe serve was not ready after {timeout:.0f} s")


class _ParquetRows:
    """Rows in the complete ``*.parquet`` files of a directory (metadata only, cached)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.rows: dict[str, int] = {}

    def __call__(self) -> int:
        import pyarrow.parquet as pq

        with contextlib.suppress(OSError):
            for f in self.directory.glob("*.parquet"):
                if f.name not in self.rows:
                    with contextlib.suppress(Exception):  # a file still being written
                        self.rows[f.name] = pq.read_metadata(f).num_rows
        return sum(self.rows.values())


def soak_ray(cfg: SoakConfig) -> dict[str, Any]:
    """``dfe score DIR --ray --out scores.parquet`` on a local Ray cluster of its own."""
    from engine.distributed import read_records

    with _workdir(cfg, "ray") as tmp:
        paths = make_inputs(cfg.videos, tmp / "in", cfg.entries, cfg.bad)
        out = tmp / "scores.parquet"
        cmd = _dfe(
            "score",
            str(tmp / "in"),
            "--model",
            str(cfg.model),
            "--ray",
            "--out",
            str(out),
            "--seq-len",
            str(cfg.seq_len),
            "--num-workers",
            str(cfg.num_workers),
            *_engine_args(cfg),
        )
        env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
        rc, seconds, sampler = _run_monitored(
            cmd, cfg, _ParquetRows(out), tmp / "stderr.txt", env=env, start_new_session=True
        )
        records = read_records(out)
        tail = (tmp / "stderr.txt").read_text()[-2000:]
    return _result("ray", cmd, cfg, rc, seconds, sampler, paths, records, tail)


SOAKS: dict[str, Callable[[SoakConfig], dict[str, Any]]] = {
    "predict": soak_predict,
    "serve": soak_serve,
    "ray": soak_ray,
}


# --------------------------------------------------------------------------- output


def merge_results(path: Path, result: dict[str, Any], name: str | None = None) -> dict[str, Any]:
    """Add (or replace) ``result`` in the JSON file at ``path`` under ``name`` (default: its
    mode); returns the whole."""
    data: dict[str, Any] = {"benchmark": "soak", "runs": {}}
    if path.is_file():
        data = json.loads(path.read_text())
    data["machine"] = machine_info()
    data["runs"][name or result["mode"]] = result
    write_json(path, data)
    return data


def plot(data: dict[str, Any], png: Path) -> Path:
    """RSS against videos done, one panel per run (the modes' runs first), from each run's
    per-minute ``profile``: the median and the minute's range, PSS's median, the warm-up and
    the slope fitted after it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [m for m in MODES if m in data["runs"]]
    names += [n for n in data["runs"] if n not in names]
    cols = len(names) if len(names) <= 3 else 2
    rows_n = -(-len(names) // cols)
    fig, axes = plt.subplots(rows_n, cols, figsize=(5.5 * cols, 4.2 * rows_n), squeeze=False)
    for ax, name in zip(axes.flat, names):
        run = data["runs"][name]
        rows, summ = run["profile"], run["summary"]
        xs = [r["done"][1] for r in rows]
        ax.fill_between(
            xs,
            [r["rss_mb"]["min"] for r in rows],
            [r["rss_mb"]["max"] for r in rows],
            alpha=0.3,
            lw=0,
            label="RSS, range per minute",
        )
        ax.plot(xs, [r["rss_mb"]["p50"] for r in rows], lw=1.0, label="RSS, median per minute")
        ax.plot(xs, [r["pss_mb"]["p50"] for r in rows], lw=1.0, alpha=0.7, label="PSS, median")
        ax.axvspan(0, summ["warmup_videos"], color="0.9", label="warm-up")
        line = summ.get("rss_fit_mb")
        if line:
            ax.plot(
                [p[0] for p in line],
                [p[1] for p in line],
                "k--",
                lw=1.2,
                label=f"fit: {summ['rss_slope_mb_per_1000']:+.1f} MB / 1,000 videos",
            )
        ax.set_title(
            f"{name}: {summ['records']}/{summ['inputs']} records, "
            f"peak {summ['peak_rss_mb'] / 1024:.2f} GB",
            fontsize=10,
        )
        ax.set_xlabel("videos done")
        ax.set_ylabel("resident memory (MB)")
        ax.set_ylim(bottom=0)
        ax.legend(fontsize=8, loc="lower right")
    for ax in axes.flat[len(names) :]:
        ax.axis("off")
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=90)
    plt.close(fig)
    return png


def run_soak(
    mode: str, cfg: SoakConfig, out: Path, png: Path | None = None, name: str | None = None
) -> dict[str, Any]:
    """Run one mode, merge its result into ``out`` under ``name`` (default: the mode) and
    redraw ``png`` (default: next to it)."""
    log.info("soak %s: %d entries (%d bad), N=%d", mode, cfg.entries, cfg.bad, cfg.seq_len)
    result = SOAKS[mode](cfg)
    data = merge_results(out, result, name)
    plot(data, png or out.with_suffix(".png"))
    log.info("soak %s: %s", mode, json.dumps(result["summary"]))
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m benchmarks.soak", description=__doc__.split("\n\n")[0]
    )
    ap.add_argument("modes", nargs="*", help=f"any of {', '.join(MODES)} (default: predict)")
    ap.add_argument("--model", required=True, type=Path, help="exported model directory")
    ap.add_argument("--models", default=None, help="detector models directory")
    ap.add_argument("--videos", type=Path, default=None, help="clips to link (default: shared)")
    ap.add_argument(
        "--entries",
        type=int,
        default=None,
        help="entries per mode (default: predict 10000, serve 2000, ray 5000)",
    )
    ap.add_argument("--bad", type=int, default=None, help="broken files (default: 1 per 100)")
    ap.add_argument("--seq-len", type=int, default=4)
    ap.add_argument("--interval", type=float, default=2.0, help="seconds between samples")
    ap.add_argument("--warmup", type=float, default=0.1, help="fraction of entries before the fit")
    ap.add_argument("--clients", type=int, default=2, help="serve: concurrent uploaders")
    ap.add_argument("--num-workers", type=int, default=2, help="ray: actors")
    ap.add_argument("--workdir", type=Path, default=None, help="keep inputs and outputs here")
    ap.add_argument(
        "--raw-samples",
        action="store_true",
        help="keep every memory sample in the JSON (default: the per-minute profile only)",
    )
    ap.add_argument(
        "--run",
        default=None,
        metavar="NAME",
        help="the run's name in the JSON (default: the mode), e.g. a variant kept beside it; "
        "one mode only",
    )
    ap.add_argument("-o", "--out", type=Path, default=Path("bench_out/soak.json"))
    args = ap.parse_args(argv)
    unknown = [m for m in args.modes if m not in MODES]
    if unknown:
        ap.error(f"unknown mode(s) {unknown}; supported values are {', '.join(MODES)}")
    if args.run is not None and len(args.modes) > 1:
        ap.error("--run names one run: give one mode")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request otherwise
    from engine.demo import shared_dir

    videos_dir = args.videos or shared_dir() / "videos"
    videos = sorted(Path(videos_dir).glob("*.mp4"))
    if not videos:
        raise SystemExit(f"no .mp4 clips in {videos_dir}; pass --videos DIR")
    failed = False
    for mode in args.modes or ["predict"]:
        entries = args.entries or DEFAULT_ENTRIES[mode]
        cfg = SoakConfig(
            model=args.model,
            models=args.models,
            videos=videos,
            entries=entries,
            bad=default_bad(entries) if args.bad is None else args.bad,
            seq_len=args.seq_len,
            interval=args.interval,
            warmup=args.warmup,
            workdir=args.workdir,
            clients=args.clients,
            num_workers=args.num_workers,
            raw_samples=args.raw_samples,
        )
        summary = run_soak(mode, cfg, args.out, name=args.run)["summary"]
        failed |= not (summary["flat"] and summary["one_record_each"])
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
