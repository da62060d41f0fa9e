"""``dfe predict``: score videos, one record per input (JSONL or CSV), resumable."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from engine.evaluation import LOW_COVERAGE
from engine.options import (
    EXIT_OK,
    EXIT_PARTIAL,
    add_engine_options,
    add_sequence_options,
    engine_config,
    sequence_config,
)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "predict",
        help="score videos: REAL/FAKE with confidence, one record per input",
        description="Score videos (files, directories searched recursively, or globs). Each "
        "input gets one record (status ok or error). Exit code 0 when every input was scored, "
        f"{EXIT_PARTIAL} when some failed (they are recorded and the job carries on); 2 when "
        "the model or detector cannot be loaded (nothing is scored).",
    )
    p.add_argument("inputs", nargs="+", help="video files, directories or glob patterns")
    p.add_argument(
        "--model",
        required=True,
        type=Path,
        help="exported model directory, or a directory of them (one per N)",
    )
    add_sequence_options(p)
    p.add_argument(
        "--out", type=Path, default=None, help="FILE.jsonl or FILE.csv (default: JSONL on stdout)"
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="skip inputs already recorded in --out and append to it",
    )
    p.add_argument(
        "--unordered",
        action="store_true",
        help="write records as videos finish instead of in input order",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_engine_options(p)
    p.set_defaults(func=run)


def run_predict(
    engine: Any,
    inputs: list[str],
    *,
    seq_len: int | None,
    sampling: str,
    out: Path | None,
    resume: bool,
    ordered: bool = True,
    progress: bool = True,
) -> tuple[list[dict], float]:
    """Score ``inputs`` (paths, directories, globs) with ``engine`` and write one record per
    input to ``out`` (JSONL or CSV; JSONL on stdout when None). Returns (records, seconds)."""
    from tqdm import tqdm

    from engine.batch import RecordWriter, already_scored, expand_inputs
    from engine.core.errors import InvalidInputError

    if resume and out is None:
        raise InvalidInputError("--resume needs --out FILE (the file to resume)")
    paths = list(expand_inputs(inputs))
    if resume:
        done = already_scored(out)
        skipped = [p for p in paths if p in done]
        paths = [p for p in paths if p not in done]
        if skipped:
            print(f"resume: {len(skipped)} input(s) already in {out}, skipped", file=sys.stderr)
    records: list[dict] = []
    frames = 0
    t0 = time.perf_counter()
    bar = tqdm(
        total=len(paths), unit="video", disable=not progress, file=sys.stderr, dynamic_ncols=True
    )
    with RecordWriter(out, append=resume, stream=sys.stdout) as writer:
        for pred in engine.predict_many(paths, seq_len=seq_len, sampling=sampling, ordered=ordered):
            rec = pred.to_record()
            writer.write(rec)
            records.append(rec)
            frames += pred.frames
            bar.update(1)
            elapsed = max(time.perf_counter() - t0, 1e-9)
            bar.set_postfix(
                frames_s=f"{frames / elapsed:.1f}", failed=sum(r["status"] != "ok" for r in records)
            )
    bar.close()
    return records, time.perf_counter() - t0


def low_coverage(records: list[dict]) -> list[dict]:
    """Scored records whose ``face_coverage`` is below :data:`LOW_COVERAGE` (mostly whole
    frames: the score is not about a face)."""
    return [
        r
        for r in records
        if r.get("status") == "ok"
        and r.get("face_coverage") is not None
        and r["face_coverage"] < LOW_COVERAGE
    ]


def print_summary(records: list[dict], seconds: float, *, table: bool = True) -> None:
    """A table of the records (to stderr), the videos scored mostly on whole frames, and the
    job's rates."""
    ok = [r for r in records if r["status"] == "ok"]
    frames = sum(r["frames"] for r in records)
    out = sys.stderr
    if table and records:
        width = min(max(len(Path(r["video"]).name) for r in records), 48)
        print(
            f"{'video':{width}s}  {'label':5s}  {'conf%':>6s}  {'p_fake':>7s}  "
            f"{'frames':>6s}  {'faces':>5s}  {'cover':>5s}  {'people':>6s}  {'sec':>6s}",
            file=out,
        )
        for r in records:
            name = Path(r["video"]).name[:width]
            if r["status"] == "ok":
                cover = r.get("face_coverage")
                cover_text = "  -  " if cover is None else f"{cover:5.2f}"
                flag = "  <- few faces" if cover is not None and cover < LOW_COVERAGE else ""
                print(
                    f"{name:{width}s}  {r['label']:5s}  {r['confidence']:6.1f}  "
                    f"{r['p_fake']:7.4f}  {r['frames']:6d}  {r['faces']:5d}  {cover_text}  "
                    f"{r.get('people', 0):6d}  {r['timings']['total']:6.2f}{flag}",
                    file=out,
                )
            else:
                print(f"{name:{width}s}  ERROR  {r['error'][:80]}", file=out)
    low = low_coverage(records)
    if low:
        print(
            f"{len(low)} video(s) scored mostly on whole frames (face_coverage < "
            f"{LOW_COVERAGE}): their scores are not about a face: "
            + ", ".join(Path(r["video"]).name for r in low[:10])
            + (" ..." if len(low) > 10 else ""),
            file=out,
        )
    secs = max(seconds, 1e-9)
    print(
        f"{len(ok)}/{len(records)} scored, {len(records) - len(ok)} failed; "
        f"{len(records) / secs:.2f} videos/s, {frames / secs:.1f} frames/s "
        f"({seconds:.1f} s)",
        file=out,
    )


def run(args: argparse.Namespace) -> int:
    from engine.api import Engine

    sequence = sequence_config(args)
    engine = Engine.load(args.model, config=engine_config(args))
    engine.prepare(sequence.seq_len)
    records, seconds = run_predict(
        engine,
        args.inputs,
        seq_len=sequence.seq_len,
        sampling=sequence.sampling,
        out=args.out,
        resume=args.resume,
        ordered=not args.unordered,
        progress=not args.no_progress,
    )
    print_summary(records, seconds, table=len(records) <= 50)
    return EXIT_OK if all(r["status"] == "ok" for r in records) else EXIT_PARTIAL
