"""``dfe explain VIDEO --model DIR -o OUTDIR``: heatmap overlays, a contact sheet, a score plot;
with ``--timeline``, the whole video's timeline too (``timeline.png``, its segments listed)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from engine.options import add_engine_options, add_sequence_options, engine_config, sequence_config

if TYPE_CHECKING:
    from engine.records import Prediction


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "explain",
        help="heatmap overlays per frame, a contact sheet and the per-frame score plot",
        description="Score one video and write, into OUTDIR: overlay_<frame>.png (the last conv "
        "feature map weighted by linear1's row for the predicted class, over the 112x112 "
        "crop), crop_<frame>.png, frame_<frame>.jpg (face box), scores.png, contact_sheet.png "
        "and explain.json (the dfe predict record plus the file names). With --timeline, the "
        "whole video is also scored over time (--timeline-fps frames per second, per person): "
        "timeline.png plots each person's calibrated p_fake over time with the thresholds and "
        "the segments judged manipulated shaded (needs matplotlib, the `eval` extra), the "
        "segments are listed on stderr, and the verdict takes them into account.",
    )
    p.add_argument("video", type=Path)
    p.add_argument("--model", required=True, type=Path, help="exported model directory")
    p.add_argument("-o", "--out", required=True, type=Path, help="output directory")
    add_sequence_options(p)
    add_engine_options(p)
    p.set_defaults(func=_cmd_explain)


def _cmd_explain(args: argparse.Namespace) -> int:
    from core.deps import require
    from engine.api import Engine
    from engine.explain import explain, write_explanation

    sequence = sequence_config(args)
    config = engine_config(args)
    if config.timeline:  # before anything is scored: the plot needs it
        require("matplotlib", purpose="dfe explain --timeline (timeline.png)")
    engine = Engine.load(args.model, config=config)
    engine.prepare(sequence.seq_len)
    expl = explain(engine, args.video, seq_len=sequence.seq_len, sampling=sequence.sampling)
    files = write_explanation(expl, args.out)
    pred = expl.prediction
    from core.verdict import reason_text

    why = f" ({reason_text(pred.reasons[0])})" if pred.reasons else ""
    print(
        f"{args.video}: {pred.verdict}{why}; p_fake {pred.p_fake_calibrated:.3f} "
        f"({pred.calibration['status'] if pred.calibration else 'uncalibrated'}), "
        f"{pred.frames} frames, {pred.faces} with a face -> "
        f"{args.out / files['contact_sheet']}",
        file=sys.stderr,
    )
    if config.timeline:
        _report_timeline(pred, args.out)
    return 0


def _report_timeline(pred: Prediction, out: Path) -> None:
    """Write ``timeline.png`` and list the segments on stderr (or why there is no timeline)."""
    from engine.explain import segment_words, write_timeline_plot

    line = pred.timeline
    if not line:
        reason = next((w for w in pred.warnings if "timeline" in w), "no timeline was made")
        print(f"timeline: none ({reason})", file=sys.stderr)
        return
    plot = write_timeline_plot(pred, out / "timeline.png")
    numbers = {p.get("track"): k + 1 for k, p in enumerate(line.get("people") or [])}
    people = f"{len(numbers)} {'person' if len(numbers) == 1 else 'people'}"
    print(
        f"timeline: {line['frames']} frames at {line['fps']:g} fps, {people}, "
        f"{len(pred.segments)} segment(s) judged manipulated -> {plot}",
        file=sys.stderr,
    )
    for segment in pred.segments:
        print(f"  {segment_words(segment, numbers.get(segment.get('person')))}", file=sys.stderr)
