"""The ``dfe`` command line. Each subcommand imports what it needs when it runs."""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys
import textwrap
from collections.abc import Callable, Sequence
from pathlib import Path

from engine.errors import EngineError

log = logging.getLogger("dfe")

EXIT_OK = 0
EXIT_ERROR = 2  # a user-facing error: bad input, missing file or dependency
EXIT_PARTIAL = 3  # a batch job finished, but some inputs failed (recorded)


def _add_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="export a training checkpoint to ONNX (+ JSON sidecar), with parity checked",
        description="Export a ResNeXt50+LSTM training checkpoint (.pt state_dict) to "
        "OUTDIR/classifier.onnx and OUTDIR/classifier.json, and prove ONNX Runtime matches "
        "the PyTorch model on sequence lengths 1, 20, 60 and 100.",
    )
    p.add_argument("checkpoint", type=Path)
    p.add_argument("-o", "--out", type=Path, required=True, help="output directory")
    p.add_argument(
        "--reduce",
        choices=("mean", "last"),
        default="mean",
        help="per-video reduction: mean over frames (the original's model code, "
        "default) or the last frame (the original web app)",
    )
    p.add_argument(
        "--variant",
        choices=("original", "sequence"),
        default=None,
        help="architecture; default: detected from the keys (no LSTM bias -> "
        "original, LSTM bias -> sequence, i.e. batch_first=True retrained model)",
    )
    p.add_argument(
        "--seq-len",
        type=int,
        default=None,
        help="sequence length the checkpoint was trained for (default: parsed from "
        "a model_<acc>_acc_<N>_frames_<data>.pt name)",
    )
    p.set_defaults(func=_cmd_export)


def _print_export(result) -> None:
    par = result.parity
    print(f"exported to {result.directory}")
    print(f"  graph:   {result.classifier}")
    if result.head:
        print(f"  head:    {result.head}")
    print(f"  sidecar: {result.sidecar}")
    print(f"  parity vs PyTorch (seq lens {par['seq_lens']} in one batch):")
    for mode, m in par["modes"].items():
        print(
            f"    reduce={mode:4s} max |prob diff| {m['max_abs_prob_diff']:.2e}  "
            f"labels equal: {m['labels_equal']}"
        )
    print(f"  tolerance {par['tolerance_prob']:g}: {'PASSED' if par['passed'] else 'FAILED'}")


def _cmd_export(args: argparse.Namespace) -> int:
    from export.onnx_export import export_checkpoint

    result = export_checkpoint(
        args.checkpoint, args.out, reduce=args.reduce, variant=args.variant, seq_len=args.seq_len
    )
    _print_export(result)
    return EXIT_OK


def _add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="make the untrained demo checkpoint, export it and show the sidecar and parity",
    )
    p.add_argument("-o", "--out", type=Path, default=Path("demo_out"))
    p.add_argument("--backend", default="auto", help="inference backend (default: auto)")
    p.set_defaults(func=_cmd_demo)


def _cmd_demo(args: argparse.Namespace) -> int:
    from engine.api import Engine
    from engine.demo import default_models_dir, demo_videos
    from export.demo import make_demo_checkpoint
    from export.onnx_export import export_checkpoint

    print("== deepfake-engine demo ==")
    print("Checkpoint: an UNTRAINED demo model in the original key layout. Its scores are")
    print("MEANINGLESS; it only shows the pipeline. For real predictions export a trained")
    print("checkpoint (dfe export model_*.pt -o DIR) and run dfe predict VIDEOS --model DIR.")
    ckpt = make_demo_checkpoint(args.out, seq_len=20)
    print(f"  wrote {ckpt}")
    result = export_checkpoint(
        ckpt,
        args.out / "model",
        seq_len=20,
        extra={
            "demo": True,
            "note": "UNTRAINED demo checkpoint: deterministic random weights; "
            "scores are meaningless",
        },
    )
    _print_export(result)
    print("\nSidecar (classifier.json):")
    print(result.sidecar.read_text())
    videos = [str(v) for v in demo_videos(args.out)]
    print(f"Scoring {len(videos)} clip(s), N=20, first frames, backend {args.backend}:")
    engine = Engine.load(result.directory, backend=args.backend, models_dir=default_models_dir())
    records, seconds = run_predict(
        engine,
        videos,
        seq_len=20,
        sampling="first",
        out=args.out / "predictions.jsonl",
        resume=False,
        progress=False,
    )
    print_summary(records, seconds)
    print(f"records: {args.out / 'predictions.jsonl'}  (labels of an untrained model mean nothing)")
    return EXIT_OK if all(r["status"] == "ok" for r in records) else EXIT_PARTIAL


def _add_engine_options(p: argparse.ArgumentParser) -> None:
    from engine.backends import BACKEND_NAMES

    p.add_argument(
        "--backend",
        default="auto",
        choices=BACKEND_NAMES,
        help="inference backend (auto: the best one that can run here; a backend "
        "named explicitly that cannot run is an error, never a silent fallback)",
    )
    _add_detector_options(p)
    p.add_argument("--batch-size", type=int, default=64, help="classifier frames per batch")
    p.add_argument(
        "--face",
        choices=("score", "largest"),
        default="score",
        help="which face of a frame to crop",
    )
    p.add_argument(
        "--margin",
        type=float,
        default=0.0,
        help="crop margin, a fraction of the face box on each side (original: 0)",
    )
    p.add_argument(
        "--no-face",
        choices=("full_frame", "drop"),
        default="full_frame",
        help="a frame without a face: classify the whole frame (the original) or drop",
    )
    _add_crop_style(p, default=None)
    p.add_argument(
        "--threads", type=int, default=0, help="ONNX Runtime threads per session (0: its default)"
    )
    p.add_argument(
        "--precision",
        choices=("fp32", "fp16", "bf16", "int8"),
        default="fp32",
        help="fp32; int8: the Q/DQ graph of `dfe build MODEL --precision int8` (ONNX Runtime "
        "CPU or TensorRT); fp16: TensorRT or torch-cuda; bf16: torch or torch-cuda",
    )


def _engine_from_args(args: argparse.Namespace):
    from engine.api import Engine

    return Engine.load(
        args.model,
        backend=args.backend,
        detector=args.detector,
        models_dir=args.models,
        download=not args.no_download,
        detector_input=args.input_size,
        score_threshold=args.score_threshold,
        batch_size=args.batch_size,
        face=args.face,
        margin=args.margin,
        no_face=args.no_face,
        crop_style=args.crop_style,
        intra_op_threads=args.threads,
        precision=args.precision,
    )


def _add_predict(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "predict",
        help="score videos: REAL/FAKE with confidence, one record per input",
        description="Score videos (files, directories searched recursively, or globs). Each "
        "input gets one record (status ok or error). Exit code 0 when every input was scored, "
        f"{EXIT_PARTIAL} when some failed (they are recorded and the job carries on).",
    )
    p.add_argument("inputs", nargs="+", help="video files, directories or glob patterns")
    p.add_argument(
        "--model",
        required=True,
        type=Path,
        help="exported model directory, or a directory of them (one per N)",
    )
    p.add_argument(
        "--seq-len",
        type=int,
        default=None,
        help="frames per video (default: the N the model was trained for, else 20)",
    )
    p.add_argument(
        "--sampling",
        choices=("first", "uniform"),
        default="first",
        help="first N frames (the original) or N spread over the whole video",
    )
    p.add_argument(
        "--out", type=Path, default=None, help="FILE.jsonl or FILE.csv (default: JSONL on stdout)"
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="skip inputs already recorded in --out and append to it",
    )
    p.add_argument(
        "--unordered",
        action="store_true",
        help="write records as videos finish instead of in input order",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_engine_options(p)
    p.set_defaults(func=_cmd_predict)


def run_predict(
    engine, inputs: list[str], *, seq_len, sampling, out, resume, ordered=True, progress=True
) -> tuple[list[dict], float]:
    """Score ``inputs`` and write records; returns (records, seconds)."""
    import time

    from tqdm import tqdm

    from engine.batch import RecordWriter, already_scored, expand_inputs

    if resume and out is None:
        from engine.errors import InvalidInputError

        raise InvalidInputError("--resume needs --out FILE (the file to resume)")
    paths = list(expand_inputs(inputs))
    if resume:
        done = already_scored(out)
        skipped = [p for p in paths if p in done]
        paths = [p for p in paths if p not in done]
        if skipped:
            print(f"resume: {len(skipped)} input(s) already in {out}, skipped", file=sys.stderr)
    records: list[dict] = []
    frames = 0
    t0 = time.perf_counter()
    bar = tqdm(
        total=len(paths), unit="video", disable=not progress, file=sys.stderr, dynamic_ncols=True
    )
    with RecordWriter(out, append=resume, stream=sys.stdout) as writer:
        for pred in engine.predict_many(paths, seq_len=seq_len, sampling=sampling, ordered=ordered):
            rec = pred.to_record()
            writer.write(rec)
            records.append(rec)
            frames += pred.frames
            bar.update(1)
            elapsed = max(time.perf_counter() - t0, 1e-9)
            bar.set_postfix(
                frames_s=f"{frames / elapsed:.1f}", failed=sum(r["status"] != "ok" for r in records)
            )
    bar.close()
    return records, time.perf_counter() - t0


def print_summary(records: list[dict], seconds: float, *, table: bool = True) -> None:
    ok = [r for r in records if r["status"] == "ok"]
    frames = sum(r["frames"] for r in records)
    out = sys.stderr
    if table and records:
        width = min(max(len(Path(r["video"]).name) for r in records), 48)
        print(
            f"{'video':{width}s}  {'label':5s}  {'conf%':>6s}  {'p_fake':>7s}  "
            f"{'frames':>6s}  {'faces':>5s}  {'sec':>6s}",
            file=out,
        )
        for r in records:
            name = Path(r["video"]).name[:width]
            if r["status"] == "ok":
                print(
                    f"{name:{width}s}  {r['label']:5s}  {r['confidence']:6.1f}  "
                    f"{r['p_fake']:7.4f}  {r['frames']:6d}  {r['faces']:5d}  "
                    f"{r['timings']['total']:6.2f}",
                    file=out,
                )
            else:
                print(f"{name:{width}s}  ERROR  {r['error'][:80]}", file=out)
    secs = max(seconds, 1e-9)
    print(
        f"{len(ok)}/{len(records)} scored, {len(records) - len(ok)} failed; "
        f"{len(records) / secs:.2f} videos/s, {frames / secs:.1f} frames/s "
        f"({seconds:.1f} s)",
        file=out,
    )


def _cmd_predict(args: argparse.Namespace) -> int:
    engine = _engine_from_args(args)
    records, seconds = run_predict(
        engine,
        args.inputs,
        seq_len=args.seq_len,
        sampling=args.sampling,
        out=args.out,
        resume=args.resume,
        ordered=not args.unordered,
        progress=not args.no_progress,
    )
    print_summary(records, seconds, table=len(records) <= 50)
    return EXIT_OK if all(r["status"] == "ok" for r in records) else EXIT_PARTIAL


def _add_crop_style(p: argparse.ArgumentParser, *, default: str | None) -> None:
    p.add_argument(
        "--crop-style",
        choices=("scrfd", "dlib"),
        default=default,
        help="face box to crop: SCRFD's own, or SCRFD mapped to the square box dlib's mmod "
        "detector draws (what the original's published checkpoints were trained on; no dlib "
        "needed); default: " + (default or "the model's, recorded at export"),
    )


def _add_detector_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--detector",
        default="det_500m",
        help="SCRFD model: a known name (det_500m, det_2.5g, det_10g) or an .onnx path",
    )
    p.add_argument(
        "--models",
        default=None,
        metavar="DIR",
        help="models directory (default: $DFE_MODELS or ~/.cache/deepfake-engine/models)",
    )
    p.add_argument("--no-download", action="store_true", help="never download detector files")
    p.add_argument("--input-size", type=int, default=640, help="detector input (letterbox) size")
    p.add_argument("--score-threshold", type=float, default=0.5)


def _detector_from_args(args: argparse.Namespace):
    from preprocess.scrfd import SCRFDDetector
    from weights import find_model

    path = find_model(args.detector, models_dir=args.models, download=not args.no_download)
    return SCRFDDetector(path, input_size=args.input_size, score_threshold=args.score_threshold)


def _add_detect(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("detect", help="per-frame face boxes, scores and keypoints as JSON")
    p.add_argument("video", type=Path)
    p.add_argument("--frames", type=int, default=20, help="frames to read (default 20)")
    p.add_argument("--sampling", choices=("first", "uniform"), default="first")
    p.add_argument(
        "--json", type=Path, default=None, metavar="OUT", help="output file (default: stdout)"
    )
    _add_crop_style(p, default="scrfd")
    _add_detector_options(p)
    p.set_defaults(func=_cmd_detect)


def _cmd_detect(args: argparse.Namespace) -> int:
    from preprocess.faces import detect_video

    result = detect_video(
        args.video,
        _detector_from_args(args),
        frames=args.frames,
        sampling=args.sampling,
        crop_style=args.crop_style,
    )
    _json_dump(result, args.json)
    if args.json:
        faces = sum(bool(f["faces"]) for f in result["frames"])
        print(
            f"{args.video}: {len(result['frames'])} frames, {faces} with a face -> {args.json}",
            file=sys.stderr,
        )
    return EXIT_OK


def _add_preprocess(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "preprocess",
        help="write face-only 112x112 clips, as the original's training preprocessing",
        description="For each video, write OUT/<name>.mp4: 112x112 tight face crops, MJPEG at "
        "30 fps, like the original's training data (it kept the first 150 frames).",
    )
    p.add_argument("videos", nargs="+", help="video files, directories or globs")
    p.add_argument("-o", "--out", type=Path, required=True, help="output directory")
    p.add_argument("--frames", type=int, default=150, help="frames per video (default 150)")
    p.add_argument("--sampling", choices=("first", "uniform"), default="first")
    p.add_argument(
        "--no-face",
        choices=("previous", "skip", "full_frame"),
        default="previous",
        help="frame without a face: reuse the previous box (the original, default), "
        "skip the frame, or keep the whole frame",
    )
    p.add_argument("--margin", type=float, default=0.0)
    _add_crop_style(p, default="scrfd")
    p.add_argument("--overwrite", action="store_true", help="redo clips that already exist")
    _add_detector_options(p)
    p.set_defaults(func=_cmd_preprocess)


def _cmd_preprocess(args: argparse.Namespace) -> int:
    from engine.batch import expand_inputs
    from preprocess.faces import write_face_clip

    detector = _detector_from_args(args)
    failed = 0
    for video in expand_inputs(args.videos):
        out = args.out / (Path(video).stem + ".mp4")
        if out.exists() and not args.overwrite:
            print(f"{video}: {out} exists, skipped (--overwrite to redo)", file=sys.stderr)
            continue
        try:
            rep = write_face_clip(
                video,
                out,
                detector,
                frames=args.frames,
                sampling=args.sampling,
                no_face=args.no_face,
                margin=args.margin,
                crop_style=args.crop_style,
            )
        except EngineError as exc:
            failed += 1
            print(_format_error(exc), file=sys.stderr)
            continue
        print(
            f"{video}: {rep.frames_written}/{rep.frames_read} frames -> {out} "
            f"({rep.faces} faces, {rep.reused_box} reused boxes, {rep.skipped} skipped, "
            f"{rep.crop_style} crops)"
        )
    return EXIT_PARTIAL if failed else EXIT_OK


COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [
    _add_detect,
    _add_preprocess,
    _add_export,
    _add_demo,
    _add_predict,
]


# Subcommands in their own modules: "engine.commands.<name>", each with register(subparsers).
COMMAND_MODULES: list[str] = [
    "engine.commands.bench",
    "engine.commands.explain",
    "engine.commands.serve",
    "engine.commands.score",
    "engine.commands.eval",
    "engine.commands.build",
]


def build_parser() -> argparse.ArgumentParser:
    import engine

    parser = argparse.ArgumentParser(
        prog="dfe", description="deepfake-engine: optimized video deepfake detection"
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {engine.__version__}")
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="more logging (-v info, -vv debug)"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in COMMANDS:
        add(sub)
    for module in COMMAND_MODULES:
        importlib.import_module(module).register(sub)
    return parser


def _format_error(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return textwrap.fill(f"error: {text}", width=100, subsequent_indent="  ")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    level = (logging.WARNING, logging.INFO, logging.DEBUG)[min(args.verbose, 2)]
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except EngineError as exc:
        print(_format_error(exc), file=sys.stderr)
        if args.verbose:
            log.debug("traceback", exc_info=True)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def _json_dump(obj, path: Path | None) -> None:
    text = json.dumps(obj, indent=2)
    if path is None:
        print(text)
    else:
        path.write_text(text + "\n")


if __name__ == "__main__":
    sys.exit(main())
