"""The ``dfe`` command line. Each subcommand imports what it needs when it runs."""

from __future__ import annotations

import argparse
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
    p.set_defaults(func=_cmd_demo)


def _cmd_demo(args: argparse.Namespace) -> int:
    from export.demo import make_demo_checkpoint
    from export.onnx_export import export_checkpoint

    print("== deepfake-engine demo ==")
    print("Checkpoint: an UNTRAINED demo model in the original key layout (scores are meaningless;")
    print("it only shows the pipeline). Use a real checkpoint with: dfe export model_*.pt -o DIR")
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
    return EXIT_OK


COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [_add_export, _add_demo]


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
