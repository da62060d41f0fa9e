"""``dfe score``: a scoring job whose records Ray (or, without ``--ray``, this process) writes to
a ``.parquet`` or ``.jsonl`` output directory; a rerun skips what is already there."""

from __future__ import annotations

import argparse
import logging
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from engine.core.config import EngineConfig, RayConfig, SequenceConfig
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
    from engine.distributed import require_ray

    ray = require_ray()
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = sys.stderr.isatty()


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "score",
        help="score videos into a Parquet/JSONL dataset, on Ray with --ray; reruns resume",
        description="Score videos (files, directories, globs) into OUT, a directory named "
        "*.parquet or *.jsonl that holds one record per video (the `dfe predict` record; "
        "nested fields stored as JSON strings). Videos already in OUT are skipped. "
        "With --ray, Ray Data scores them on an actor pool (one Engine per actor).",
    )
    p.add_argument("inputs", nargs="+", help="video files, directories or glob patterns")
    p.add_argument("--model", required=True, type=Path, help="exported model directory")
    p.add_argument("--out", required=True, type=Path, help="OUT.parquet or OUT.jsonl (directory)")
    add_sequence_options(p)
    add_ray_options(p)
    add_engine_options(p)
    p.set_defaults(func=run)


#: Records per file written by ``dfe score`` without Ray: a long job holds at most this many in
#: memory, and an interrupted one keeps every file already written (a rerun resumes after it).
LOCAL_CHUNK = 500


def _score_locally(
    paths: list[str], model: Path, out: Path, config: EngineConfig, sequence: SequenceConfig
) -> None:
    """Without Ray: the in-process pipeline, writing files of :data:`LOCAL_CHUNK` records into
    OUT in the same layout as Ray's."""
    from engine.api import Engine

    engine = Engine.load(model, config=config)
    engine.prepare(sequence.seq_len)
    preds = engine.predict_many(paths, seq_len=sequence.seq_len, sampling=sequence.sampling)
    out.mkdir(parents=True, exist_ok=True)
    name = f"local_{uuid.uuid4().hex}"
    chunk: list[dict[str, Any]] = []
    part = 0
    for pred in preds:
        chunk.append(pred.to_record())
        if len(chunk) == LOCAL_CHUNK:
            _write_local(out, f"{name}_{part:06d}", chunk)
            chunk, part = [], part + 1
    if chunk:
        _write_local(out, f"{name}_{part:06d}", chunk)


def _write_local(out: Path, name: str, records: list[dict[str, Any]]) -> None:
    """One file of records in OUT (Parquet or JSON Lines, as OUT's name says)."""
    import json

    from engine import distributed

    if distributed.output_format(out) == ".parquet":
        import pyarrow.parquet as pq

        pq.write_table(distributed.records_table(records), out / f"{name}.parquet")
    else:
        with (out / f"{name}.json").open("w") as f:
            for r in records:
                f.write(json.dumps(distributed.encode_record(r)) + "\n")


def run(args: argparse.Namespace) -> int:
    from engine import distributed
    from engine.batch import expand_inputs

    config, sequence = engine_config(args), sequence_config(args)
    layout: RayConfig = ray_config(args)
    distributed.output_format(args.out)
    paths = list(expand_inputs(args.inputs))
    t0 = time.perf_counter()
    done = {r["video"] for r in distributed.read_records(args.out)}
    todo = [p for p in paths if p not in done]
    if todo and args.ray:
        check_models(args.model, config, sequence)
        init_ray(layout.address)
        distributed.score(
            todo,
            args.model,
            args.out,
            resume=False,
            config=config,
            sequence=sequence,
            layout=layout,
        )
    elif todo:
        _score_locally(todo, args.model, args.out, config, sequence)
    scored, skipped = len(todo), len(paths) - len(todo)
    seconds = time.perf_counter() - t0
    wanted = set(paths)
    records = [r for r in distributed.read_records(args.out) if r["video"] in wanted]
    failed = sum(r["status"] != "ok" for r in records)
    print(
        f"{scored} scored, {skipped} already in {args.out} (skipped); {len(records)} records "
        f"for {len(wanted)} inputs, {failed} errors; {seconds:.1f} s",
        file=sys.stderr,
    )
    return EXIT_PARTIAL if failed else EXIT_OK


def check_models(model: Path, config: EngineConfig, sequence: SequenceConfig) -> Any:
    """Load the model and the detector here once before a Ray job starts its actors, so a
    missing or unloadable model is one clear error (exit code 2) instead of one per video."""
    from engine.api import Engine

    engine = Engine.load(model, config=config)
    engine.prepare(sequence.seq_len)
    return engine
