"""Timing and reporting helpers shared by the benchmarks: warm-up, repeats, quantiles, machine."""

from __future__ import annotations

import json
import os
import platform
import resource
import shutil
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.errors import MissingDependencyError
from engine.provenance import library_versions


@dataclass(frozen=True)
class Timing:
    """Seconds per call: median and quartiles over ``runs`` timed calls after ``warmup``."""

    median: float
    p25: float
    p75: float
    runs: int

    def rate(self, items: float) -> dict[str, float]:
        """Items per second at the median and at the quartiles (p25 time -> p75 rate)."""
        return {
            "median": items / self.median,
            "p25": items / self.p75,
            "p75": items / self.p25,
        }

    def as_dict(self) -> dict[str, float]:
        return {"median_s": self.median, "p25_s": self.p25, "p75_s": self.p75, "runs": self.runs}


def time_call(fn: Callable[[], Any], *, warmup: int = 1, runs: int = 5) -> Timing:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    q = statistics.quantiles(times, n=4) if len(times) > 1 else [times[0]] * 3
    return Timing(statistics.median(times), q[0], q[2], len(times))


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


#: The CPU flags that name a host's vector extensions (``/proc/cpuinfo``), in this order.
ISA_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8")


def _isa() -> list[str]:
    """The :data:`ISA_FLAGS` this CPU has (empty where ``/proc/cpuinfo`` cannot be read)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                return [f for f in ISA_FLAGS if f in flags]
    except OSError:
        pass
    return []


def machine_info() -> dict[str, Any]:
    versions = library_versions(
        (
            "numpy",
            "onnxruntime",
            "onnx",
            "av",
            "cv2",
            "torch",
            "torchvision",
            "dlib",
            "insightface",
            "PIL",
        ),
        engine=False,
        python=False,
    )
    mem_gb = None
    try:
        pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        mem_gb = round(pages / 2**30, 1)
    except (ValueError, OSError):
        pass
    gpu = None
    try:
        import torch

        if torch.cuda.is_available():
            gpu = torch.cuda.get_device_name(0)
    except ImportError:
        pass
    return {
        "cpu": _cpu_model(),
        "isa": _isa(),
        "cores": os.cpu_count(),
        "memory_gb": mem_gb,
        "gpu": gpu,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": versions,
        "allocator_env": {
            k: os.environ[k]
            for k in (
                "MALLOC_MMAP_MAX_",
                "MALLOC_MMAP_THRESHOLD_",
                "MALLOC_TRIM_THRESHOLD_",
                "OMP_NUM_THREADS",
                "DFE_MALLOC_TRIM_INTERVAL",
                "DFE_MMAP_THRESHOLD",
            )
            if k in os.environ
        },
    }


def write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")


def process_tree(root: int) -> list[int]:
    """``root`` and all its living descendants (from ``/proc``; no psutil needed)."""
    parent: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                parent[int(entry.name)] = int(fields[1])
            except (OSError, IndexError, ValueError):
                continue
    tree, frontier = [root], {root}
    while frontier:
        nxt = {pid for pid, ppid in parent.items() if ppid in frontier}
        tree.extend(sorted(nxt))
        frontier = nxt
    return tree


def ffmpeg_path(purpose: str) -> str:
    """The ``ffmpeg`` command line tool's path; raises :class:`MissingDependencyError` saying
    what needs it (``purpose``, e.g. "the live benchmark encodes and serves its streams") and
    how to install it when it is not on PATH."""
    path = shutil.which("ffmpeg")
    if path is None:
        raise MissingDependencyError(
            f"{purpose} with the ffmpeg command line tool, which is not on PATH; install it "
            "(apt-get install -y ffmpeg)"
        )
    return path


def wait_for_job(client: Any, job_id: str, poll_s: float = 0.1) -> dict[str, Any]:
    """Poll ``dfe serve``'s ``GET /api/v1/jobs/{job_id}`` through ``client`` (an
    ``httpx.Client`` on the server's base URL) every ``poll_s`` seconds until the job is
    ``done`` or ``error``; returns that last answer (JSON)."""
    while True:
        job = client.get(f"/api/v1/jobs/{job_id}").json()
        if job["status"] in ("done", "error"):
            return job
        time.sleep(poll_s)
