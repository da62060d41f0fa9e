"""``dfe demo``: make the untrained demo checkpoint, export it, score the demo clips."""

from __future__ import annotations

import argparse
from pathlib import Path

from core.config import BACKEND_NAMES
from engine.options import EXIT_OK, EXIT_PARTIAL


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="make the untrained demo checkpoint, export it and show the sidecar and parity",
    )
    p.add_argument("-o", "--out", type=Path, default=Path("demo_out"))
    p.add_argument(
        "--backend", default="auto", choices=BACKEND_NAMES, help="inference backend (default: auto)"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from engine.api import Engine
    from engine.commands.export import print_export
    from engine.commands.predict import print_summary, run_predict
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
    print_export(result)
    print("\nSidecar (classifier.json):")
    print(result.sidecar.read_text())
    videos = [str(v) for v in demo_videos(args.out)]
    print(f"Scoring {len(videos)} clip(s), N=20, first frames, backend {args.backend}:")
    engine = Engine.load(result.directory, backend=args.backend, models_dir=default_models_dir())
    tally, seconds = run_predict(
        engine,
        videos,
        seq_len=20,
        sampling="first",
        out=args.out / "predictions.jsonl",
        resume=False,
        overwrite=True,  # the demo's own folder: a second `make demo` replaces its records
        progress=False,
    )
    print_summary(tally, seconds)
    print(
        f"records: {args.out / 'predictions.jsonl'}  (an untrained model: every verdict is "
        "UNCERTAIN, reason UNTRAINED_MODEL)"
    )
    return EXIT_OK if tally.failed == 0 else EXIT_PARTIAL
