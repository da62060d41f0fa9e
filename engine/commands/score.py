"""``dfe score``: a scoring job whose records Ray (or, without ``--ray``, this process) writes to
a ``.parquet`` or ``.jsonl`` output directory, with the guarantees of :mod:`engine.batch`
(``--resume`` adds what is missing, ``--overwrite`` replaces it, nothing else touches it)."""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from core.config import EngineConfig, RayConfig, SequenceConfig
from engine.options import (
    EXIT_OK,
    EXIT_PARTIAL,
    add_engine_options,
    add_ray_options,
    add_sequence_options,
    engine_config,
    ray_config,
    sequence_config,
)

log = logging.getLogger(__name__)


def init_ray(address: str | None) -> None:
    """Join (or start) the Ray cluster at ``address``."""
    from core.errors import BackendUnavailableError
    from engine.distributed import require_ray

    ray = require_ray()
    if not ray.is_initialized():
        try:
            ray.init(address=address, include_dashboard=False, log_to_driver=False)
        except Exception as exc:  # Ray raises ConnectionError, ValueError, RuntimeError ...
            where = f"the Ray cluster at {address}" if address else "a local Ray cluster"
            raise BackendUnavailableError(
                f"could not connect to {where}: {type(exc).__name__}: {exc}. Check --address "
                "(HOST:PORT of `ray start --head`, or auto with a cluster running here), or "
                "leave --address out to start a local cluster"
            ) from exc
    ray.data.DataContext.get_current().enable_progress_bars = sys.stderr.isatty()


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "score",
        help="score videos into a Parquet/JSONL dataset, on Ray with --ray; --resume adds to it",
        description="Score videos (files, directories, globs) into OUT, a directory named "
        "*.parquet or *.jsonl that holds one record per video (the `dfe predict` record; "
        "nested fields stored as JSON strings). With --ray, Ray Data scores them on an actor "
        "pool (one Engine per actor). The rules of `dfe predict --out` hold: an existing OUT "
        "is refused unless --resume (score what it lacks, with the same settings) or "
        "--overwrite (replace it when the job has finished).",
    )
    p.add_argument("inputs", nargs="+", help="video files, directories or glob patterns")
    p.add_argument("--model", required=True, type=Path, help="exported model directory")
    p.add_argument("--out", required=True, type=Path, help="OUT.parquet or OUT.jsonl (directory)")
    p.add_argument(
        "--resume",
        action="store_true",
        help="add to OUT: skip inputs it records as scored, unchanged, with these settings; "
        "error records and changed files are scored again and their records replaced",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace OUT when the job has finished (until then it stays as it was)",
    )
    add_sequence_options(p)
    add_ray_options(p)
    add_engine_options(p)
    p.set_defaults(func=run)


#: Records per file written by ``dfe score`` without Ray, and seconds at most between two
#: files: a long job holds few records in memory, and a killed one keeps every file already
#: written (a rerun with --resume goes on after them).
LOCAL_CHUNK = 100
LOCAL_FLUSH_SECONDS = 60.0


def _score_locally(engine: Any, paths: list[str], out: Path, sequence: SequenceConfig) -> None:
    """Without Ray: the in-process pipeline, writing files of at most :data:`LOCAL_CHUNK`
    records (or :data:`LOCAL_FLUSH_SECONDS` of work) into OUT in the same layout as Ray's."""
    from engine import distributed

    preds = engine.predict_many(paths, seq_len=sequence.seq_len, sampling=sequence.sampling)
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    name = f"local_{uuid.uuid4().hex}"
    chunk: list[dict[str, Any]] = []
    part = 0
    since = time.monotonic()
    try:
        try:
            for pred in preds:
                chunk.append(pred.to_record())
                if len(chunk) >= LOCAL_CHUNK or time.monotonic() - since > LOCAL_FLUSH_SECONDS:
                    distributed.write_records_file(out, f"{name}_{part:06d}", chunk)
                    chunk, part, since = [], part + 1, time.monotonic()
        finally:
            preds.close()
            if chunk:  # an interrupted job keeps what it scored
                distributed.write_records_file(out, f"{name}_{part:06d}", chunk)
    except BaseException:
        if created and out.is_dir() and not any(out.iterdir()):
            out.rmdir()  # a job that wrote nothing leaves no empty output folder behind
        raise


def run(args: argparse.Namespace) -> int:
    from core.deps import require
    from engine import distributed
    from engine.batch import OutputLock, check_output, resolve_output

    out: Path = resolve_output(args.out)  # a symlink's target: the link stays a link
    # before anything loads or is scored: the libraries this output and --ray need
    if distributed.output_format(out) == ".parquet":
        require("pyarrow", purpose=f"--out {args.out} (Parquet files)")
    if args.ray:
        distributed.require_ray()
    distributed.check_record_folder(out)  # a folder of other files: said as such, first
    check_output(out, resume=args.resume, overwrite=args.overwrite, kind="directory")
    with OutputLock(out):  # one job per output at a time
        return _run_locked(args, out)


def _run_locked(args: argparse.Namespace, out: Path) -> int:
    """:func:`run`'s job, with OUT resolved, checked and locked."""
    from engine import distributed
    from engine.batch import collect_inputs, require_videos

    config, sequence = engine_config(args), sequence_config(args)
    layout: RayConfig = ray_config(args)
    found = collect_inputs(args.inputs, exclude=[out])
    require_videos(found, args.inputs)
    paths = found.paths
    t0 = time.perf_counter()
    # the actors' config (threads sized by their CPUs, backend for their GPUs): its
    # provenance is what their records will carry
    cpus = layout.cpus_per_worker or 1.0
    run_config = (
        distributed.actor_config(config, sequence, cpus, layout.gpus_per_worker)
        if args.ray
        else config
    )
    engine = check_models(args.model, run_config, sequence)
    todo, done = paths, 0
    if args.resume and distributed.record_files(out):
        current = engine.job_provenance(sequence.seq_len, sequence.sampling)
        plan = distributed.resume_dataset(out, paths, current, content=config.hash_inputs)
        todo, done = plan.todo, len(plan.done)
        print(plan.summary(out), file=sys.stderr)
    target = out
    if args.overwrite:  # a sibling folder, swapped in when the job has finished
        target = out.with_name(f".{out.name}.{os.getpid()}.partial{out.suffix}")
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir(parents=True)
    try:
        if todo and args.ray:
            del engine  # the actors load their own
            init_ray(layout.address)
            distributed.score(
                todo,
                args.model,
                target,
                resume=False,
                config=config,
                sequence=sequence,
                layout=layout,
            )
        elif todo:
            _score_locally(engine, todo, target, sequence)
    except BaseException:
        if target != out:
            shutil.rmtree(target, ignore_errors=True)
            print(f"{out} was left as it was (--overwrite replaces it when a job has finished)",
                  file=sys.stderr)  # fmt: skip
        raise
    if target != out:
        _swap_in(target, out)
    seconds = time.perf_counter() - t0

    def input_of(record: dict[str, Any]) -> str | None:
        return ((record.get("provenance") or {}).get("input") or {}).get("path")

    wanted = {os.path.realpath(p) for p in paths}
    scored_now = {os.path.realpath(p) for p in todo}
    records = [r for r in distributed.read_records(out) if input_of(r) in wanted]
    new = [r for r in records if input_of(r) in scored_now]
    failed = sum(r["status"] != "ok" for r in new)
    skipped = done + len(found.not_videos) + len(found.duplicates)
    if found.summary():
        print(found.summary(), file=sys.stderr)
    print(
        f"{len(new) - failed}/{len(todo)} scored, {failed} errors, {skipped} skipped "
        f"({done} already in {out}); {len(records)} records for {len(paths)} inputs; "
        f"{seconds:.1f} s",
        file=sys.stderr,
    )
    return EXIT_PARTIAL if failed else EXIT_OK


def _swap_in(new: Path, out: Path) -> None:
    """Replace the folder ``out`` by ``new``: ``out`` is renamed aside, ``new`` renamed to it,
    then the old one removed (a crash in between leaves both, complete, side by side)."""
    old = out.with_name(f".{out.name}.{os.getpid()}.replaced{out.suffix}")
    if out.exists():
        os.replace(out, old)
    os.replace(new, out)
    shutil.rmtree(old, ignore_errors=True)


def check_models(model: Path, config: EngineConfig, sequence: SequenceConfig) -> Any:
    """Load the model and the detector here once before a job starts, so a missing or
    unloadable model is one clear error (exit code 2) instead of one per video; returns the
    engine."""
    from engine.api import Engine

    engine = Engine.load(model, config=config)
    engine.prepare(sequence.seq_len)
    return engine
