"""``dfe export CHECKPOINT -o OUTDIR``: the ONNX graph and sidecar of a training checkpoint,
with parity against the PyTorch model checked before anything is written."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from core.config import CROP_STYLES, REDUCE_MODES, VARIANTS
from engine.options import EXIT_OK


def register(sub: argparse._SubParsersAction) -> None:
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
        choices=REDUCE_MODES,
        default="mean",
        help="per-video reduction: mean over frames (the original's model code, "
        "default) or the last frame (the original web app)",
    )
    p.add_argument(
        "--variant",
        choices=VARIANTS,
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
    p.add_argument(
        "--crop-style",
        choices=CROP_STYLES,
        default=None,
        help="the crop style recorded as the model's default (default: dlib for the "
        "original's published checkpoints, scrfd otherwise)",
    )
    p.set_defaults(func=run)


def print_export(result: Any) -> None:
    """What ``dfe export`` and ``dfe demo`` print about an export."""
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


def run(args: argparse.Namespace) -> int:
    from export.onnx_export import export_checkpoint

    result = export_checkpoint(
        args.checkpoint,
        args.out,
        reduce=args.reduce,
        variant=args.variant,
        seq_len=args.seq_len,
        crop_style=args.crop_style,
    )
    print_export(result)
    return EXIT_OK
