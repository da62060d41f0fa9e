"""``dfe predict``: score videos, one record per input (JSONL or CSV), resumable."""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.verdict import DEFAULT_FAKE_AT, DEFAULT_REAL_BELOW, REASONS, VERDICTS, reason_text
from engine.evaluation import CALIBRATE_HINT, LOW_COVERAGE, is_untrained
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
        help="score videos: a verdict (FAKE, REAL, UNCERTAIN, NO_FACE) with reasons, the "
        "calibrated p_fake and how it was made, one record per input",
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
    p.add_argument(
        "--segments-out",
        type=Path,
        default=None,
        metavar="FILE.json",
        help="with --timeline: also write every video's segments as the AV-Deepfake1M challenge "
        "lists them, {video: [[confidence, start, end], ...]} (seconds), when the job ends",
    )
    add_engine_options(p)
    p.set_defaults(func=run)


#: Records kept for ``dfe predict``'s table (printed when the job has at most this many).
TABLE_ROWS = 50
#: Names of videos scored mostly on whole frames listed in the summary.
LOW_COVERAGE_NAMES = 10


@dataclass
class PredictTally:
    """What ``dfe predict``'s summary needs, in memory that does not grow with the job: counts
    (records, verdicts, records of an untrained or uncalibrated model), frames, the first
    :data:`TABLE_ROWS` records (for the table) and the names of the first
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
    verdicts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(VERDICTS, 0))
    untrained: int = 0  # records made by the untrained demo model
    uncalibrated: int = 0  # scored records of a model without calibration
    band: tuple[float, float] | None = None  # (real_below, fake_at) of the first of those

    def add(self, record: dict) -> None:
        """Count one record (the ``dfe predict`` record of a video)."""
        self.count += 1
        self.ok += record["status"] == "ok"
        self.frames += record["frames"]
        if len(self.first) < TABLE_ROWS:
            self.first.append(record)
        if record.get("verdict") in self.verdicts:
            self.verdicts[record["verdict"]] += 1
        self.untrained += is_untrained(record)
        if is_uncalibrated(record):
            self.uncalibrated += 1
            if self.band is None:
                cal = record["calibration"]
                self.band = (
                    float(cal.get("real_below", DEFAULT_REAL_BELOW)),
                    float(cal.get("fake_at", DEFAULT_FAKE_AT)),
                )
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

    Raises :class:`~core.errors.InvalidInputError` when the inputs hold no video, when
    ``out`` would be destroyed or holds records made with other settings, and
    :class:`~core.errors.OutputError` when it cannot be written (the complete records
    stay in it)."""
    import contextlib

    from core.errors import InvalidInputError
    from engine.batch import OutputLock, check_output, resolve_output

    if (resume or overwrite) and out is None:
        raise InvalidInputError("--resume and --overwrite need --out FILE")
    with contextlib.ExitStack() as stack:
        if out is not None:
            out = resolve_output(out)  # a symlink's target: the link stays a link
            check_output(out, resume=resume, overwrite=overwrite)
            stack.enter_context(OutputLock(out))  # one job per output at a time
        return _run_locked(
            engine, inputs, seq_len=seq_len, sampling=sampling, out=out, resume=resume,
            overwrite=overwrite, ordered=ordered, progress=progress,
        )  # fmt: skip


def _run_locked(
    engine: Any,
    inputs: list[str],
    *,
    seq_len: int | None,
    sampling: str,
    out: Path | None,
    resume: bool,
    overwrite: bool,
    ordered: bool,
    progress: bool,
) -> tuple[PredictTally, float]:
    """:func:`run_predict`'s job, with ``out`` resolved, checked and locked."""
    from tqdm import tqdm

    from engine.batch import (
        RecordWriter,
        collect_inputs,
        plan_resume,
        read_output,
        require_videos,
        rewrite_output,
    )

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


def is_uncalibrated(record: dict) -> bool:
    """A scored record judged with a model never calibrated (plain softmax, default band)."""
    return (
        record.get("status") == "ok"
        and (record.get("calibration") or {}).get("status") == "uncalibrated"
    )


#: The reason column shows the reason's words (shortened) when at least this wide (the longest
#: code's width), else its code.
MIN_REASON_WORDS = max(map(len, REASONS))


def _columns() -> int | None:
    """The width of the terminal the table is printed to (``COLUMNS`` first); None when it is
    not a terminal (a log file: no limit)."""
    env = os.environ.get("COLUMNS", "")
    if env.isdigit() and int(env) > 0:
        return int(env)
    try:
        return os.get_terminal_size(sys.stderr.fileno()).columns
    except (AttributeError, OSError, ValueError):  # not a terminal, or no file descriptor
        return None


def _shorten(text: str, width: int) -> str:
    return text if len(text) <= width else text[: max(width - 3, 0)] + "..."


def print_table(records: list[dict], out: Any = None) -> None:
    """The table of ``records``: video, verdict, calibrated p_fake (``*``: an uncalibrated
    model's plain softmax), frames, faces, people, the number of warnings, the main reason in
    words (shortened to the terminal; its code when there is no room), seconds. A failed
    video's row holds its error when it fits the terminal; otherwise the error is printed in
    full after the table (``error K: NAME: ...``), never cut."""
    out = out or sys.stderr
    width = min(max(len(Path(r["video"]).name) for r in records), 40)
    head = (
        f"{'video':{width}s}  {'verdict':9s}  {'p_fake':>7s}   {'frames':>6s}  {'faces':>5s}  "
        f"{'people':>6s}  {'warnings':>8s}  "
    )
    reasons = [(r.get("reasons") or [None])[0] if r["status"] == "ok" else None for r in records]
    texts = [reason_text(c) if c else "-" for c in reasons]
    columns = _columns()
    room = None if columns is None else columns - len(head) - len("  seconds")
    if room is None or room >= MIN_REASON_WORDS:
        shown = [_shorten(t, room) if room is not None else t for t in texts]
    else:  # no room for words: the codes, in full
        shown = [c or "-" for c in reasons]
    rwidth = max(len("reason"), *(len(t) for t in shown))
    print(f"{head}{'reason':{rwidth}s}  {'seconds':>7s}", file=out)
    below: list[tuple[str, str]] = []  # errors too long for their row: in full after the table
    for r, reason in zip(records, shown, strict=True):
        name = Path(r["video"]).name[:width]
        if r["status"] != "ok":
            error = " ".join((r.get("error") or "-").split())
            room_left = None if columns is None else columns - width - len("  ERROR  ")
            if room_left is not None and len(error) > room_left:
                below.append((Path(r["video"]).name, error))
                error = f"(error {len(below)} below)"
            print(f"{name:{width}s}  ERROR  {error}", file=out)
            continue
        p = r.get("p_fake_calibrated")
        p = r.get("p_fake") if p is None else p
        if r.get("verdict") == "NO_FACE":  # no face: its probability is not about a face
            p = None
        p_text = "      -" if p is None else f"{p:7.4f}"
        mark = "*" if is_uncalibrated(r) and p is not None else " "
        seconds = (r.get("timings") or {}).get("total")
        print(
            f"{name:{width}s}  {r.get('verdict') or '-':9s}  {p_text}{mark}  "
            f"{r['frames']:6d}  {r.get('faces', 0):5d}  {r.get('people', 0):6d}  "
            f"{len(r.get('warnings') or []):8d}  {reason:{rwidth}s}  "
            + ("      -" if seconds is None else f"{seconds:7.2f}"),
            file=out,
        )
    for n, (name, error) in enumerate(below, 1):  # whole, never cut mid-word
        print(f"error {n}: {name}: {error}", file=out)


def print_summary(tally: PredictTally, seconds: float, *, table: bool = True) -> None:
    """A table of the records (to stderr; only when the job had at most :data:`TABLE_ROWS`),
    the marks of an untrained or uncalibrated model, the videos scored mostly on whole frames,
    and the job's counts (verdicts too) and rates."""
    records = tally.first
    out = sys.stderr
    shown = table and bool(records) and tally.count <= TABLE_ROWS
    if shown:
        print_table(records, out)
        for r in records:  # --timeline: the segments judged manipulated
            for s in r.get("segments") or []:
                print(
                    f"  segment: {Path(r['video']).name} {s['start']:.2f}-{s['end']:.2f} s, "
                    f"person {s['person']}, confidence {s['score']:.2f}",
                    file=out,
                )
    if tally.untrained:
        print(
            "UNTRAINED model: the records were made by the untrained demo model; its verdicts "
            "and scores mean nothing (export a trained checkpoint with dfe export)",
            file=out,
        )
    if tally.uncalibrated:
        real_below, fake_at = tally.band or (DEFAULT_REAL_BELOW, DEFAULT_FAKE_AT)
        print(
            ("* " if shown else "")
            + "uncalibrated model: p_fake is the plain softmax and the verdicts use the default "
            f"band [{real_below:.2f}, {fake_at:.2f}) (REAL below it, FAKE from {fake_at:.2f}); "
            f"calibrate with: {CALIBRATE_HINT}",
            file=out,
        )
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
        skipped.append(f"{tally.not_videos} in folders, not scored")
    if tally.duplicates:
        skipped.append(f"{tally.duplicates} duplicates")
    why = f" ({', '.join(skipped)})" if skipped else ""
    verdicts = ", ".join(f"{tally.verdicts[v]} {v}" for v in VERDICTS)
    print(
        f"{tally.ok}/{tally.count} scored, {tally.failed} error{'' if tally.failed == 1 else 's'}, "
        f"{tally.skipped} skipped{why}; "
        f"{tally.count / secs:.2f} videos/s, {tally.frames / secs:.1f} frames/s "
        f"({seconds:.1f} s); verdicts: {verdicts}",
        file=out,
    )


def run(args: argparse.Namespace) -> int:
    from core.errors import InvalidInputError
    from engine.api import Engine
    from engine.batch import check_output, resolve_output

    sequence = sequence_config(args)
    config = engine_config(args)
    if (args.resume or args.overwrite) and args.out is None:
        raise InvalidInputError("--resume and --overwrite need --out FILE")
    if args.segments_out is not None and (not config.timeline or args.out is None):
        raise InvalidInputError(
            "--segments-out needs --timeline (segments come from it) and --out FILE"
        )
    if args.out is not None:  # before anything loads: a job that would destroy it never starts
        check_output(resolve_output(args.out), resume=args.resume, overwrite=args.overwrite)
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
    if args.segments_out is not None:
        write_segments(args.out, args.segments_out)
    return EXIT_OK if tally.failed == 0 else EXIT_PARTIAL


def write_segments(records_file: Path | None, path: Path) -> None:
    """The AV-Deepfake1M lists (:func:`engine.timeline.av1m_segments`) of every record in
    ``records_file``, written atomically to ``path``."""
    import json
    import os

    from core.errors import InvalidInputError
    from engine.batch import read_output
    from engine.timeline import av1m_segments

    if records_file is None:
        raise InvalidInputError("--segments-out needs --out FILE (the records it reads)")
    lists = {
        e.record["video"]: av1m_segments(e.record)
        for e in read_output(records_file)[0]
        if e.record.get("status") == "ok"
    }
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(lists, indent=1) + "\n")
    os.replace(tmp, path)
    print(f"segments: {path} ({sum(map(len, lists.values()))} in {len(lists)} videos)",
          file=sys.stderr)  # fmt: skip
