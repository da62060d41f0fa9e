"""``dfe explain VIDEO --model DIR -o OUTDIR``: heatmap overlays, a contact sheet, a score plot."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from engine.options import add_engine_options, add_sequence_options, engine_config, sequence_config


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "explain",
        help="heatmap overlays per frame, a contact sheet and the per-frame score plot",
        description="Score one video and write, into OUTDIR: overlay_<frame>.png (the last conv "
        "feature map weighted by linear1's row for the predicted class, over the 112x112 "
        "crop), crop_<frame>.png, frame_<frame>.jpg (face box), scores.png, contact_sheet.png "
        "and explain.json (the dfe predict record plus the file names).",
    )
    p.add_argument("video", type=Path)
    p.add_argument("--model", required=True, type=Path, help="exported model directory")
    p.add_argument("-o", "--out", required=True, type=Path, help="output directory")
    add_sequence_options(p)
    add_engine_options(p)
    p.set_defaults(func=_cmd_explain)


def _cmd_explain(args: argparse.Namespace) -> int:
    from engine.api import Engine
    from engine.explain import explain, write_explanation

    sequence = sequence_config(args)
    engine = Engine.load(args.model, config=engine_config(args))
    engine.prepare(sequence.seq_len)
    expl = explain(engine, args.video, seq_len=sequence.seq_len, sampling=sequence.sampling)
    files = write_explanation(expl, args.out)
    pred = expl.prediction
    from engine.core.verdict import reason_text

    why = f" ({reason_text(pred.reasons[0])})" if pred.reasons else ""
    print(
        f"{args.video}: {pred.verdict}{why}; p_fake {pred.p_fake_calibrated:.3f} "
        f"({pred.calibration['status'] if pred.calibration else 'uncalibrated'}), "
        f"{pred.frames} frames, {pred.faces} with a face -> "
        f"{args.out / files['contact_sheet']}",
        file=sys.stderr,
    )
    return 0
