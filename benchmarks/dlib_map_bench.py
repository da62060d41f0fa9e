"""Benchmark of the dlib crop style: mean IoU with dlib mmod boxes on held-out faces (raw SCRFD
boxes vs mapped boxes) and the cost of the mapping per frame; with ``--model``, also
``dfe predict`` frames/s with ``--crop-style scrfd`` and ``dlib`` (alternating runs).

    python -m benchmarks.dlib_map_bench -o dlib_map.json [--model DIR --videos DIR]

Writes JSON with the machine, the library versions and median / p25 / p75 of repeated runs.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.fit_dlib_map import FIXTURE, arrays, evaluate, load_pairs

log = logging.getLogger(__name__)


def _stats(samples: list[float]) -> dict[str, float]:
    p25, p50, p75 = np.percentile(samples, [25, 50, 75])
    return {"median": float(p50), "p25": float(p25), "p75": float(p75), "runs": len(samples)}


def held_out_iou(fixture: Path = FIXTURE) -> dict[str, Any]:
    from preprocess.dlib_map import COEFFICIENTS
    from preprocess.dlib_map_coefficients import FIT

    held = set(FIT["held_out_groups"])
    pairs = [p for p in load_pairs(fixture) if p["group"] in held]
    return {"groups": sorted(held), **evaluate(COEFFICIENTS, pairs)}


def mapping_cost_us(repeats: int = 20, loops: int = 2000) -> dict[str, Any]:
    """Microseconds to map one frame's chosen face (what the engine does per frame), and per
    face when mapping many faces at once."""
    from preprocess.dlib_map import face_box, map_boxes
    from preprocess.scrfd import Face

    boxes, kps, _ = arrays(load_pairs())
    faces = [Face(box=tuple(b), score=0.9, kps=tuple(map(tuple, k))) for b, k in zip(boxes, kps)]
    for f in faces[:100]:  # warm-up
        face_box(f, "dlib")

    def per_call(fn: Any, n: int) -> list[float]:
        out = []
        for _ in range(repeats):
            t = time.perf_counter()
            for i in range(n):
                fn(i)
            out.append((time.perf_counter() - t) / n * 1e6)
        return out

    n = len(faces)
    dlib = per_call(lambda i: face_box(faces[i % n], "dlib"), loops)
    scrfd = per_call(lambda i: face_box(faces[i % n], "scrfd"), loops)
    batch = [v / n for v in per_call(lambda i: map_boxes(boxes, kps), max(1, loops // 100))]
    return {
        "per_frame_dlib_us": _stats(dlib),
        "per_frame_scrfd_us": _stats(scrfd),
        "per_face_vectorised_us": {**_stats(batch), "faces_per_call": n},
    }


def predict_fps(model: Path, videos: Path, models_dir: str, rounds: int, seq_len: int) -> dict:
    """``Engine.predict_many`` frames/s per crop style, rounds alternating between styles."""
    from engine.api import Engine

    paths = sorted(videos.glob("*.mp4"))
    engines = {
        s: Engine.load(model, backend="ort", models_dir=models_dir, crop_style=s)
        for s in ("scrfd", "dlib")
    }
    samples: dict[str, list[float]] = {s: [] for s in engines}
    for e in engines.values():  # warm-up: sessions, detector, caches
        list(e.predict_many(paths[:1], seq_len=seq_len))
    for _ in range(rounds):
        for style, e in engines.items():
            t = time.perf_counter()
            frames = sum(p.frames for p in e.predict_many(paths, seq_len=seq_len))
            samples[style].append(frames / (time.perf_counter() - t))
    out: dict[str, Any] = {s: _stats(v) for s, v in samples.items()}
    out["dlib_vs_scrfd"] = out["dlib"]["median"] / out["scrfd"]["median"]
    out.update(videos=len(paths), seq_len=seq_len, backend="ort")
    return out


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-o", "--out", type=Path, default=Path("dlib_map_bench.json"))
    parser.add_argument("--model", type=Path, help="exported model dir: also time dfe predict")
    parser.add_argument("--videos", type=Path, default=None)
    parser.add_argument("--models", default=None, help="detector models directory")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seq-len", type=int, default=20)
    args = parser.parse_args(argv)
    import numpy
    import onnxruntime

    result: dict[str, Any] = {
        "benchmark": "dlib_map",
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(),
        },
        "versions": {"python": platform.python_version(), "numpy": numpy.__version__},
        "held_out_iou": held_out_iou(),
        "mapping_cost": mapping_cost_us(),
    }
    if args.model:
        shared = Path(os.environ.get("DFE_SHARED", Path(__file__).resolve().parents[2] / "shared"))
        videos = args.videos or shared / "videos"
        models = args.models or str(shared / "models")
        result["versions"]["onnxruntime"] = onnxruntime.__version__
        result["predict_frames_per_s"] = predict_fps(
            args.model, videos, models, args.rounds, args.seq_len
        )
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    log.info(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
