"""``dfe build MODEL_DIR``: the INT8 Q/DQ graph (CPU) and TensorRT engines (NVIDIA GPUs).

- ``--precision int8``: calibrate on real face crops, search for the fastest Q/DQ graph within
  the agreement bound (:mod:`engine.optimize.int8_search`) and write ``classifier.int8.onnx``
  (+ its sidecar record), or refuse with the table of what was tried; ``--report`` also writes
  where the error comes from (``classifier.int8.report.json`` / ``.md``). It runs on ONNX
  Runtime CPU as it is; where TensorRT is installed, the INT8 engine is compiled from it too
  (``--onnx-only`` skips that).
- ``--precision fp16`` / ``fp32``: TensorRT engines of the classifier (and sequence head) and
  of the batch-dynamic SCRFD detector (always fp16), with an optimisation profile over the batch
  axis and a timing cache. Without TensorRT this is an error naming the ``gpu`` extra; it never
  quietly builds something else.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.config import EngineConfig, default_of
from core.errors import InvalidInputError
from engine.options import DETECTOR_FIELDS, add_options, config_from_args

if TYPE_CHECKING:
    from core.sidecar import Int8Graph

# the options of the detector and face policy that make the calibration crops
CROP_FIELDS = (*DETECTOR_FIELDS, "face", "margin", "crop_style")
BUILD_PRECISIONS = ("fp32", "fp16", "int8")  # what dfe build makes (bf16 is torch-cuda's cast)


def register(sub: argparse._SubParsersAction) -> None:
    from engine.optimize.calibration import CALIB_FRAMES_PER_VIDEO, CALIB_START, CALIB_STEP
    from engine.optimize.int8_search import DEFAULT_MAX_MINUTES, MIN_SPEEDUP
    from engine.optimize.quantize import CALIB_METHODS, DEFAULT_METHOD

    p = sub.add_parser(
        "build",
        help="build the INT8 Q/DQ model (CPU) and/or TensorRT engines (GPU) for a model",
        description="Build what `dfe predict --precision P` loads. int8: calibrate on real face "
        "crops from --calib videos and write MODEL_DIR/classifier.int8.onnx (explicit Q/DQ, "
        "runs on ONNX Runtime CPU, and on TensorRT where installed). fp16/fp32: compile "
        "TensorRT engines (needs the `gpu` extra and an NVIDIA GPU). Engines are cached by "
        "ONNX sha256, TensorRT version, GPU, compute capability, precision and profile; a "
        "mismatched engine is rebuilt, never loaded.",
    )
    p.add_argument("model_dir", type=Path, help="an exported model directory")
    p.add_argument("--precision", choices=BUILD_PRECISIONS, default="int8")
    p.add_argument(
        "--calib",
        nargs="+",
        default=None,
        metavar="VIDEO",
        help="calibration videos (files, directories, globs): a few real face clips of the kind "
        "you will score; in a source checkout the shared test clips are the default "
        "($DFE_SHARED/videos or ../shared/videos)",
    )
    p.add_argument(
        "--calib-method",
        choices=CALIB_METHODS,
        default=DEFAULT_METHOD,
        help=f"activation ranges of the first configuration tried (default {DEFAULT_METHOD}); "
        "when it misses the bound the search tries the others, then fp32 fallback",
    )
    p.add_argument(
        "--report",
        action="store_true",
        help="int8: measure where the error comes from (relative error per tensor, each node's "
        "contribution to the p_fake error) and write MODEL_DIR/classifier.int8.report.json/.md",
    )
    p.add_argument(
        "--max-minutes",
        type=float,
        default=DEFAULT_MAX_MINUTES,
        help="int8: no new configuration is tried after this many minutes (default %(default)s)",
    )
    p.add_argument(
        "--min-speedup",
        type=float,
        default=MIN_SPEEDUP,
        help="int8: refuse unless a graph within the bound is at least this many times as fast "
        "as fp32 (classifier frames/s, measured during the build; default %(default)s)",
    )
    p.add_argument(
        "--calib-frames",
        type=int,
        default=CALIB_FRAMES_PER_VIDEO,
        help=f"frames per calibration video (default {CALIB_FRAMES_PER_VIDEO})",
    )
    p.add_argument(
        "--calib-start",
        type=int,
        default=CALIB_START,
        help=f"first calibration frame (default {CALIB_START}: frames before it stay held out "
        "for the accuracy check)",
    )
    p.add_argument(
        "--calib-step", type=int, default=CALIB_STEP, help=f"frame step (default {CALIB_STEP})"
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="keep the INT8 graph even if it misses the agreement bound (recorded as such)",
    )
    p.add_argument(
        "--onnx-only",
        action="store_true",
        help="int8: only the Q/DQ ONNX graph, no TensorRT engine even where TensorRT exists",
    )
    p.add_argument(
        "--max-batch",
        type=int,
        default=default_of(EngineConfig, "batch_size"),
        help="TensorRT profile: largest classifier batch (frames); use dfe predict's "
        "--batch-size or smaller (default: %(default)s)",
    )
    p.add_argument(
        "--cache",
        type=Path,
        default=None,
        metavar="DIR",
        help="engine cache (default: MODEL_DIR/engines, else ~/.cache/deepfake-engine/engines)",
    )
    p.add_argument("--rebuild", action="store_true", help="rebuild even if up to date")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    # the detector and the face policy of the calibration crops: the engine's own options
    add_options(
        p.add_argument_group("calibration crops (as dfe predict will crop)"),
        EngineConfig,
        only=CROP_FIELDS,
    )
    p.set_defaults(func=run)


def _has_tensorrt() -> bool:
    return importlib.util.find_spec("tensorrt") is not None


def _build_int8(args: argparse.Namespace, spec: Any) -> None:
    from engine.batch import expand_inputs
    from engine.optimize.calibration import FrameSelection
    from engine.optimize.quantize import Int8SearchError, build_int8

    selection = FrameSelection(args.calib_start, args.calib_step, args.calib_frames)
    if "int8" in spec.precisions and not (args.rebuild or args.report) and args.calib is None:
        rec = spec.graphs.classifier_int8
        assert rec is not None  # "int8" in spec.precisions
        cal = rec.calibration
        first = (cal.first_method or cal.method) if cal is not None else None
        frames = cal.frames if cal is not None else None
        if (
            first == args.calib_method
            and frames is not None
            and (frames.start, frames.step, frames.count)
            == (selection.start, selection.step, selection.count)
        ):
            print(f"{spec.directory / rec.file} is up to date (--rebuild to redo)")
            _print_int8(rec)
            return
    calib = list(expand_inputs(args.calib)) if args.calib else None
    try:
        result = build_int8(
            spec.directory,
            calib,
            calib_frames=selection,
            method=args.calib_method,
            config=config_from_args(EngineConfig, args, only=CROP_FIELDS),
            force=args.force,
            report=args.report,
            max_minutes=args.max_minutes,
            min_speedup=args.min_speedup,
            progress=not args.no_progress,
        )
    except Int8SearchError as exc:
        # the table of what was tried, as it is (the CLI's usual error wrapping joins lines)
        print(f"error: {exc}", file=sys.stderr)
        if args.report:
            _print_report(spec.directory)
        raise _Refused() from exc
    print(f"wrote {result.path}")
    print(f"  sidecar: {result.sidecar} (graphs.classifier_int8)")
    _print_int8(result.record)
    if args.report:
        _print_report(spec.directory)


class _Refused(Exception):
    """The refusal was printed with its table; the command exits with code 2."""


def _print_report(directory: Path) -> None:
    import json

    from engine.optimize.qdq_debug import format_report
    from engine.optimize.quantize import REPORT_STEM

    path = directory / f"{REPORT_STEM}.json"
    if not path.is_file():
        return
    rep = json.loads(path.read_text())
    print(f"where the error comes from ({rep['graph']}; largest contributions first):")
    print(format_report(rep["nodes"], top=15))
    print(f"  full table: {directory / (REPORT_STEM + '.md')} (and .json)")


def _print_int8(rec: Int8Graph) -> None:
    """What the sidecar records of an INT8 graph, in a few lines (a record missing a section
    ``dfe build`` writes cannot be printed: rebuild it with --rebuild)."""
    cal, acc, q = rec.calibration, rec.accuracy, rec.quantization
    if cal is None or cal.frames is None or acc is None or acc.bound is None:
        print(f"  {rec.file}: its sidecar record is incomplete; rebuild it with --rebuild")
        return
    g = q["graph"]
    print(
        f"  Q/DQ: {g['quantize_linear']} QuantizeLinear, {g['dequantize_linear']} "
        f"DequantizeLinear; activations {'/'.join(g['activation_types'])}, weights "
        f"{'/'.join(g['weight_types'])} ({g['per_channel_weights']} per-channel)"
    )
    print(
        f"  calibration: {cal.crops} crops from {len(cal.videos)} videos "
        f"(frames {cal.frames.start}+ step {cal.frames.step}), {cal.method}"
    )
    search = rec.search
    bound = acc.bound.max_abs_delta_p_fake
    if search:
        from engine.optimize.int8_search import format_trials

        print(
            f"  chosen: {search.chosen['method']} ranges, {len(search.fp32_nodes)} nodes "
            f"in fp32, {search.speed['speedup']:.2f}x fp32 classifier frames/s "
            f"({search.stopped}); tried:"
        )
        print("    " + format_trials(search.trials, bound).replace("\n", "\n    "))
    held = acc.held_out.crops if acc.held_out is not None else None
    print(
        f"  held-out cost (N={list(acc.seq_lens)}, {held} crops): max |delta "
        f"p_fake| {acc.max_abs_delta_p_fake:.4f} (bound {bound})"
        f", decisive label agreement {acc.label_agreement_decisive}, "
        f"{'within bound' if acc.within_bound else 'OUTSIDE THE BOUND'}"
    )
    trt = rec.tensorrt_form_accuracy
    if trt and trt.within_bound is False:
        print(
            f"  warning: the TensorRT form of this graph (signed symmetric activations) is "
            f"outside the bound on CPU: max |delta p_fake| {trt.max_abs_delta_p_fake:.4f}; "
            "check TensorRT INT8 results before relying on them",
            file=sys.stderr,
        )


def _build_engines(args: argparse.Namespace, spec: Any) -> None:
    from engine.backends.trt_build import build_engines
    from weights import find_model

    config = config_from_args(EngineConfig, args, only=CROP_FIELDS)
    detector = find_model(config.detector, models_dir=config.models_dir, download=config.download)
    built = build_engines(
        spec.directory,
        precision=args.precision,
        max_batch=args.max_batch,
        detector_path=detector,
        detector_batch=config.detector_batch_for("tensorrt"),
        detector_input=config.detector_input,
        cache_dir=args.cache,
        rebuild=args.rebuild,
    )
    for b in built:
        state = "built" if b.built else "up to date"
        print(f"  {b.graph:10s} {b.precision:5s} {state:10s} {b.path}  ({b.reason})")


def run(args: argparse.Namespace) -> int:
    from core.deps import require
    from core.sidecar import load_sidecar

    try:
        return _run(args, require, load_sidecar)
    except _Refused:
        return 2


def _run(args: argparse.Namespace, require: Any, load_sidecar: Any) -> int:
    for name in ("max_batch", "calib_frames", "calib_step"):
        if getattr(args, name) < 1:
            raise InvalidInputError(f"--{name.replace('_', '-')} must be >= 1")
    spec = load_sidecar(args.model_dir)
    if args.precision == "int8":
        _build_int8(args, spec)
        if args.onnx_only:
            return 0
        if not _has_tensorrt():
            print(
                "TensorRT is not installed: the Q/DQ graph runs on ONNX Runtime CPU "
                f"(dfe predict ... --model {spec.directory} --precision int8 --backend ort); "
                "for GPU engines install the `gpu` extra on an NVIDIA machine and rerun.",
                file=sys.stderr,
            )
            return 0
        spec = load_sidecar(args.model_dir)
    else:
        require("tensorrt", purpose=f"building {args.precision} TensorRT engines")
    print(f"TensorRT engines for {spec.directory} ({args.precision}):")
    _build_engines(args, spec)
    return 0
