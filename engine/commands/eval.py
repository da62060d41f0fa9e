"""``dfe eval``: score a labelled set (``file,label``) and report, per sequence length, the
verdicts' coverage, the original's confusion matrix, accuracy and precision/recall per class of
the decided videos, ROC AUC and the calibration (ECE, Brier, reliability) of p_fake_calibrated,
with plots and a JSON; marked when the model is untrained or uncalibrated."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from core.config import SequenceConfig
from engine.options import (
    EXIT_OK,
    EXIT_PARTIAL,
    add_engine_options,
    add_ray_options,
    add_sequence_options,
    engine_config,
    ray_config,
)

#: The evaluation's report, written last: a folder holding it holds a complete evaluation.
METRICS = "metrics.json"


def evaluation_files(out_dir: Path) -> list[Path]:
    """The files an evaluation writes besides :data:`METRICS` (``predictions_N<n>.jsonl``,
    ``eval_N<n>.png``) found in ``out_dir``; without :data:`METRICS` they are an evaluation
    that did not finish."""
    if not out_dir.is_dir():
        return []
    return [*out_dir.glob("predictions_N*.jsonl"), *out_dir.glob("eval_N*.png")]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "eval",
        help="evaluate a model on a labelled set: coverage, confusion matrix, accuracy, ROC AUC, "
        "calibration",
        description="Score the videos of LABELS.csv (`file,label`, REAL/FAKE, header optional, "
        "like the original's Gobal_metadata.csv) for each --seq-len and write to OUTDIR: "
        "metrics.json (everything), eval_N<n>.png (confusion matrix, ROC and reliability "
        "diagram) and predictions_N<n>.jsonl. Accuracy, the confusion matrix and "
        "precision/recall cover the videos with a decided verdict (FAKE or REAL); UNCERTAIN and "
        "NO_FACE are counted as coverage. ROC AUC, ECE and Brier cover every scored video with "
        "a face, by p_fake_calibrated. Unreadable videos are counted and listed as errors.",
    )
    p.add_argument("labels", type=Path, help="CSV of file,label")
    p.add_argument("--model", required=True, type=Path, help="exported model directory")
    p.add_argument(
        "--seq-len", type=int, nargs="+", default=[None], help="one or more frame counts"
    )
    add_sequence_options(p, exclude=("seq_len",))
    p.add_argument(
        "--root", type=Path, default=None, help="base of relative paths (default: the CSV's dir)"
    )
    p.add_argument("-o", "--out-dir", required=True, type=Path, help="output directory")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the results of an earlier evaluation in --out-dir (refused without it)",
    )
    p.add_argument("--no-plots", action="store_true", help="skip the PNGs (no matplotlib)")
    add_ray_options(p)
    add_engine_options(p)
    p.set_defaults(func=run)


def _score(paths: list[str], seq_len: int | None, args: argparse.Namespace, engine) -> list[dict]:
    sequence = SequenceConfig(seq_len=seq_len, sampling=args.sampling)
    if args.ray:
        from engine import distributed

        return distributed.collect(
            paths,
            args.model,
            config=engine_config(args),
            sequence=sequence,
            layout=ray_config(args),
        )
    return [
        p.to_record()
        for p in engine.predict_many(paths, seq_len=seq_len, sampling=sequence.sampling)
    ]


def run(args: argparse.Namespace) -> int:
    import os

    from core.deps import require
    from core.errors import InvalidInputError, OutputError
    from engine import evaluation
    from engine.api import Engine
    from engine.commands.score import init_ray

    labels = evaluation.read_labels(args.labels, root=args.root)
    # one video per real file: a symlink or another path to the same file is not a second one
    first: dict[str, tuple[str, str]] = {}
    for video, label in labels:
        first.setdefault(os.path.realpath(video), (video, label))
    labels = list(first.values())
    paths = [v for v, _ in labels]
    out_dir: Path = args.out_dir
    if out_dir.exists() and not out_dir.is_dir():
        raise OutputError(f"-o {out_dir} is a file; give a folder for the evaluation's results")
    # an evaluation is complete once its metrics.json is written (last): only a complete one
    # is kept from being replaced; the files of one that failed are its retry's to replace
    complete = (out_dir / METRICS).exists()
    if complete and not args.overwrite:
        earlier = [METRICS, *(p.name for p in sorted(out_dir.glob("predictions_N*.jsonl")))]
        raise InvalidInputError(
            f"-o {out_dir} already holds an evaluation ({', '.join(earlier[:3])}); nothing was "
            "written. Choose another folder, or add --overwrite to replace it"
        )
    leftovers = [] if complete else sorted(p.name for p in evaluation_files(out_dir))
    if not args.no_plots:  # before anything is scored: the plots' library
        require("matplotlib", purpose="the evaluation plots", instead="pass --no-plots")
    config = engine_config(args)
    engine = Engine.load(args.model, config=config)
    for n in args.seq_len:  # every model and the detector load before the first video
        engine.prepare(n)
    untrained = bool(engine.describe()["demo"])  # the sidecar's demo flag
    if args.ray:
        engine = None
        init_ray(ray_config(args).address)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        # the earlier evaluation (--overwrite) or the files of one that did not finish: the
        # report goes first, so a run that fails now never leaves a mix that looks complete
        (out_dir / METRICS).unlink(missing_ok=True)
        for old in evaluation_files(out_dir):
            old.unlink()
    except OSError as exc:
        raise OutputError(f"-o {out_dir}: cannot create it ({exc.strerror or exc})") from exc
    if leftovers:
        print(
            f"-o {out_dir}: removed the files of an evaluation that did not finish (no "
            f"{METRICS}): {', '.join(leftovers[:3])}" + (" ..." if len(leftovers) > 3 else ""),
            file=sys.stderr,
        )
    report: dict[str, Any] = {
        "labels": str(args.labels),
        "model": str(args.model),
        "sampling": args.sampling,
        "ray": args.ray,
        "untrained": untrained,
        "calibrated": None,
        "results": [],
    }
    any_errors = False
    for n in args.seq_len:
        t0 = time.perf_counter()
        records = _score(paths, n, args, engine)
        seconds = time.perf_counter() - t0
        used = next((r["seq_len"] for r in records if r.get("seq_len")), n)
        tag = f"N{used}"
        with (args.out_dir / f"predictions_{tag}.jsonl").open("w") as f:
            for r in records:
                f.write(json.dumps(r) + "\n")
        metrics = evaluation.evaluate(labels, records, untrained=untrained)
        metrics.update(seq_len=used, seconds=round(seconds, 3))
        if not args.no_plots:
            png = evaluation.plot(
                metrics, args.out_dir / f"eval_{tag}.png", title=f"{args.model.name}, N={used}"
            )
            metrics["plot"] = str(png)
        report["results"].append(metrics)
        any_errors |= bool(metrics["n_errors"] or metrics["missing"])
        print(evaluation.format_report(metrics, seq_len=used))
        print(f"({seconds:.1f} s)\n")
    # the whole run's marks: untrained if any result is; calibrated only if every one says so
    report["untrained"] = untrained or any(r["untrained"] for r in report["results"])
    flags = [r["calibrated"] for r in report["results"] if r["calibrated"] is not None]
    report["calibrated"] = all(flags) if flags else None
    out = args.out_dir / METRICS
    tmp = out.with_name(f".{METRICS}.{os.getpid()}.tmp")  # renamed into place: all or nothing
    tmp.write_text(json.dumps(report, indent=2) + "\n")
    os.replace(tmp, out)
    print(f"metrics: {out}", file=sys.stderr)
    return EXIT_PARTIAL if any_errors else EXIT_OK
