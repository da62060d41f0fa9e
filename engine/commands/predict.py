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
        description="Score videos (files, directories searched recursively, following "
        "symlinks, or globs). Each video gets one record (status ok or error); files in folders "
        "whose names are not videos' are listed as skipped. An existing --out is never "
        "destroyed: it is refused unless --resume (score what it lacks) or --overwrite "
        "(replace it when the job has finished). Exit code 0 when every input was scored, "
        f"{EXIT_PARTIAL} when some failed (they are recorded and the job carries on); 2 when "
        "nothing can be scored (no video, the model or detector cannot be loaded, --out would "
        "be destroyed or cannot be written).",
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
        help="add to --out: skip inputs it records as scored, unchanged, with these settings "
        "(refused when it holds records made with other settings); error records and changed "
        "files are scored again and their records replaced",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace --out when the job has finished (until then it stays as it was)",
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
    done_before: int = 0  # --resume: inputs already in the output, not scored again
    not_videos: int = 0  # files in folders skipped: not videos by name, or hidden
    duplicates: int = 0  # paths naming a file already listed
    skipped_note: str = ""
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

    @property
    def skipped(self) -> int:
        """Inputs not scored by this job: already done, not videos, or duplicates."""
        return self.done_before + self.not_videos + self.duplicates

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
    overwrite: bool = False,
    ordered: bool = True,
    progress: bool = True,
) -> tuple[PredictTally, float]:
    """Score ``inputs`` (paths, directories, globs) with ``engine`` and write one record per
    video to ``out`` (JSONL or CSV; JSONL on stdout when None), with the guarantees of
    :mod:`engine.batch`: ``resume`` adds to ``out`` what it lacks, ``overwrite`` replaces it
    when the job has finished; an existing ``out`` is refused otherwise. Records are written as
    they come and not kept (see :class:`PredictTally`). Returns (tally, seconds).

    Raises :class:`~engine.core.errors.InvalidInputError` when the inputs hold no video, when
    ``out`` would be destroyed or holds records made with other settings, and
    :class:`~engine.core.errors.OutputError` when it cannot be written (the complete records
    stay in it)."""
    from tqdm import tqdm

    from engine.batch import (
        RecordWriter,
        check_output,
        collect_inputs,
        plan_resume,
        read_output,
        require_videos,
        rewrite_output,
    )
    from engine.core.errors import InvalidInputError

    if (resume or overwrite) and out is None:
        raise InvalidInputError("--resume and --overwrite need --out FILE")
    if out is not None:
        check_output(out, resume=resume, overwrite=overwrite)
    found = collect_inputs(inputs, exclude=[out] if out is not None else [])
    require_videos(found, inputs)
    tally = PredictTally(not_videos=len(found.not_videos), duplicates=len(found.duplicates))
    tally.skipped_note = found.summary()
    paths = found.paths
    if resume and out is not None and out.is_file():
        entries, torn = read_output(out)
        plan = plan_resume(
            entries,
            paths,
            engine.job_provenance(seq_len, sampling),
            content=engine.config.hash_inputs,
            torn=torn,
            out=out,
        )
        if plan.rewrite:
            rewrite_output(out, plan.keep)
        paths = plan.todo
        tally.done_before = len(plan.done)
        print(plan.summary(out), file=sys.stderr)
    t0 = time.perf_counter()
    bar = tqdm(
        total=len(paths), unit="video", disable=not progress, file=sys.stderr, dynamic_ncols=True
    )
    mode = "replace" if overwrite else "append"
    with RecordWriter(out, mode=mode, stream=sys.stdout) as writer:
        preds = engine.predict_many(paths, seq_len=seq_len, sampling=sampling, ordered=ordered)
        try:
            for pred in preds:
                rec = pred.to_record()
                writer.write(rec)
                tally.add(rec)
                bar.update(1)
                if progress:
                    elapsed = max(time.perf_counter() - t0, 1e-9)
                    bar.set_postfix(frames_s=f"{tally.frames / elapsed:.1f}", failed=tally.failed)
        finally:
            preds.close()  # stop the pipeline's threads now if the job ends early
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
    if tally.skipped_note:
        print(tally.skipped_note, file=out)
    secs = max(seconds, 1e-9)
    skipped = []
    if tally.done_before:
        skipped.append(f"{tally.done_before} already done")
    if tally.not_videos:
        skipped.append(f"{tally.not_videos} not videos")
    if tally.duplicates:
        skipped.append(f"{tally.duplicates} duplicates")
    why = f" ({', '.join(skipped)})" if skipped else ""
    print(
        f"{tally.ok}/{tally.count} scored, {tally.failed} errors, {tally.skipped} skipped{why}; "
        f"{tally.count / secs:.2f} videos/s, {tally.frames / secs:.1f} frames/s "
        f"({seconds:.1f} s)",
        file=out,
    )


def run(args: argparse.Namespace) -> int:
    from engine.api import Engine
    from engine.batch import check_output
    from engine.core.errors import InvalidInputError

    sequence = sequence_config(args)
    config = engine_config(args)
    if (args.resume or args.overwrite) and args.out is None:
        raise InvalidInputError("--resume and --overwrite need --out FILE")
    if args.out is not None:  # before anything loads: a job that would destroy it never starts
        check_output(args.out, resume=args.resume, overwrite=args.overwrite)
    engine = Engine.load(args.model, config=config)
    engine.prepare(sequence.seq_len)
    tally, seconds = run_predict(
        engine,
        args.inputs,
        seq_len=sequence.seq_len,
        sampling=sequence.sampling,
        out=args.out,
        resume=args.resume,
        overwrite=args.overwrite,
        ordered=not args.unordered,
        progress=not args.no_progress,
    )
    print_summary(tally, seconds)
    return EXIT_OK if tally.failed == 0 else EXIT_PARTIAL
