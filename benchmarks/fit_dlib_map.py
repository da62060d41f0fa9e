"""Refit the SCRFD -> dlib-mmod box map (:mod:`preprocess.dlib_map`) against dlib itself.

Two steps, each a subcommand:

``collect`` (needs the ``dlib`` extra; slow: mmod costs seconds per face on a CPU) runs SCRFD on
frames of the test videos and on the face photographs shipped in the insightface wheel, runs
dlib's CNN (mmod) detector the way the original's training preprocessing did
(``face_recognition.batch_face_locations``: ``number_of_times_to_upsample=1``, on the BGR frame as
OpenCV decoded it, never converted to RGB), pairs each mmod box with its SCRFD face and writes the
pairs as numbers only to ``tests/fixtures/dlib_mmod_pairs.json``.

For speed, mmod runs on a square region around each SCRFD face (about 2.4 face heights wide),
scaled so the face is at most ``--face-px`` pixels tall; boxes are mapped back to frame pixels.
mmod's boxes are fixed windows on an image pyramid and a coarse feature grid, so they move with
the face's alignment: on ``t1.jpg`` region and whole-image boxes of the same faces agree at IoU
0.70-0.92 (``--check-photo t1.jpg``). ``collect --repeat`` (``--face-px 100 --shift 0.15``)
adds a second mmod box per face from a moved, rescaled region (``mmod_repeat``): how well mmod
agrees with itself, the ceiling any map can be judged against.

``fit`` (numpy only) fits the map's coefficients by least squares on every mmod box of the
training groups and writes ``preprocess/dlib_map_coefficients.py`` with the IoU figures on
training and held-out groups (``--cross-validate`` adds leave-one-group-out figures).

    python -m benchmarks.fit_dlib_map collect --frames 30
    python -m benchmarks.fit_dlib_map collect --repeat --face-px 100 --shift 0.15
    python -m benchmarks.fit_dlib_map fit --cross-validate
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[1]
FIXTURE = REPO / "tests" / "fixtures" / "dlib_mmod_pairs.json"
PHOTOS = ("t1.jpg", "Tom_Hanks_54745.png")
UPSAMPLE = 1  # face_recognition.batch_face_locations' default, used by the original
REGION = 2.4  # side of the region given to mmod, in SCRFD face heights

_DETECTOR: Any = None


def _mmod() -> Any:
    global _DETECTOR
    if _DETECTOR is None:
        import warnings

        import dlib

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # face_recognition_models imports pkg_resources
            import face_recognition_models

        _DETECTOR = dlib.cnn_face_detection_model_v1(
            face_recognition_models.cnn_face_detector_model_location()
        )
    return _DETECTOR


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def mmod_boxes(image: np.ndarray) -> list[tuple[list[float], float]]:
    """dlib mmod boxes ``[left, top, right, bottom]`` (as face_recognition reports them, before
    its trimming to the image) and confidences of one image, passed to dlib as it is."""
    rects = _mmod()(np.ascontiguousarray(image), UPSAMPLE)
    return [
        ([r.rect.left(), r.rect.top(), r.rect.right(), r.rect.bottom()], float(r.confidence))
        for r in rects
    ]


def mmod_near(
    frame: np.ndarray, box: np.ndarray, face_px: float, shift: float = 0.0
) -> tuple[list[tuple[list[float], float]], float]:
    """mmod on a square region around an SCRFD ``box`` (its centre moved by ``shift`` box
    sizes), scaled so the face is at most ``face_px`` tall; boxes in frame pixels, and the
    scale used."""
    import cv2

    h, w = frame.shape[:2]
    bw, bh = box[2] - box[0], box[3] - box[1]
    side = REGION * max(bw, bh)
    cx, cy = (box[0] + box[2]) / 2 + shift * bw, (box[1] + box[3]) / 2 + shift * bh
    x0, y0 = max(0, int(cx - side / 2)), max(0, int(cy - side / 2))
    x1, y1 = min(w, int(cx + side / 2)), min(h, int(cy + side / 2))
    region = frame[y0:y1, x0:x1]
    scale = min(1.0, face_px / bh)
    if scale < 1.0:
        size = (max(1, round(region.shape[1] * scale)), max(1, round(region.shape[0] * scale)))
        region = cv2.resize(region, size, interpolation=cv2.INTER_AREA)
        sx, sy = (x1 - x0) / size[0], (y1 - y0) / size[1]
    else:
        sx = sy = 1.0
    out = [
        ([x0 + b[0] * sx, y0 + b[1] * sy, x0 + b[2] * sx, y0 + b[3] * sy], c)
        for b, c in mmod_boxes(region)
    ]
    return out, scale


def _pair(task: tuple[str, str, np.ndarray, list[dict[str, Any]], float]) -> list[dict[str, Any]]:
    """mmod for every SCRFD face of one image; the SCRFD faces that mmod also found."""
    image_id, group, frame, faces, face_px = task
    h, w = frame.shape[:2]
    out = []
    for face in faces:
        box = np.asarray(face["box"], dtype=np.float64)
        found, scale = mmod_near(frame, box, face_px)
        best = max(found, key=lambda m: _iou(np.asarray(m[0]), box), default=None)
        if best is None:
            continue
        mbox = np.asarray(best[0])
        cx, cy = (mbox[0] + mbox[2]) / 2, (mbox[1] + mbox[3]) / 2
        inside = box[0] <= cx <= box[2] and box[1] <= cy <= box[3]
        if _iou(mbox, box) < 0.3 or not inside:
            continue
        out.append(
            {
                "image": image_id,
                "group": group,
                "frame_wh": [w, h],
                "box": [round(float(v), 3) for v in box],
                "kps": face["kps"],
                "score": face["score"],
                "mmod": [round(float(v), 3) for v in mbox],
                "mmod_confidence": round(best[1], 4),
                "mmod_scale": round(scale, 4),
            }
        )
    return out


def _repeat(task: tuple[np.ndarray, list[dict[str, Any]], float, float]) -> list[Any]:
    """A second mmod box for each pair of one image, with another region and scale."""
    frame, pairs, face_px, shift = task
    out = []
    for p in pairs:
        box = np.asarray(p["box"], dtype=np.float64)
        found, scale = mmod_near(frame, box, face_px, shift)
        best = max(found, key=lambda m: _iou(np.asarray(m[0]), box), default=None)
        ok = best is not None and _iou(np.asarray(best[0]), box) >= 0.3
        out.append(
            {"mmod": [round(float(v), 3) for v in best[0]], "scale": round(scale, 4)}
            if ok
            else None
        )
    return out


def repeat(args: argparse.Namespace) -> None:
    """Add a second mmod box to each pair of the fixture (``mmod_repeat``), from a region
    moved by ``--shift`` and scaled to ``--face-px``: how well mmod agrees with itself."""
    import cv2

    from preprocess.video import read_video

    doc = json.loads(FIXTURE.read_text())
    by_image: dict[str, list[dict[str, Any]]] = {}
    for p in doc["pairs"]:
        by_image.setdefault(p["image"], []).append(p)
    tasks, keys = [], []
    for path in sorted(Path(args.videos).glob("*.mp4")):
        clip = read_video(path, doc["frames_per_video"], sampling="uniform")
        for idx, frame in zip(clip.indices, clip.frames):
            key = f"{path.name}#{idx}"
            if key in by_image:
                tasks.append((frame, by_image[key], args.face_px, args.shift))
                keys.append(key)
    for name in PHOTOS:
        if name in by_image:
            image = cv2.imread(str(_photos_dir() / name))
            tasks.append((image, by_image[name], args.face_px, args.shift))
            keys.append(name)
    t = time.perf_counter()
    with ProcessPoolExecutor(args.workers) as pool:
        for key, found in zip(keys, pool.map(_repeat, tasks)):
            for p, r in zip(by_image[key], found):
                p["mmod_repeat"] = r
    log.info("mmod repeat: %d images in %.0f s", len(tasks), time.perf_counter() - t)
    doc["mmod"]["repeat"] = {"face_px": args.face_px, "shift": args.shift}
    FIXTURE.write_text(json.dumps(doc, separators=(",", ":")) + "\n")


def _faces(detector: Any, frames: list[np.ndarray]) -> list[list[dict[str, Any]]]:
    return [
        [
            {
                "box": [float(v) for v in f.box],
                "score": round(float(f.score), 5),
                "kps": [[round(float(x), 3), round(float(y), 3)] for x, y in f.kps],
            }
            for f in faces
            if f.kps is not None
        ]
        for faces in detector.detect(frames)
    ]


def _photos_dir() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("insightface")
    if spec is None or spec.origin is None:
        raise SystemExit("insightface is not installed (the dev extra); its photos are needed")
    return Path(spec.origin).parent / "data" / "images"


def collect(args: argparse.Namespace) -> None:
    import cv2

    from preprocess.scrfd import SCRFDDetector
    from preprocess.video import read_video
    from weights import find_model

    detector = SCRFDDetector(
        find_model(args.detector, models_dir=args.models, download=False), batch_size=4
    )
    tasks = []
    for path in sorted(Path(args.videos).glob("*.mp4")):
        clip = read_video(path, args.frames, sampling="uniform")
        for idx, frame, faces in zip(clip.indices, clip.frames, _faces(detector, clip.frames)):
            tasks.append((f"{path.name}#{idx}", path.name, frame, faces, args.face_px))
    for name in PHOTOS:
        image = cv2.imread(str(_photos_dir() / name))
        tasks.append((name, name, image, _faces(detector, [image])[0], args.face_px))
    log.info("%d images, %d SCRFD faces", len(tasks), sum(len(t[3]) for t in tasks))
    t = time.perf_counter()
    with ProcessPoolExecutor(args.workers) as pool:
        pairs = [p for ps in pool.map(_pair, tasks) for p in ps]
    log.info("mmod: %d pairs in %.0f s", len(pairs), time.perf_counter() - t)
    FIXTURE.parent.mkdir(parents=True, exist_ok=True)
    doc = {
        "about": (
            "SCRFD faces paired with dlib mmod boxes (numbers only). Made by "
            "benchmarks/fit_dlib_map.py collect."
        ),
        "detector": Path(args.detector).name,
        "detector_input": 640,
        "mmod": {
            "upsample": UPSAMPLE,
            "channels": "BGR passed as is (as the original's training preprocessing)",
            "region_face_heights": REGION,
            "face_px": args.face_px,
            "box": "left, top, right, bottom as dlib reports them, in frame pixels",
        },
        "frames_per_video": args.frames,
        "pairs": pairs,
    }
    FIXTURE.write_text(json.dumps(doc, separators=(",", ":")) + "\n")
    log.info("wrote %s", FIXTURE)


def check_photo(args: argparse.Namespace) -> None:
    """Compare mmod on the whole photo with mmod on regions (the speed-up used by collect)."""
    import cv2

    image = cv2.imread(str(_photos_dir() / args.check_photo))
    t = time.perf_counter()
    full = mmod_boxes(image)
    log.info("whole image: %d faces in %.1f s", len(full), time.perf_counter() - t)
    for b, _ in full:
        fb = np.asarray(b, dtype=np.float64)
        for face_px in (1e9, args.face_px, 60):
            near, scale = mmod_near(image, fb, face_px)
            best = max(near, key=lambda m: _iou(np.asarray(m[0]), fb), default=None)
            iou = _iou(np.asarray(best[0]), fb) if best else 0.0
            log.info("box %s face_px %s scale %.2f: IoU %.3f", b, face_px, scale, iou)


# --------------------------------------------------------------------------------------------
# fit


def load_pairs(path: Path = FIXTURE) -> list[dict[str, Any]]:
    return json.loads(path.read_text())["pairs"]


def iou_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of matching rows of two (N, 4) box arrays."""
    ix = np.clip(np.minimum(a[:, 2], b[:, 2]) - np.maximum(a[:, 0], b[:, 0]), 0, None)
    iy = np.clip(np.minimum(a[:, 3], b[:, 3]) - np.maximum(a[:, 1], b[:, 1]), 0, None)
    inter = ix * iy
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / (area_a + area_b - inter)


def arrays(
    pairs: list[dict[str, Any]], *, repeats: bool = False
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """SCRFD boxes (N, 4), keypoints (N, 5, 2) and mmod boxes (N, 4) of fixture pairs; with
    ``repeats``, one row per mmod box (the first, then the ``mmod_repeat`` ones)."""
    rows = [(p["box"], p["kps"], p["mmod"]) for p in pairs]
    if repeats:
        rows += [(p["box"], p["kps"], p["mmod_repeat"]["mmod"]) for p in pairs if _rep(p)]
    boxes = np.array([r[0] for r in rows], dtype=np.float64).reshape(-1, 4)
    kps = np.array([r[1] for r in rows], dtype=np.float64).reshape(-1, 5, 2)
    mmod = np.array([r[2] for r in rows], dtype=np.float64).reshape(-1, 4)
    return boxes, kps, mmod


def _rep(pair: dict[str, Any]) -> bool:
    return bool(pair.get("mmod_repeat"))


def evaluate(coef: dict[str, Any], pairs: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean IoU with every mmod box of ``pairs`` (both runs where there are two): raw SCRFD
    boxes, mapped boxes, mapped boxes without keypoints (the fallback); and, as the ceiling's
    measure, how well mmod agrees with itself (its two runs on the same face, with the region
    moved and scaled) and the mapped boxes' IoU with the mean of the two runs."""
    from preprocess.dlib_map import map_boxes

    boxes, kps, mmod = arrays(pairs, repeats=True)
    raw = iou_rows(boxes, mmod)
    mapped = iou_rows(map_boxes(boxes, kps, coefficients=coef), mmod)
    fallback = iou_rows(map_boxes(boxes, None, coefficients=coef), mmod)
    out: dict[str, Any] = {
        "faces": len(pairs),
        "mmod_boxes": len(mmod),
        "mean_iou_raw": round(float(raw.mean()), 4),
        "mean_iou_mapped": round(float(mapped.mean()), 4),
        "min_iou_mapped": round(float(mapped.min()), 4),
        "mean_iou_box_only": round(float(fallback.mean()), 4),
    }
    twice = [p for p in pairs if _rep(p)]
    if twice:
        b, k, first = arrays(twice)
        second = np.array([p["mmod_repeat"]["mmod"] for p in twice], dtype=np.float64)
        mean = (first + second) / 2
        out["mmod_self_iou"] = round(float(iou_rows(first, second).mean()), 4)
        out["mean_iou_raw_vs_mmod_mean"] = round(float(iou_rows(b, mean).mean()), 4)
        mapped_mean = iou_rows(map_boxes(b, k, coefficients=coef), mean)
        out["mean_iou_mapped_vs_mmod_mean"] = round(float(mapped_mean.mean()), 4)
    return out


def _lstsq(x: list[np.ndarray], y: np.ndarray) -> np.ndarray:
    return np.linalg.lstsq(np.stack(x, axis=1), y, rcond=None)[0]


def fit_coefficients(pairs: list[dict[str, Any]], *, refine: bool = False) -> dict[str, Any]:
    """Least squares for side and centre on every mmod box of ``pairs``; with ``refine``, then
    a Nelder-Mead search (scipy) that maximises the mean IoU on them. Refining fitted the
    training faces better but held-out groups worse (leave-one-group-out), so it is off."""
    from preprocess.dlib_map import BOX_TERMS, KPS_TERMS, map_boxes

    boxes, kps, mmod = arrays(pairs, repeats=True)
    bw, bh = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    bx, by = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
    side = ((mmod[:, 2] - mmod[:, 0]) + (mmod[:, 3] - mmod[:, 1])) / 2
    mx, my = (mmod[:, 0] + mmod[:, 2]) / 2, (mmod[:, 1] + mmod[:, 3]) / 2
    eye, mouth = (kps[:, 0] + kps[:, 1]) / 2, (kps[:, 3] + kps[:, 4]) / 2
    k = kps.mean(axis=1)
    d_em = np.linalg.norm(mouth - eye, axis=1)

    a = _lstsq([d_em, bw], side)
    s_hat = np.stack([d_em, bw], axis=1) @ a
    c = _lstsq([bx - k[:, 0], s_hat], mx - k[:, 0])
    d = _lstsq([by - k[:, 1], s_hat], my - k[:, 1])
    f_side = _lstsq([bw, bh], side)
    f_x = float(np.mean((mx - bx) / bw))
    f_y = float(np.mean((my - by) / bh))
    coef: dict[str, Any] = {
        "kps": dict(zip(KPS_TERMS, map(float, [*a, *c, *d]))),
        "box": dict(zip(BOX_TERMS, map(float, [*f_side, f_x, f_y]))),
    }
    if refine:
        from scipy.optimize import minimize

        def loss(v: np.ndarray, part: str, terms: tuple[str, ...]) -> float:
            trial = {**coef, part: dict(zip(terms, map(float, v)))}
            pts = kps if part == "kps" else None
            return -float(iou_rows(map_boxes(boxes, pts, coefficients=trial), mmod).mean())

        for part, terms in (("kps", KPS_TERMS), ("box", BOX_TERMS)):
            x0 = np.array([coef[part][t] for t in terms])
            res = minimize(
                loss,
                x0,
                args=(part, terms),
                method="Nelder-Mead",
                options={"maxiter": 4000, "xatol": 1e-5, "fatol": 1e-7},
            )
            if res.fun < loss(x0, part, terms):
                coef[part] = dict(zip(terms, map(float, res.x)))
    return {part: {t: round(v, 5) for t, v in terms.items()} for part, terms in coef.items()}


COEFFICIENTS_MODULE = REPO / "preprocess" / "dlib_map_coefficients.py"


def fit(args: argparse.Namespace) -> None:
    pairs = load_pairs()
    held = set(args.held_out)
    train = [p for p in pairs if p["group"] not in held]
    test = [p for p in pairs if p["group"] in held]
    if not train or not test:
        raise SystemExit(f"need faces in and out of the held-out groups {sorted(held)}")
    coef = fit_coefficients(train, refine=args.refine)
    report = {
        "train_groups": sorted({p["group"] for p in train}),
        "held_out_groups": sorted({p["group"] for p in test}),
        "train": evaluate(coef, train),
        "held_out": evaluate(coef, test),
    }
    log.info("train: %s", report["train"])
    log.info("held out: %s", report["held_out"])
    if args.cross_validate:
        cv = {}
        for g in sorted({p["group"] for p in pairs}):
            c = fit_coefficients([p for p in pairs if p["group"] != g], refine=args.refine)
            cv[g] = evaluate(c, [p for p in pairs if p["group"] == g])
            log.info("leave out %s: %s", g, cv[g])
        report["leave_one_group_out_mean_iou"] = {
            g: {k: r[k] for k in ("faces", "mean_iou_raw", "mean_iou_mapped")}
            for g, r in cv.items()
        }
    COEFFICIENTS_MODULE.write_text(
        '"""Coefficients of :mod:`preprocess.dlib_map` and the figures of their fit.\n\n'
        "Generated by ``python -m benchmarks.fit_dlib_map fit`` from\n"
        '``tests/fixtures/dlib_mmod_pairs.json``; do not edit."""\n\n'
        f"COEFFICIENTS = {json.dumps(coef, indent=4)}\n\n"
        f"FIT = {json.dumps(report, indent=4)}\n"
    )
    log.info("wrote %s", COEFFICIENTS_MODULE)


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("collect", help="run SCRFD and dlib mmod, write the pairs fixture")
    shared = Path(os.environ.get("DFE_SHARED", REPO.parent / "shared"))
    c.add_argument("--videos", default=str(shared / "videos"))
    c.add_argument("--models", default=str(shared / "models"))
    c.add_argument("--detector", default="det_500m")
    c.add_argument("--frames", type=int, default=12, help="frames per video, spread uniformly")
    c.add_argument("--face-px", type=float, default=120.0)
    c.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    c.add_argument("--check-photo", help="only compare whole-image and region mmod on a photo")
    c.add_argument("--repeat", action="store_true", help="add a second mmod box to each pair")
    c.add_argument("--shift", type=float, default=0.15, help="region shift for --repeat")
    f = sub.add_parser("fit", help="fit the map on the pairs fixture")
    f.add_argument("--cross-validate", action="store_true", help="also leave each group out")
    f.add_argument("--refine", action="store_true", help="IoU search after least squares")
    f.add_argument(
        "--held-out",
        nargs="+",
        default=["pair480p_fake.mp4", "pair480p_real.mp4", "t1.jpg"],
        help="groups (video file or photo names) kept out of the fit",
    )
    args = parser.parse_args(argv)
    if args.cmd == "collect":
        (check_photo if args.check_photo else repeat if args.repeat else collect)(args)
    else:
        fit(args)


if __name__ == "__main__":
    main()
