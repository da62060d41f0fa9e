"""Classifier frames/s on CPU, fp32 vs the INT8 Q/DQ graph of ``dfe build --precision int8``.

    python -m benchmarks.int8_cpu MODEL_DIR [--batches 20 64] [--rounds 15] [--out FILE.json]

Both graphs run through the engine's ONNX Runtime backend on the same real face crops. Runs are
interleaved (fp32, int8, int8, fp32, ...) after warm-up, so a load change on a shared machine hits
both alike; the JSON has median and p25/p75 frames/s, frames per CPU-second, the load average
before and after, and the machine and library versions.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import machine_info, write_json


def _crops(count: int, models_dir: str | None) -> np.ndarray:
    from core.config import EngineConfig
    from engine.api import open_detector
    from engine.optimize.calibration import (
        FrameSelection,
        default_calibration_videos,
        video_crops,
    )

    videos = default_calibration_videos()
    det = open_detector(EngineConfig(backend="ort", models_dir=models_dir))
    per = -(-count // len(videos))
    crops = video_crops(videos, det, FrameSelection(0, 1, per), keep_faceless=True)
    return np.ascontiguousarray(np.concatenate([c.crops for c in crops])[:count])


def run(model_dir: Path, batches: list[int], rounds: int, models_dir: str | None) -> dict[str, Any]:
    from core.sidecar import load_sidecar
    from engine.backends import get_factory

    spec = load_sidecar(model_dir)
    runners = {
        p: get_factory("ort", precision=p)("classifier", spec.classifier_for(p), spec=spec)
        for p in ("fp32", "int8")
    }
    x = _crops(max(batches), models_dir)
    load_before = os.getloadavg()
    rows = []
    for b in batches:
        xb = np.ascontiguousarray(x[:b])
        for r in runners.values():  # warm-up
            for _ in range(2):
                r.infer({"frames": xb}, ["logits"])
        wall: dict[str, list[float]] = {p: [] for p in runners}
        cpu: dict[str, list[float]] = {p: [] for p in runners}
        for i in range(rounds):
            order = list(runners.items())
            for p, r in order if i % 2 == 0 else order[::-1]:
                t, c = time.perf_counter(), time.process_time()
                r.infer({"frames": xb}, ["logits"])
                wall[p].append(time.perf_counter() - t)
                cpu[p].append(time.process_time() - c)
        for p in runners:
            w = np.asarray(wall[p])
            rows.append(
                {
                    "precision": p,
                    "batch": b,
                    "runs": rounds,
                    "frames_per_s": {
                        "median": round(b / float(np.median(w)), 1),
                        "p25": round(b / float(np.percentile(w, 75)), 1),
                        "p75": round(b / float(np.percentile(w, 25)), 1),
                    },
                    "frames_per_cpu_s": round(b / float(np.median(cpu[p])), 1),
                }
            )
    return {
        "benchmark": "classifier fp32 vs int8 (ONNX Runtime CPU)",
        "model": str(model_dir),
        "int8": spec.graphs.classifier_int8.file,
        "ort_threads": os.environ.get("DFE_ORT_THREADS", "default"),
        "load_average_before": [round(v, 2) for v in load_before],
        "load_average_after": [round(v, 2) for v in os.getloadavg()],
        "machine": machine_info(),
        "rows": rows,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model_dir", type=Path)
    ap.add_argument("--batches", type=int, nargs="+", default=[20, 64])
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--models", default=None, help="detector models directory")
    ap.add_argument("--out", type=Path, default=Path("bench_out/int8_cpu.json"))
    args = ap.parse_args()
    result = run(args.model_dir, args.batches, args.rounds, args.models)
    write_json(args.out, result)
    for r in result["rows"]:
        f = r["frames_per_s"]
        print(
            f"{r['precision']:5s} batch {r['batch']:3d}: {f['median']:7.1f} frames/s "
            f"(p25 {f['p25']}, p75 {f['p75']}), {r['frames_per_cpu_s']} frames/CPU-s"
        )
    print(
        f"load average before {result['load_average_before']}, after "
        f"{result['load_average_after']} -> {args.out}"
    )


if __name__ == "__main__":
    main()
