"""Memory of a long Ray Data scoring job: does resident memory stay flat as videos stream by?

Builds a directory of a few hundred entries (the test videos repeated through symlinks, plus
zero-byte, text and truncated files), scores it with ``engine.distributed.score`` on a local
Ray cluster, and samples the RSS of every process of the job (driver, raylet, GCS, actors) from
``/proc`` while it runs. Writes JSON with the samples, the records written over time, a summary
(peak, RSS at each quarter of the job, the actors' growth over its second half) and the check
that every entry got exactly one record.

    python -m benchmarks.ray_memory --model DIR --models ../shared/models -o ray_memory.json

Not a unit test: it takes minutes.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from benchmarks.common import machine_info, process_tree, write_json

log = logging.getLogger(__name__)
PAGE_KB = os.sysconf("SC_PAGE_SIZE") / 1024


def _rss_mb(pid: int) -> tuple[float, str]:
    try:
        pages = int(Path(f"/proc/{pid}/statm").read_text().split()[1])
        name = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
        return pages * PAGE_KB / 1024, name
    except (OSError, IndexError, ValueError):
        return 0.0, ""


def sample(root: int) -> dict[str, float]:
    total = workers = actors = 0.0
    n_workers = n_actors = 0
    for pid in process_tree(root):
        mb, name = _rss_mb(pid)
        total += mb
        if name.startswith("ray::"):  # a Ray worker process (idle, task or actor)
            workers += mb
            n_workers += 1
        if "MapWorker" in name:  # one of our scoring actors
            actors += mb
            n_actors += 1
    return {
        "total_mb": round(total, 1),
        "workers_mb": round(workers, 1),
        "workers": n_workers,
        "actors_mb": round(actors, 1),
        "actors": n_actors,
    }


def _slope(samples: list[dict[str, Any]], key: str) -> float | None:
    if len(samples) < 3:
        return None
    t = [x["t"] for x in samples]
    y = [x[key] for x in samples]
    mt, my = sum(t) / len(t), sum(y) / len(y)
    den = sum((a - mt) ** 2 for a in t)
    return round(60 * sum((a - mt) * (b - my) for a, b in zip(t, y)) / den, 1) if den else None


def make_inputs(videos: Path, directory: Path, copies: int, bad: int) -> list[str]:
    sources = sorted(videos.glob("*.mp4"))
    for i in range(copies):
        for src in sources:
            dst = directory / f"{i:04d}_{src.name}"  # distinct files: a path is scored once
            try:
                os.link(src.resolve(), dst)
            except OSError:
                shutil.copyfile(src, dst)
    good = sources[0].read_bytes()
    for i in range(bad):
        kind = i % 3
        path = directory / f"bad_{i:04d}.mp4"
        if kind == 0:
            path.write_bytes(b"")
        elif kind == 1:
            path.write_text("this is not a video\n")
        else:
            path.write_bytes(good[: 4000 + 997 * i])
    return sorted(str(p) for p in directory.iterdir())


def _count_records(out: Path) -> int:
    from engine.distributed import read_records

    try:
        return len(read_records(out))
    except Exception:  # a file being written
        return -1


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, type=Path)
    ap.add_argument("--models", default=None, help="detector models directory")
    ap.add_argument("--videos", type=Path, default=Path(__file__).resolve().parents[2] / "shared"
                    / "videos")  # fmt: skip
    ap.add_argument("--copies", type=int, default=50, help="symlinks per test video")
    ap.add_argument("--bad", type=int, default=30, help="bad files")
    ap.add_argument("--seq-len", type=int, default=4)
    ap.add_argument("--num-workers", type=int, default=2)
    ap.add_argument("--videos-per-batch", type=int, default=4)
    ap.add_argument("--interval", type=float, default=1.0, help="seconds between samples")
    ap.add_argument("-o", "--out", type=Path, default=Path("ray_memory.json"))
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    import ray

    from core.config import EngineConfig, RayConfig, SequenceConfig
    from engine import distributed

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # a throwaway local cluster
    ray.init(include_dashboard=False, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    with tempfile.TemporaryDirectory(prefix="dfe-ray-mem-") as tmp:
        tmp = Path(tmp)
        (tmp / "in").mkdir()
        paths = make_inputs(args.videos, tmp / "in", args.copies, args.bad)
        out = tmp / "scores.parquet"
        samples: list[dict[str, Any]] = []
        done = threading.Event()

        def sampler() -> None:
            t0 = time.perf_counter()
            while not done.is_set():
                s = sample(os.getpid())
                s["t"] = round(time.perf_counter() - t0, 2)
                s["records"] = _count_records(out)
                samples.append(s)
                done.wait(args.interval)

        thread = threading.Thread(target=sampler, daemon=True)
        thread.start()
        t0 = time.perf_counter()
        distributed.score(
            paths,
            args.model,
            out,
            config=EngineConfig(
                backend="ort", models_dir=args.models, download=args.models is None
            ),
            sequence=SequenceConfig(seq_len=args.seq_len),
            layout=RayConfig(num_workers=args.num_workers, videos_per_batch=args.videos_per_batch),
        )
        seconds = time.perf_counter() - t0
        done.set()
        thread.join()
        records = distributed.read_records(out)
    ray.shutdown()

    videos = [r["video"] for r in records]
    quarter = [samples[min(len(samples) - 1, round(q * (len(samples) - 1)))] for q in
               (0.25, 0.5, 0.75, 1.0)]  # fmt: skip
    # steady state: from the first sample with 10% of the records written
    warm = next((i for i, x in enumerate(samples) if x["records"] >= len(paths) // 10), 0)
    steady = samples[warm:]
    summary = {
        "entries": len(paths),
        "records": len(records),
        "one_record_each": sorted(videos) == sorted(paths),
        "ok": sum(r["status"] == "ok" for r in records),
        "errors": sum(r["status"] != "ok" for r in records),
        "seconds": round(seconds, 1),
        "videos_per_s": round(len(paths) / seconds, 2),
        "peak_total_mb": max(s["total_mb"] for s in samples),
        "peak_workers_mb": max(s["workers_mb"] for s in samples),
        "total_mb_at_quarters": [s["total_mb"] for s in quarter],
        "actors_mb_at_quarters": [s["actors_mb"] for s in quarter],
        "peak_actors_mb": max(s["actors_mb"] for s in samples),
        "steady_from_s": steady[0]["t"],
        "total_mb_at_steady_start": steady[0]["total_mb"],
        "total_mb_growth_after_steady_start": round(
            max(s["total_mb"] for s in steady) - steady[0]["total_mb"], 1
        ),
        "total_mb_at_end": samples[-1]["total_mb"],
        # least-squares trend over the steady state: ~0 when memory is flat
        "actors_mb_per_min_steady": _slope(steady, "actors_mb"),
        "total_mb_per_min_steady": _slope(steady, "total_mb"),
    }
    write_json(
        args.out,
        {
            "benchmark": "ray_memory",
            "machine": machine_info(),
            "ray": ray.__version__,
            "config": {k: str(v) for k, v in vars(args).items()},
            "summary": summary,
            "samples": samples,
        },
    )
    log.info("summary: %s", summary)


if __name__ == "__main__":
    main()
