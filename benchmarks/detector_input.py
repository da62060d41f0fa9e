"""Measurements behind preprocess.detector_input and preprocess.tracking (issue 14).

    python -m benchmarks.detector_input --videos ../shared/videos --models ../shared/models \\
        -o benchmarks/results/detector-input-2core-cpu.json [--runs 7] [--skip-sizes]

Three parts, one JSON:

* ``sizes``: detection rate of det_500m against the face's size at the network input
  (``sqrt(w * h)`` px): faces of three shared clips scaled small onto a grey 640x640 input, and
  square close-ups filling inputs of 96-640 px. The reliable band of the module comes from here.
* ``cost``: on each 1080p shared clip at N=20 (``first``), the default detection of the 20
  frames (batch 1, as the CPU engine runs it) and the probe (:func:`choose_detector_input` given
  those faces: its looks), in alternating runs; median / p25 / p75 and the probe's share of the
  detection. Also :func:`track_faces` on the same faces.
* ``tiles``: a 4K frame with a face on a tile border: one 1920x1088 input against 2x2 tiles of
  960x544 at the same scale (time, faces found, duplicates with an overlap).
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from benchmarks.common import machine_info, time_call, write_json

log = logging.getLogger(__name__)

CLIPS_1080P = (
    "dfdc_abofeumbvv_fake.mp4",
    "dfdc_abqwwspghj_fake.mp4",
    "dfdc_like_fake.mp4",
    "dfdc_like_real.mp4",
)


def _stats(samples: list[float]) -> dict[str, float]:
    p25, p50, p75 = np.percentile(samples, [25, 50, 75])
    return {"median": float(p50), "p25": float(p25), "p75": float(p75), "runs": len(samples)}


def _size(box: Any) -> float:
    return float(np.sqrt(max(box[2] - box[0], 0) * max(box[3] - box[1], 0)))


def measure_sizes(detector: Any, videos: Path) -> dict[str, Any]:
    """Detection rate against the face's size at the input (the module's reliable band)."""
    from preprocess.video import read_video

    small: dict[str, Any] = {}
    large: dict[str, Any] = {}
    for name in ("pair480p_real.mp4", "dfdc_like_real.mp4", "dfdc_abofeumbvv_fake.mp4"):
        frames = read_video(videos / name, 8, sampling="uniform").frames
        ref = detector.detect(frames)
        sizes = [_size(f[0].box) for f in ref if f]
        boxes = [f[0].box for f in ref if f]
        frames = [fr for fr, f in zip(frames, ref) if f]
        face = float(np.median(sizes))
        row = {}
        for target in (8, 10, 12, 14, 16, 18, 20, 24, 28, 32):
            s = target / face
            hits = 0
            for frame in frames:
                h, w = frame.shape[:2]
                nw, nh = max(1, round(w * s)), max(1, round(h * s))
                image = np.full((640, 640, 3), 128, np.uint8)
                part = cv2.resize(frame, (nw, nh), interpolation=cv2.INTER_AREA)[:600, :600]
                image[20 : 20 + part.shape[0], 20 : 20 + part.shape[1]] = part
                hits += bool(detector.detect_prepared([image], [1.0])[0])
            row[str(target)] = hits / len(frames)
        small[name] = {"face_px": face, "found_by_size_at_input": row}

        # square close-ups: the face box is `fraction` of the crop's height, the crop fills
        # the whole input (no padding), inputs of 96-640 px
        by_size: list[tuple[float, bool]] = []
        for fraction in (0.6, 0.75, 0.9, 1.0):
            for frame, box in zip(frames[:4], boxes[:4]):
                cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
                region = (box[3] - box[1]) / fraction
                for side in (96, 160, 224, 288, 352, 416, 480, 544, 608, 640):
                    scale = side / region
                    m = np.float32(
                        [
                            [scale, 0, -(cx - region / 2) * scale],
                            [0, scale, -(cy - region / 2) * scale],
                        ]
                    )
                    image = cv2.warpAffine(frame, m, (side, side), flags=cv2.INTER_AREA)
                    found = bool(detector.detect_prepared([image], [1.0])[0])
                    by_size.append((_size(box) * scale, found))
        bins = {}
        for lo in range(0, 520, 40):
            inside = [f for z, f in by_size if lo <= z < lo + 40]
            if inside:
                bins[f"{lo}-{lo + 40}"] = {"found": sum(inside) / len(inside), "n": len(inside)}
        large[name] = {"found_by_size_at_input": bins}
    return {"small_faces_on_grey_640": small, "close_ups_filling_the_input": large}


def measure_cost(detector: Any, videos: Path, runs: int, n: int = 20) -> dict[str, Any]:
    """Probe and tracker cost against the default detection at N frames (``first``)."""
    from preprocess.detector_input import choose_detector_input
    from preprocess.tracking import track_faces
    from preprocess.video import read_video

    out: dict[str, Any] = {}
    for name in CLIPS_1080P:
        clip = read_video(videos / name, n)
        frames = clip.frames
        faces = detector.detect(frames)  # warm-up, and the faces the probe reuses
        choice = choose_detector_input(detector, frames, faces, frame_indices=clip.indices)
        detect_s, probe_s = [], []
        for _ in range(runs):  # alternate, so drifting load hits both alike
            t = time.perf_counter()
            detector.detect(frames)
            detect_s.append(time.perf_counter() - t)
            t = time.perf_counter()
            choose_detector_input(detector, frames, faces, frame_indices=clip.indices)
            probe_s.append(time.perf_counter() - t)
        ratios = [p / d for p, d in zip(probe_s, detect_s)]
        pairs = list(zip(clip.indices, faces))
        track = time_call(lambda pairs=pairs: track_faces(pairs), runs=runs)
        out[name] = {
            "frames": len(frames),
            "frame_size": [frames[0].shape[1], frames[0].shape[0]],
            "choice": choice.to_record(),
            "detect_s": _stats(detect_s),
            "probe_s": _stats(probe_s),
            "probe_share_of_detect": _stats(ratios),
            "track_s": track.as_dict(),
        }
        log.info(
            "%s: detect %.1f ms, probe %.1f ms (%.1f%%), track %.2f ms",
            name,
            1e3 * np.median(detect_s),
            1e3 * np.median(probe_s),
            100 * np.median(ratios),
            1e3 * track.median,
        )
    return out


def measure_tiles(detector: Any, videos: Path, runs: int) -> dict[str, Any]:
    """One 1920x1088 input against 2x2 tiles at the same scale (0.5) on a 4K frame whose face
    straddles the vertical tile border; tiles with and without an overlap."""
    from preprocess.detector_input import merge_faces
    from preprocess.scrfd import Face, letterbox
    from preprocess.video import read_video

    frame = read_video(videos / "pair480p_real.mp4", 1).frames[0]
    small = cv2.resize(frame, (512, 288), interpolation=cv2.INTER_AREA)  # face ~73 px
    canvas = np.full((2160, 3840, 3), 128, np.uint8)
    # the man's face is near x=120 of the 512-px copy: put it on the border x=1920
    x0, y0 = 1920 - 120, 1000
    canvas[y0 : y0 + 288, x0 : x0 + 512] = small

    def whole() -> list[Any]:
        image, scale = letterbox(canvas, (1920, 1088))
        return detector.detect_prepared([image], [scale])[0]

    def tiles(overlap: int) -> tuple[list[Any], int]:
        per_tile = []
        for ty in (0, 1):
            for tx in (0, 1):
                xa, ya = max(tx * 1920 - overlap, 0), max(ty * 1080 - overlap, 0)
                xb, yb = min((tx + 1) * 1920 + overlap, 3840), min((ty + 1) * 1080 + overlap, 2160)
                tile = np.ascontiguousarray(canvas[ya:yb, xa:xb])
                target = (-(-(xb - xa) // 64) * 32, -(-(yb - ya) // 64) * 32)  # scale 0.5
                image, scale = letterbox(tile, target)
                found = detector.detect_prepared([image], [scale])[0]
                per_tile.append(
                    [
                        Face(
                            (f.box[0] + xa, f.box[1] + ya, f.box[2] + xa, f.box[3] + ya),
                            f.score,
                        )
                        for f in found
                    ]
                )
        raw = sum(len(t) for t in per_tile)
        return merge_faces(per_tile, detector.config.nms_threshold), raw

    result: dict[str, Any] = {
        "whole_1920x1088": {
            "time_s": time_call(whole, runs=runs).as_dict(),
            "faces": [[round(v, 1) for v in f.box] for f in whole()],
        }
    }
    for overlap in (0, 64):
        merged, raw = tiles(overlap)
        result[f"tiles_2x2_overlap_{overlap}"] = {
            "time_s": time_call(lambda overlap=overlap: tiles(overlap), runs=runs).as_dict(),
            "faces_before_nms": raw,
            "faces_after_nms": [[round(v, 1) for v in f.box] for f in merged],
        }
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--videos", type=Path, default=Path("../shared/videos"))
    parser.add_argument("--models", type=Path, default=Path("../shared/models"))
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--skip-sizes", action="store_true")
    parser.add_argument("-o", "--out", type=Path, required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    from preprocess.scrfd import SCRFDDetector

    detector = SCRFDDetector.from_file(args.models / "det_500m.onnx", batch_size=1)
    data: dict[str, Any] = {
        "machine": machine_info(),
        "note": "shared 2-core machine: other jobs ran at the same time; timings are noisy",
        "detector": "det_500m, batch 1, CPUExecutionProvider",
    }
    data["cost"] = measure_cost(detector, args.videos, args.runs)
    data["tiles"] = measure_tiles(detector, args.videos, args.runs)
    if not args.skip_sizes:
        data["sizes"] = measure_sizes(detector, args.videos)
    write_json(args.out, data)
    log.info("wrote %s", args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
