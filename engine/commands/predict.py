"""``dfe predict``: score videos, one record per input (JSONL or CSV), resumable."""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, field
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


#: Records kept for ``dfe predict``'s table (printed when the job has at most this many).
TABLE_ROWS = 50
#: Names of videos scored mostly on whole frames listed in the summary.
LOW_COVERAGE_NAMES = 10


@dataclass
class PredictTally:
    """What ``dfe predict``'s summary needs, in memory that does not grow with the job: counts,
    frames, the first :data:`TABLE_ROWS` records (for the table) and the names of the first
    :data:`LOW_COVERAGE_NAMES` videos scored mostly on whole frames. Every record is in the
    output file; a job of any length keeps at most :data:`TABLE_ROWS` of them here."""

    count: int = 0
    ok: int = 0
    frames: int = 0
    low_coverage: int = 0
    low_coverage_names: list[str] = field(default_factory=list)
    first: list[dict] = field(default_factory=list)

    def add(self, record: dict) -> None:
        """Count one record (the ``dfe predict`` record of a video)."""
        self.count += 1
        self.ok += record["status"] == "ok"
        self.frames += record["frames"]
        if len(self.first) < TABLE_ROWS:
            self.first.append(record)
        if is_low_coverage(record):
            self.low_coverage += 1
            if len(self.low_coverage_names) < LOW_COVERAGE_NAMES:
                self.low_coverage_names.append(Path(record["video"]).name)

    @property
    def failed(self) -> int:
        return self.count - self.ok

    @classmethod
    def of(cls, records: list[dict]) -> PredictTally:
        """The tally of ``records``."""
        tally = cls()
        for r in records:
            tally.add(r)
        return tally


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
) -> tuple[PredictTally, float]:
    """Score ``inputs`` (paths, directories, globs) with ``engine`` and write one record per
    input to ``out`` (JSONL or CSV; JSONL on stdout when None). Records are written as they come
    and not kept (see :class:`PredictTally`). Returns (tally, seconds)."""
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
    tally = PredictTally()
    t0 = time.perf_counter()
    bar = tqdm(
        total=len(paths), unit="video", disable=not progress, file=sys.stderr, dynamic_ncols=True
    )
    with RecordWriter(out, append=resume, stream=sys.stdout) as writer:
        for pred in engine.predict_many(paths, seq_len=seq_len, sampling=sampling, ordered=ordered):
            rec = pred.to_record()
            writer.write(rec)
            tally.add(rec)
            bar.update(1)
            if progress:
                elapsed = max(time.perf_counter() - t0, 1e-9)
                bar.set_postfix(frames_s=f"{tally.frames / elapsed:.1f}", failed=tally.failed)
    bar.close()
    return tally, time.perf_counter() - t0


def is_low_coverage(record: dict) -> bool:
    """A scored record whose ``face_coverage`` is below :data:`LOW_COVERAGE` (mostly whole
    frames: the score is not about a face)."""
    return (
        record.get("status") == "ok"
        and record.get("face_coverage") is not None
        and record["face_coverage"] < LOW_COVERAGE
    )


def print_summary(tally: PredictTally, seconds: float, *, table: bool = True) -> None:
    """A table of the records (to stderr; only when the job had at most :data:`TABLE_ROWS`),
    the videos scored mostly on whole frames, and the job's rates."""
    records = tally.first
    out = sys.stderr
    if table and records and tally.count <= TABLE_ROWS:
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
    if tally.low_coverage:
        print(
            f"{tally.low_coverage} video(s) scored mostly on whole frames (face_coverage < "
            f"{LOW_COVERAGE}): their scores are not about a face: "
            + ", ".join(tally.low_coverage_names)
            + (" ..." if tally.low_coverage > len(tally.low_coverage_names) else ""),
            file=out,
        )
    secs = max(seconds, 1e-9)
    print(
        f"{tally.ok}/{tally.count} scored, {tally.failed} failed; "
        f"{tally.count / secs:.2f} videos/s, {tally.frames / secs:.1f} frames/s "
        f"({seconds:.1f} s)",
        file=out,
    )


def run(args: argparse.Namespace) -> int:
    from engine.api import Engine

    sequence = sequence_config(args)
    engine = Engine.load(args.model, config=engine_config(args))
    engine.prepare(sequence.seq_len)
    tally, seconds = run_predict(
        engine,
        args.inputs,
        seq_len=sequence.seq_len,
        sampling=sequence.sampling,
        out=args.out,
        resume=args.resume,
        ordered=not args.unordered,
        progress=not args.no_progress,
    )
    print_summary(tally, seconds)
    return EXIT_OK if tally.failed == 0 else EXIT_PARTIAL
