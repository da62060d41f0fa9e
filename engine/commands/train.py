"""``dfe train LABELS.csv --root DIR -o OUTDIR``: fine-tune or train the classifier on labelled
videos (or ``dfe preprocess`` face clips); the training itself is :func:`export.train.train`
(torch, the ``export`` extra), imported when the command runs."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from core.config import TRAIN_DETECTOR_FIELDS, EngineConfig, TrainConfig
from engine.options import EXIT_OK, add_options, config_from_args


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="fine-tune or train the ResNeXt-LSTM on labelled videos (needs the export extra)",
        description="Train on the videos of LABELS.csv (`file,label`, REAL/FAKE, header "
        "optional, like the original's Gobal_metadata.csv). Faces are found and cropped by the "
        "engine's own stages and cached (OUTDIR/crops), face clips of `dfe preprocess` are used "
        "as they are. Every epoch writes OUTDIR/history.json, OUTDIR/curves.png, last.pt, "
        "best.pt (best validation AUC; the last epoch without validation) and "
        "model_<acc>_acc_<N>_frames_<data>.pt, plain state_dicts that `dfe export` loads with "
        "no option (it takes the crop style and N from OUTDIR/train.json). --resume continues "
        "an interrupted run from its last finished epoch, with the same result.",
    )
    p.add_argument("labels", type=Path, help="CSV of file,label")
    p.add_argument(
        "--root", type=Path, default=None, help="base of relative paths (default: the CSV's dir)"
    )
    p.add_argument("-o", "--out-dir", required=True, type=Path, help="output directory")
    add_options(p.add_argument_group("training"), TrainConfig)
    add_options(
        p.add_argument_group("face detection (--no-download also covers the ImageNet weights)"),
        EngineConfig,
        only=TRAIN_DETECTOR_FIELDS,
    )
    p.set_defaults(func=run)


def _print_epoch(entry: dict[str, Any]) -> None:
    def pct(x: float | None) -> str:
        return "n/a" if x is None else f"{100 * x:.1f}%"

    text = (
        f"epoch {entry['epoch']}: train loss {entry['train_loss']:.4f} acc "
        f"{pct(entry['train_acc'])}"
    )
    if entry["val_loss"] is not None:
        auc = "n/a" if entry["val_auc"] is None else f"{entry['val_auc']:.4f}"
        text += (
            f" | val loss {entry['val_loss']:.4f} acc {pct(entry['val_acc'])} AUC {auc} "
            f"confusion {entry['confusion']}"
        )
    print(f"{text} ({entry['seconds']:.1f} s)", file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    from export.train import train

    config = config_from_args(TrainConfig, args)
    detector = config_from_args(EngineConfig, args, only=TRAIN_DETECTOR_FIELDS)
    result = train(
        args.labels,
        args.out_dir,
        root=args.root,
        config=config,
        detector=detector,
        progress=True,
        on_epoch=_print_epoch,
    )
    best = next(e for e in result.history if e["epoch"] == result.best_epoch)
    print(
        f"best epoch {result.best_epoch}: {result.best} (= {result.named.name}); last: "
        f"{result.last}; history: {result.out_dir / 'history.json'}"
    )
    if best["val_auc"] is None and best["val_loss"] is None:
        print("no validation: best.pt is the last epoch", file=sys.stderr)
    print(f"next: dfe export {result.best} -o models/{result.named.stem}")
    return EXIT_OK
