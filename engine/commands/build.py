"""``dfe build MODEL_DIR``: the INT8 Q/DQ graph (CPU) and TensorRT engines (NVIDIA GPUs).

- ``--precision int8``: calibrate on real face crops and write ``classifier.int8.onnx`` (+ its
  sidecar record). It runs on ONNX Runtime CPU as it is; where TensorRT is installed, the INT8
  engine is compiled from it too (``--onnx-only`` skips that).
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
from typing import Any

from engine.core.config import EngineConfig, default_of
from engine.core.errors import InvalidInputError
from engine.options import DETECTOR_FIELDS, add_options, config_from_args

# the options of the detector and face policy that make the calibration crops
CROP_FIELDS = (*DETECTOR_FIELDS, "face", "margin", "crop_style")
BUILD_PRECISIONS = ("fp32", "fp16", "int8")  # what dfe build makes (bf16 is torch-cuda's cast)


def register(sub: argparse._SubParsersAction) -> None:
    from engine.optimize.calibration import CALIB_FRAMES_PER_VIDEO, CALIB_START, CALIB_STEP
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
        help=f"activation range calibration (default {DEFAULT_METHOD}: smallest error measured)",
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
    from engine.optimize.quantize import build_int8

    selection = FrameSelection(args.calib_start, args.calib_step, args.calib_frames)
    if "int8" in spec.precisions and not args.rebuild and args.calib is None:
        rec = spec.raw["graphs"]["classifier_int8"]
        cal = rec.get("calibration", {})
        if cal.get("method") == args.calib_method and cal.get("frames") == {
            "start": selection.start,
            "step": selection.step,
            "count": selection.count,
        }:
            print(f"{spec.directory / rec['file']} is up to date (--rebuild to redo)")
            _print_int8(rec)
            return
    calib = list(expand_inputs(args.calib)) if args.calib else None
    result = build_int8(
        spec.directory,
        calib,
        calib_frames=selection,
        method=args.calib_method,
        config=config_from_args(EngineConfig, args, only=CROP_FIELDS),
        force=args.force,
    )
    print(f"wrote {result.path}")
    print(f"  sidecar: {result.sidecar} (graphs.classifier_int8)")
    _print_int8(result.record)


def _print_int8(rec: dict[str, Any]) -> None:
    cal, acc, q = rec["calibration"], rec["accuracy"], rec["quantization"]
    g = q["graph"]
    print(
        f"  Q/DQ: {g['quantize_linear']} QuantizeLinear, {g['dequantize_linear']} "
        f"DequantizeLinear; activations {'/'.join(g['activation_types'])}, weights "
        f"{'/'.join(g['weight_types'])} ({g['per_channel_weights']} per-channel)"
    )
    print(
        f"  calibration: {cal['crops']} crops from {len(cal['videos'])} videos "
        f"(frames {cal['frames']['start']}+ step {cal['frames']['step']}), {cal['method']}"
    )
    print(
        f"  held-out cost (N={acc['seq_lens']}, {acc['held_out']['crops']} crops): max |delta "
        f"p_fake| {acc['max_abs_delta_p_fake']:.4f} (bound {acc['bound']['max_abs_delta_p_fake']})"
        f", decisive label agreement {acc['label_agreement_decisive']}, "
        f"{'within bound' if acc['within_bound'] else 'OUTSIDE THE BOUND'}"
    )


def _build_engines(args: argparse.Namespace, spec: Any) -> None:
    from engine.optimize.trt_build import build_engines
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
    from engine.core.deps import require
    from engine.core.sidecar import load_sidecar

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
