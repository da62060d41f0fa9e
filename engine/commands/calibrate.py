"""``dfe calibrate LABELS.csv --model DIR``: fit temperature scaling and an operating point on a
labelled set and store them in the model's sidecar (:mod:`engine.calibration`)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from engine.options import EXIT_OK, add_engine_options, add_sequence_options, engine_config


def register(sub: argparse._SubParsersAction) -> None:
    from engine.calibration import MAX_FALSE_FAKE, MAX_MISSED_FAKE

    p = sub.add_parser(
        "calibrate",
        help="fit the model's calibration and operating point on a labelled set",
        description="Score the videos of LABELS.csv (`file,label`, REAL/FAKE, as dfe eval "
        "reads it), fit temperature scaling (Guo et al., 2017) to their logits and choose the "
        "verdict thresholds from the operating point: FAKE from the lowest calibrated p_fake "
        "at which at most --max-false-fake of the REAL videos are called FAKE, REAL below the "
        "highest at which at most --max-missed-fake of the FAKE videos are called REAL, "
        "UNCERTAIN between. Written to the model's sidecar with the set's size, date and "
        "settings; dfe predict, score, serve and the Python API then use it. Score with the "
        "settings you will use in production (--seq-len, --sampling, face options).",
    )
    p.add_argument("labels", type=Path, help="CSV of file,label")
    p.add_argument("--model", required=True, type=Path, help="exported model directory")
    p.add_argument(
        "--root", type=Path, default=None, help="base of relative paths (default: the CSV's dir)"
    )
    p.add_argument(
        "--max-false-fake",
        type=float,
        default=MAX_FALSE_FAKE,
        help=f"largest share of real videos called FAKE (default {MAX_FALSE_FAKE})",
    )
    p.add_argument(
        "--max-missed-fake",
        type=float,
        default=MAX_MISSED_FAKE,
        help=f"largest share of fake videos called REAL (default {MAX_MISSED_FAKE})",
    )
    p.add_argument(
        "--dry-run", action="store_true", help="fit and print, but leave the sidecar as it is"
    )
    add_sequence_options(p)
    add_engine_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from core.labels import read_labels
    from core.sidecar import load_sidecar
    from engine import calibration as cal
    from engine.api import Engine
    from engine.options import sequence_config

    sequence = sequence_config(args)  # validated: --seq-len 0 is refused, as by dfe predict
    labels = read_labels(args.labels, root=args.root)
    spec = load_sidecar(args.model)  # one model folder: its sidecar is what is written
    engine = Engine.load(spec.directory, config=engine_config(args))
    engine.prepare(sequence.seq_len)
    fitted, records = cal.calibrate(
        engine,
        labels,
        seq_len=sequence.seq_len,
        sampling=sequence.sampling,
        max_false_fake=args.max_false_fake,
        max_missed_fake=args.max_missed_fake,
        labels_name=args.labels.name,
    )
    out = sys.stdout
    m = fitted.metrics
    n_real, n_fake = fitted.fitted_on["real"], fitted.fitted_on["fake"]
    print(f"fitted on {n_real} real and {n_fake} fake videos ({args.labels})", file=out)
    left = [
        f"{Path(r['video']).name} ({'no face' if r['status'] == 'ok' else r['error'][:60]})"
        for r in records
        if r["status"] != "ok" or r.get("verdict") == "NO_FACE"
    ]
    if left:
        print(f"{len(left)} video(s) left out: " + "; ".join(left[:10]), file=sys.stderr)
    print(f"temperature {fitted.temperature:.4f}", file=out)
    print(
        f"ECE {m['ece_before']:.4f} -> {m['ece_after']:.4f}; Brier {m['brier_before']:.4f} -> "
        f"{m['brier_after']:.4f}",
        file=out,
    )
    print(
        f"verdicts: REAL below p_fake {fitted.real_below:.4f}, FAKE from {fitted.fake_at:.4f}, "
        "UNCERTAIN between",
        file=out,
    )
    on = m["on_this_set"]
    print(
        f"on this set: {on['real_called_fake']:.1%} of real called FAKE, "
        f"{on['fake_called_real']:.1%} of fake called REAL, {on['uncertain']:.1%} UNCERTAIN",
        file=out,
    )
    if min(n_real, n_fake) < cal.FEW_PER_CLASS:
        print(
            f"warning: fewer than {cal.FEW_PER_CLASS} videos of a class: the thresholds are "
            "coarse (an operating point of 1% needs at least 100 real videos to mean 1%)",
            file=sys.stderr,
        )
    if max(fitted.temperature / cal.T_RANGE[1], cal.T_RANGE[0] / fitted.temperature) > 0.99:
        print(
            f"warning: the temperature is at the edge of its range {cal.T_RANGE}: on this set "
            "the model's scores carry (almost) no information, or the classes are perfectly "
            "separated; check the labels and the model",
            file=sys.stderr,
        )
    if spec.demo:
        print("warning: the untrained demo model: its verdicts stay UNCERTAIN", file=sys.stderr)
    if args.dry_run:
        print(json.dumps(fitted.to_sidecar(), indent=2), file=out)
        print("dry run: the sidecar was not changed", file=sys.stderr)
        return EXIT_OK
    path = cal.write(spec.directory, fitted)
    print(f"written to {path}", file=sys.stderr)
    return EXIT_OK
