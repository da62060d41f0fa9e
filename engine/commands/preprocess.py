"""``dfe preprocess VIDEOS -o OUT``: face-only 112x112 clips, as the original's training
preprocessing made them."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from engine.core.config import CLIP_NO_FACE_RULES, CROP_STYLES
from engine.options import (
    EXIT_OK,
    EXIT_PARTIAL,
    add_detector_options,
    add_sequence_options,
    detector_config,
    format_error,
)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "preprocess",
        help="write face-only 112x112 clips, as the original's training preprocessing",
        description="For each video, write OUT/<name>.mp4: 112x112 tight face crops, MJPEG at "
        "30 fps, like the original's training data (it kept the first 150 frames).",
    )
    p.add_argument("videos", nargs="+", help="video files, directories or globs")
    p.add_argument("-o", "--out", type=Path, required=True, help="output directory")
    p.add_argument("--frames", type=int, default=150, help="frames per video (default 150)")
    add_sequence_options(p, exclude=("seq_len",))
    p.add_argument(
        "--no-face",
        choices=CLIP_NO_FACE_RULES,
        default="previous",
        help="frame without a face: reuse the previous box (the original, default), "
        "skip the frame, or keep the whole frame",
    )
    p.add_argument("--margin", type=float, default=0.0, help="crop margin (fraction of the box)")
    p.add_argument("--crop-style", choices=CROP_STYLES, default="scrfd", help="face box to crop")
    p.add_argument("--overwrite", action="store_true", help="redo clips that already exist")
    add_detector_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from engine.api import open_detector
    from engine.batch import expand_inputs
    from engine.core.errors import EngineError
    from preprocess.faces import clip_policy, write_face_clip
    from preprocess.sampling import check_count

    check_count(args.frames, name="--frames", what="frames per video")
    policy = clip_policy(args.no_face, crop_style=args.crop_style, margin=args.margin)
    detector = open_detector(detector_config(args))
    failed = 0
    for video in expand_inputs(args.videos):
        out = args.out / (Path(video).stem + ".mp4")
        if out.exists() and not args.overwrite:
            print(f"{video}: {out} exists, skipped (--overwrite to redo)", file=sys.stderr)
            continue
        try:
            rep = write_face_clip(
                video, out, detector, frames=args.frames, sampling=args.sampling, policy=policy
            )
        except EngineError as exc:
            failed += 1
            print(format_error(exc), file=sys.stderr)
            continue
        print(
            f"{video}: {rep.frames_written}/{rep.frames_read} frames -> {out} "
            f"({rep.faces} faces, {rep.reused_box} reused boxes, {rep.skipped} skipped, "
            f"{rep.crop_style} crops)"
        )
    return EXIT_PARTIAL if failed else EXIT_OK
