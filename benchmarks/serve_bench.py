"""Throughput of ``dfe serve``: N concurrent uploads on localhost, every one must finish.

Starts a real uvicorn on 127.0.0.1 with one loaded Engine, fires ``--uploads`` concurrent
uploads (cycling over the videos given), polls each job to the end and writes JSON: videos/s
and frames/s end to end, upload-accept latency and job latency (median, p25/p75), per-stage
medians, failures, and the machine. Exit code 1 if any job is lost or failed.

    python benchmarks/serve_bench.py --model DIR --models ../shared/models \
        --videos ../shared/videos --uploads 20 --seq-len 10 -o bench_out/serve.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path


def _quantiles(xs: list[float]) -> dict[str, float]:
    if len(xs) < 2:
        v = xs[0] if xs else float("nan")
        return {"median": v, "p25": v, "p75": v}
    q = statistics.quantiles(xs, n=4)
    return {"median": statistics.median(xs), "p25": q[0], "p75": q[2]}


def run(args: argparse.Namespace) -> dict:
    import httpx

    from benchmarks.common import machine_info, wait_for_job
    from engine.api import Engine
    from engine.server.live import live_server

    videos = sorted(Path(args.videos).glob("*.mp4")) if Path(args.videos).is_dir() else []
    if not videos:
        raise SystemExit(f"no .mp4 videos in {args.videos}")
    engine = Engine.load(args.model, backend=args.backend, models_dir=args.models, download=False)
    with (
        tempfile.TemporaryDirectory() as data,
        live_server(
            engine, Path(data), max_queue=max(args.uploads, 1), workers=args.workers
        ) as base,
    ):

        def one(k: int) -> dict:
            path = videos[k % len(videos)]
            with httpx.Client(base_url=base, timeout=120) as c:
                t0 = time.perf_counter()
                r = c.post(
                    "/api/v1/jobs",
                    files={"video": (path.name, path.read_bytes(), "video/mp4")},
                    data={"seq_len": str(args.seq_len)},
                )
                accepted = time.perf_counter() - t0
                if r.status_code != 202:
                    return {"status": f"http {r.status_code}", "detail": r.text}
                job = wait_for_job(c, r.json()["id"])
                job["accept_s"] = accepted
                job["latency_s"] = time.perf_counter() - t0
                return job

        t0 = time.perf_counter()
        with ThreadPoolExecutor(args.uploads) as pool:
            jobs = list(pool.map(one, range(args.uploads)))
        wall = time.perf_counter() - t0
    done = [j for j in jobs if j.get("status") == "done"]
    frames = sum(j["result"]["frames"] for j in done)
    stages = sorted({k for j in done for k in j["result"]["timings"]})
    return {
        "benchmark": "serve_concurrent_uploads",
        "uploads": args.uploads,
        "seq_len": args.seq_len,
        "workers": args.workers,
        "backend": engine.backend,
        "done": len(done),
        "failed": [
            j.get("error") or j.get("detail") or j.get("status") for j in jobs if j not in done
        ],
        "unique_ids": len({j.get("id") for j in done}),
        "wall_s": wall,
        "videos_per_s": len(done) / wall,
        "frames_per_s": frames / wall,
        "accept_s": _quantiles([j["accept_s"] for j in done]),
        "job_latency_s": _quantiles([j["latency_s"] for j in done]),
        "stage_median_s": {
            s: statistics.median(j["result"]["timings"].get(s, 0.0) for j in done) for s in stages
        },
        "machine": machine_info(),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, type=Path)
    p.add_argument("--models", default=None, help="detector models directory")
    p.add_argument("--videos", required=True, type=Path)
    p.add_argument("--uploads", type=int, default=20)
    p.add_argument("--seq-len", type=int, default=10)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--backend", default="ort")
    p.add_argument("-o", "--out", type=Path, default=Path("bench_out/serve.json"))
    args = p.parse_args(argv)
    result = run(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("done", "uploads", "videos_per_s", "frames_per_s")}))
    ok = result["done"] == args.uploads and result["unique_ids"] == args.uploads
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
