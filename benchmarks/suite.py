"""The benchmark suite behind ``dfe bench`` / ``make bench``.

Everything a claim of "faster" rests on is measured here side by side, in one run, on the same
machine and clips: the classifier per backend and precision over batch sizes, the detector
(batched SCRFD vs InsightFace's own single-image SCRFD vs dlib HOG, the original's detector) at
480p/720p/1080p, decoding (PyAV vs OpenCV), end to end against the original pipeline and a
straightforward SCRFD + eager pipeline, scaling, the whole-video timeline on 5- and 10-minute
1080p videos (:mod:`benchmarks.timeline_bench`), and live video (``dfe watch`` on 1080p30 and
720p30 streams served over TCP, :mod:`benchmarks.live_bench`). Results go to JSON with the
machine and library versions; :mod:`benchmarks.report` renders the Markdown table and PNG plots
from it.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import machine_info, peak_rss_mb, time_call, write_json
from core.errors import EngineError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SuiteConfig:
    model_dir: Path
    checkpoint: Path | None
    videos: list[Path]  # 1080p clips first
    videos_480p: list[Path]
    detector: Path
    out: Path
    quick: bool = True

    @property
    def runs(self) -> int:
        return 5 if self.quick else 11


def _crops(n: int) -> np.ndarray:
    from export.onnx_export import synthetic_crops
    from preprocess.crop import normalize

    return normalize(synthetic_crops(n, seed=5))


def bench_classifier(cfg: SuiteConfig) -> dict[str, Any]:
    """Frames/s of the whole model (CNN + LSTM step + linear) per backend/precision/batch."""
    from core.sidecar import load_sidecar
    from engine.backends import get_factory

    spec = load_sidecar(cfg.model_dir)
    batches = [1, 20, 64] if cfg.quick else [1, 8, 20, 32, 64, 100]
    rows = []
    candidates: list[tuple[str, str, Any]] = []
    try:
        ort = get_factory("ort")
        candidates.append(("ort", "fp32", ort("classifier", spec.classifier_file, spec=spec)))
        int8 = spec.directory / "classifier.int8.onnx"
        if int8.is_file():
            candidates.append(("ort", "int8", ort("classifier", int8, spec=spec)))
    except EngineError as exc:
        log.warning("ONNX Runtime unavailable: %s", exc)
    for name in ("tensorrt",):
        try:
            fac = get_factory(name, precision="fp16")
            candidates.append((name, "fp16", fac("classifier", spec.classifier_file, spec=spec)))
        except (EngineError, KeyError) as exc:
            rows.append({"backend": name, "skipped": str(exc)})
    torch_model = None
    if cfg.checkpoint is not None:
        try:
            import torch

            from network.checkpoint import build_model, load_checkpoint

            torch_model = build_model(load_checkpoint(cfg.checkpoint))
            torch.set_grad_enabled(False)
        except ImportError as exc:
            rows.append({"backend": "torch", "skipped": str(exc)})
    for b in batches:
        x = _crops(b)
        if torch_model is not None:
            import torch

            xt = torch.from_numpy(x).unsqueeze(0)
            t = time_call(lambda xt=xt: torch_model(xt), runs=cfg.runs)
            rows.append(
                {
                    "backend": "torch-eager",
                    "precision": "fp32",
                    "batch": b,
                    "frames_per_s": t.rate(b),
                    **t.as_dict(),
                }
            )
        for name, precision, runner in candidates:
            t = time_call(lambda x=x, r=runner: r.infer({"frames": x}, ["logits"]), runs=cfg.runs)
            rows.append(
                {
                    "backend": name,
                    "precision": precision,
                    "batch": b,
                    "frames_per_s": t.rate(b),
                    **t.as_dict(),
                }
            )
    return {"rows": rows}


def _frames_at(path: Path, n: int, size: tuple[int, int] | None) -> list[np.ndarray]:
    import cv2

    from preprocess.video import read_video

    frames = read_video(path, n).frames
    if size is not None:
        frames = [cv2.resize(f, size, interpolation=cv2.INTER_AREA) for f in frames]
    return frames


def bench_detector(cfg: SuiteConfig) -> dict[str, Any]:
    from preprocess.scrfd import SCRFDDetector

    n = 16 if cfg.quick else 32
    sets = {
        "480p": _frames_at(cfg.videos_480p[0], n, None) if cfg.videos_480p else [],
        "720p": _frames_at(cfg.videos[0], n, (1280, 720)),
        "1080p": _frames_at(cfg.videos[0], n, None),
    }
    rows = []
    dets = {b: SCRFDDetector.from_file(cfg.detector, batch_size=b) for b in (1, 4, 16)}
    try:
        from insightface.model_zoo.scrfd import SCRFD

        ins = SCRFD(model_file=str(cfg.detector))
        ins.prepare(-1, input_size=(640, 640), det_thresh=0.5)
    except ImportError as exc:
        ins = None
        rows.append({"detector": "insightface", "skipped": str(exc)})
    try:
        from benchmarks.baselines import hog_locations

        hog = hog_locations()
    except EngineError as exc:
        hog = None
        rows.append({"detector": "dlib-hog", "skipped": str(exc)})
    for res, frames in sets.items():
        if not frames:
            continue
        for b, det in dets.items():
            t = time_call(lambda d=det, f=frames: d.detect(f), runs=cfg.runs)
            rows.append(
                {
                    "detector": f"scrfd-batched(b={b})",
                    "resolution": res,
                    "frames_per_s": t.rate(len(frames)),
                    **t.as_dict(),
                }
            )
        if ins is not None:
            t = time_call(
                lambda f=frames: [ins.detect(x, input_size=(640, 640)) for x in f], runs=cfg.runs
            )
            rows.append(
                {
                    "detector": "insightface-single",
                    "resolution": res,
                    "frames_per_s": t.rate(len(frames)),
                    **t.as_dict(),
                }
            )
        if hog is not None:
            k = 2 if cfg.quick else 4
            t = time_call(
                lambda f=frames[:k]: [hog(x) for x in f], warmup=0, runs=2 if cfg.quick else 3
            )
            rows.append(
                {
                    "detector": "dlib-hog (original)",
                    "resolution": res,
                    "frames_per_s": t.rate(k),
                    **t.as_dict(),
                }
            )
    return {"frames_per_set": n, "rows": rows}


def bench_decode(cfg: SuiteConfig) -> dict[str, Any]:
    from preprocess.video import read_video

    rows = []
    path = cfg.videos[0]
    for backend in ("pyav", "opencv"):
        for sampling in ("first", "uniform"):
            t = time_call(
                lambda b=backend, s=sampling: read_video(path, 20, sampling=s, backend=b),
                runs=cfg.runs,
            )
            rows.append(
                {
                    "backend": backend,
                    "sampling": sampling,
                    "n": 20,
                    "video": path.name,
                    "frames_per_s": t.rate(20),
                    **t.as_dict(),
                }
            )
    return {"rows": rows}


def _engine(cfg: SuiteConfig, **options: Any):
    from engine.api import Engine

    return Engine.load(
        cfg.model_dir,
        backend="ort",
        models_dir=str(cfg.detector.parent),
        detector=str(cfg.detector),
        **options,
    )


def _score(engine, videos: list[Path], n: int) -> tuple[float, int]:
    t = time.perf_counter()
    frames = 0
    for p in engine.predict_many(videos, seq_len=n):
        if p.status != "ok":
            raise RuntimeError(f"benchmark video failed: {p.video}: {p.error}")
        frames += p.frames
    return time.perf_counter() - t, frames


def bench_end_to_end(cfg: SuiteConfig) -> dict[str, Any]:
    """Whole ``dfe predict`` processes against the straightforward and the original pipelines,
    as marginal rates (:mod:`benchmarks.throughput`), plus each stage of ours alone."""
    import argparse

    from benchmarks.throughput import measure

    args = argparse.Namespace(
        model=cfg.model_dir,
        checkpoint=cfg.checkpoint,
        detector=cfg.detector,
        models=str(cfg.detector.parent),
        clips=[str(v) for v in cfg.videos],
        seq_len=20,
        videos=24,
        base=4,
        original_videos=4 if cfg.quick else 6,
        original_base=2,
        rounds=2 if cfg.quick else 3,
        skip_original=False,
        ours_option=None,
        before=None,
    )
    result = measure(args)
    result["stages_alone"] = bench_stages_alone(cfg)
    return result


def bench_stages_alone(cfg: SuiteConfig, n: int = 20) -> dict[str, Any]:
    """Each stage of our pipeline alone on the same videos (the public stages of
    :class:`engine.pipeline.VideoPipeline`), to compare the pipelined throughput with its
    slowest stage. ``crop`` is what the detect stage of the pipeline does after the detector:
    face tracks, the face chosen per frame, the crops."""
    from engine.pipeline import VideoJob

    eng = _engine(cfg)
    pipeline = eng.pipeline_for(eng.spec_for(n))
    videos = cfg.videos
    jobs = [VideoJob(index=i, name=str(v), source=v) for i, v in enumerate(videos)]
    t = time.perf_counter()
    for job in jobs:
        pipeline.decode(job, n, "first")
    decode = time.perf_counter() - t
    pipeline.detector.detect(jobs[0].frames[:2])  # warm-up
    t = time.perf_counter()
    for job in jobs:
        pipeline.detect([job])
    detect = time.perf_counter() - t
    pipeline.track(jobs[0])  # warm-up: the first call imports SciPy's assignment (~0.25 s)
    t = time.perf_counter()
    for job in jobs:
        pipeline.track(job)  # without tracks every frame would fall back to the whole frame
        pipeline.select(job)
        pipeline.crop(job)
    crop = time.perf_counter() - t
    pipeline.classify(jobs[:1])  # warm-up
    t = time.perf_counter()
    pipeline.classify(jobs)
    classify = time.perf_counter() - t
    stages = {"decode": decode, "detect": detect, "crop": crop, "classify": classify}
    return {
        "videos": len(videos),
        "n": n,
        # frames cropped at a face, of the frames classified (what the stages' times are for)
        "face_frames": sum(q.found for job in jobs for q in job.sequences),
        "frames": sum(len(q.positions) for job in jobs for q in job.sequences),
        "seconds": stages,
        "videos_per_s": {k: len(videos) / v for k, v in stages.items()},
        "slowest": max(stages, key=stages.get),
        "sum_s": sum(stages.values()),
    }


def bench_scaling(cfg: SuiteConfig) -> dict[str, Any]:
    eng = _engine(cfg)
    rows = []
    for count in [1, 2, 4] if cfg.quick else [1, 2, 4, 8, 16]:
        vids = [cfg.videos[i % len(cfg.videos)] for i in range(count)]
        secs, frames = _score(eng, vids, 20)
        rows.append(
            {
                "axis": "videos",
                "value": count,
                "seconds": secs,
                "videos_per_s": count / secs,
                "rss_mb": peak_rss_mb(),
            }
        )
    for n in [10, 20, 40] if cfg.quick else [10, 20, 40, 60, 80, 100]:
        secs, frames = _score(eng, cfg.videos[:2], n)
        rows.append(
            {
                "axis": "seq_len",
                "value": n,
                "seconds": secs,
                "frames_per_s": frames / secs,
                "rss_mb": peak_rss_mb(),
            }
        )
    return {"rows": rows, "peak_rss_mb": peak_rss_mb()}


def bench_timeline(cfg: SuiteConfig) -> dict[str, Any]:
    """``dfe predict --timeline --timeline-fps 2`` on 5- and 10-minute 1080p videos built from
    the clips (:mod:`benchmarks.timeline_bench`): wall time, timeline frames per second, peak
    RSS, and how time and memory grow with the duration. About 4 minutes on 2 CPU cores with
    the demo ResNeXt50 (measured 70 s and 149 s), so the quick suite runs both durations, as
    ``--full`` does; building the videos is a stream copy (seconds) into a temporary directory,
    removed after."""
    from benchmarks.timeline_bench import FULL_DURATIONS, QUICK_DURATIONS, measure

    clips = [v for v in cfg.videos if "dfdc" in v.name] or cfg.videos
    return measure(
        cfg.model_dir,
        clips,
        durations=QUICK_DURATIONS if cfg.quick else FULL_DURATIONS,
        models_dir=str(cfg.detector.parent),
    )


def bench_live(cfg: SuiteConfig) -> dict[str, Any]:
    """``dfe watch`` on a 1080p30 and a 720p30 stream served live over TCP on loopback
    (:mod:`benchmarks.live_bench`): per resolution the ``--fps`` ladder up to the first rate that
    falls behind, with frames dropped, latency, RSS and CPU per run. Quick: ``--fps`` 4 and 8,
    15 s of stream each (about 1.5 minutes on 2 cores); ``--full``: 4, 8, 16, 30 (and one rate
    halfway to the first that fell behind), 60 s each, then 10 minutes at 720p at its highest
    rate that kept up (about 20 minutes)."""
    from benchmarks import live_bench as live

    clip = next((v for v in cfg.videos if v.name == "dfdc_like_real.mp4"), cfg.videos[0])
    return live.measure(
        cfg.model_dir,
        clip,
        models_dir=str(cfg.detector.parent),
        duration=live.QUICK_DURATION_S if cfg.quick else live.FULL_DURATION_S,
        ladder=live.QUICK_LADDER if cfg.quick else live.FULL_LADDER,
        refine=not cfg.quick,
        long=0.0 if cfg.quick else live.FULL_LONG_S,
    )


SECTIONS = {
    "classifier": bench_classifier,
    "detector": bench_detector,
    "decode": bench_decode,
    "end_to_end": bench_end_to_end,
    "scaling": bench_scaling,
    "timeline": bench_timeline,
    "live": bench_live,
}


def run_suite(cfg: SuiteConfig, sections: list[str] | None = None) -> dict[str, Any]:
    results: dict[str, Any] = {
        "suite": "quick" if cfg.quick else "full",
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": machine_info(),
        "model_dir": str(cfg.model_dir),
        "videos": [v.name for v in cfg.videos],
        "detector": cfg.detector.name,
        "env": {k: v for k, v in os.environ.items() if k.startswith(("DFE_", "OMP_", "MALLOC_"))},
        "sections": {},
    }
    for name in sections or list(SECTIONS):
        log.info("benchmark section %s", name)
        t = time.perf_counter()
        results["sections"][name] = SECTIONS[name](cfg)
        results["sections"][name]["section_seconds"] = time.perf_counter() - t
        write_json(cfg.out / "results.json", results)  # keep what is done if later ones fail
    results["targets"] = targets(results)
    write_json(cfg.out / "results.json", results)
    return results


def _rate(rows, **match) -> float | None:
    for r in rows:
        if all(r.get(k) == v for k, v in match.items()) and "frames_per_s" in r:
            fps = r["frames_per_s"]
            return fps["median"] if isinstance(fps, dict) else fps
    return None


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's targets as measured ratios (None where a side could not run)."""
    out = []
    sec = results["sections"]
    cls = sec.get("classifier", {}).get("rows", [])
    batch = 20
    eager = _rate(cls, backend="torch-eager", batch=batch)
    for label, kw, goal in (
        (
            "ONNX Runtime fp32 classifier vs eager PyTorch (batch 20)",
            {"backend": "ort", "precision": "fp32", "batch": batch},
            1.5,
        ),
        (
            "INT8 classifier vs eager PyTorch (batch 20)",
            {"backend": "ort", "precision": "int8", "batch": batch},
            2.5,
        ),
    ):
        ours = _rate(cls, **kw)
        ratio = ours / eager if ours and eager else None
        out.append(
            {
                "target": label,
                "goal": goal,
                "ratio": ratio,
                "met": ratio is not None and ratio >= goal,
            }
        )
    for t in sec.get("end_to_end", {}).get("targets", []):
        out.append({k: t[k] for k in ("target", "goal", "ratio", "met")})
    ours = next(
        (
            r["videos_per_s"]
            for r in sec.get("end_to_end", {}).get("rows", [])
            if r["pipeline"] == "ours-fp32"
        ),
        None,
    )
    alone = sec.get("end_to_end", {}).get("stages_alone")
    if alone and ours:
        slowest = min(alone["videos_per_s"].values())
        ratio = ours / slowest
        out.append(
            {
                "target": "pipelined end to end vs its slowest stage alone",
                "goal": 0.8,
                "ratio": ratio,
                "met": ratio >= 0.8,
                "slowest_stage": alone["slowest"],
            }
        )
    return out
