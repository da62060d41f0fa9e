"""``dfe detect VIDEO``: per-frame face boxes, scores and keypoints as JSON."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from core.config import CROP_STYLES, EngineConfig
from engine.options import (
    EXIT_OK,
    add_detector_options,
    add_options,
    add_sequence_options,
    detector_config,
)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("detect", help="per-frame face boxes, scores and keypoints as JSON")
    p.add_argument("video", type=Path)
    p.add_argument("--frames", type=int, default=20, help="frames to read (default 20)")
    add_sequence_options(p, exclude=("seq_len",))
    p.add_argument(
        "--json", type=Path, default=None, metavar="OUT", help="output file (default, or -: stdout)"
    )
    p.add_argument(
        "--crop-style",
        choices=CROP_STYLES,
        default="scrfd",
        help="the crop style of each face's crop_box, the integer pixels that would be cropped "
        "(default: scrfd; dlib: SCRFD mapped to the box dlib's mmod draws)",
    )
    p.add_argument(
        "--margin",
        type=float,
        default=0.0,
        help="the margin of each face's crop_box, a fraction of the box on each side, as dfe "
        "predict --margin (default: 0)",
    )
    add_detector_options(p)
    add_options(p.add_argument_group("detector"), EngineConfig, only=("size_probe",))
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from engine.api import open_detector
    from preprocess.face_clips import detect_video
    from preprocess.faces import FacePolicy
    from preprocess.sampling import check_count

    check_count(args.frames, name="--frames", what="frames to read")
    config = detector_config(args)
    result = detect_video(
        args.video,
        open_detector(config),
        frames=args.frames,
        sampling=args.sampling,
        policy=FacePolicy(crop_style=args.crop_style, margin=args.margin),
        detector_name=config.detector,
        size_probe=args.size_probe,
    )
    text = json.dumps(result, indent=2)
    if args.json is None or str(args.json) == "-":
        print(text)
    else:
        args.json.write_text(text + "\n")
        faces = sum(bool(f["faces"]) for f in result["frames"])
        print(
            f"{args.video}: {len(result['frames'])} frames, {faces} with a face -> {args.json}",
            file=sys.stderr,
        )
    return EXIT_OK
