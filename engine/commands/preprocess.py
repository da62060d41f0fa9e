"""``dfe preprocess VIDEOS -o OUT``: face-only 112x112 clips, as the original's training
preprocessing made them, with the crops of the one face chain
(:func:`preprocess.face_clips.write_face_clip`): by default the main person, as ``dfe predict``
scores and ``dfe train`` crops a video."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from core.config import CLIP_NO_FACE_RULES, CROP_STYLES, EngineConfig
from engine.options import (
    EXIT_OK,
    EXIT_PARTIAL,
    add_detector_options,
    add_options,
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
    p.add_argument(
        "--faces",
        choices=("main", "per-frame"),
        default="main",
        help="whose face: main (the person present in most frames, followed as a face track, "
        "as dfe predict scores and dfe train crops; default) or per-frame (the highest-scoring "
        "face of each frame, as the original)",
    )
    p.add_argument("--overwrite", action="store_true", help="redo clips that already exist")
    add_detector_options(p)
    add_options(p.add_argument_group("detector"), EngineConfig, only=("size_probe",))
    p.set_defaults(func=run)


def clip_paths(videos: list[str], out: Path) -> list[Path]:
    """``OUT/<name>.mp4`` for each video; when two videos share a name (FaceForensics++ keeps
    ``Deepfakes/000_003.mp4`` and ``Face2Face/000_003.mp4``), every clip keeps its path below
    the videos' common folder instead (``OUT/Deepfakes/000_003.mp4``), so none is lost."""
    stems = [Path(v).stem for v in videos]
    if len(set(stems)) == len(stems):
        return [out / f"{s}.mp4" for s in stems]
    common = Path(os.path.commonpath([str(Path(v).parent) for v in videos]))
    return [out / Path(v).relative_to(common).with_suffix(".mp4") for v in videos]


def run(args: argparse.Namespace) -> int:
    from core.errors import EngineError
    from engine.api import open_detector
    from engine.batch import expand_inputs
    from preprocess.face_clips import write_face_clip
    from preprocess.faces import clip_policy
    from preprocess.sampling import check_count

    check_count(args.frames, name="--frames", what="frames per video")
    policy = clip_policy(args.no_face, crop_style=args.crop_style, margin=args.margin)
    detector = open_detector(detector_config(args))
    failed = 0
    videos = list(dict.fromkeys(os.path.abspath(v) for v in expand_inputs(args.videos)))
    for video, out in zip(videos, clip_paths(videos, args.out)):
        if out.exists() and not args.overwrite:
            print(f"{video}: {out} exists, skipped (--overwrite to redo)", file=sys.stderr)
            continue
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            rep = write_face_clip(
                video, out, detector, frames=args.frames, sampling=args.sampling, policy=policy,
                faces=args.faces, size_probe=args.size_probe,
            )  # fmt: skip
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
