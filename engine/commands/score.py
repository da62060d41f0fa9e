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

log = logging.getLogger(__name__)


def add_ray_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("Ray")
    g.add_argument("--ray", action="store_true", help="run on a Ray cluster with Ray Data")
    g.add_argument(
        "--address",
        default=None,
        help="Ray cluster to join ('auto', or HOST:PORT of `ray start --head`); default: start "
        "a local cluster on this machine",
    )
    g.add_argument("--num-workers", type=int, default=1, help="actors, one Engine each")
    g.add_argument(
        "--cpus-per-worker",
        type=float,
        default=None,
        help="CPUs reserved per actor, fractions allowed (default: up to 1, always leaving one "
        "CPU of the cluster for Ray Data's other tasks)",
    )
    g.add_argument("--gpus-per-worker", type=float, default=0.0, help="GPUs per actor (0.5 ok)")
    g.add_argument("--videos-per-batch", type=int, default=4, help="videos per actor call")
    g.add_argument(
        "--memory-per-worker",
        type=float,
        default=None,
        metavar="GB",
        help="memory Ray reserves per actor (about 1.5-2 GB for 1080p videos)",
    )


def engine_options(args: argparse.Namespace) -> dict[str, Any]:
    """EngineConfig fields from the options of ``_add_engine_options`` (as ``dfe predict``)."""
    options = {
        "backend": args.backend,
        "detector": args.detector,
        "models_dir": args.models,
        "download": not args.no_download,
        "detector_input": args.input_size,
        "score_threshold": args.score_threshold,
        "batch_size": args.batch_size,
        "face": args.face,
        "margin": args.margin,
        "no_face": args.no_face,
        "crop_style": args.crop_style,
    }
    if getattr(args, "precision", None):
        options["precision"] = args.precision
    if args.threads:
        options["intra_op_threads"] = args.threads
    return options


def ray_options(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "num_workers": args.num_workers,
        "cpus_per_worker": args.cpus_per_worker,
        "gpus_per_worker": args.gpus_per_worker,
        "videos_per_batch": args.videos_per_batch,
        "memory_per_worker_gb": args.memory_per_worker,
    }


def init_ray(address: str | None) -> None:
    from engine.distributed import require_ray

    ray = require_ray()
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = sys.stderr.isatty()


def register(sub: argparse._SubParsersAction) -> None:
    from engine.cli import _add_engine_options

    p = sub.add_parser(
        "score",
        help="score videos into a Parquet/JSONL dataset, on Ray with --ray; reruns resume",
        description="Score videos (files, directories, globs) into OUT, a directory named "
        "*.parquet or *.jsonl that holds one record per video (the `dfe predict` record; "
        "`timings` and `boxes` stored as JSON strings). Videos already in OUT are skipped. "
        "With --ray, Ray Data scores them on an actor pool (one Engine per actor).",
    )
    p.add_argument("inputs", nargs="+", help="video files, directories or glob patterns")
    p.add_argument("--model", required=True, type=Path, help="exported model directory")
    p.add_argument("--out", required=True, type=Path, help="OUT.parquet or OUT.jsonl (directory)")
    p.add_argument("--seq-len", type=int, default=None, help="frames per video")
    p.add_argument("--sampling", choices=("first", "uniform"), default="first")
    add_ray_options(p)
    _add_engine_options(p)
    p.set_defaults(func=run)


def _score_locally(paths: list[str], model: Path, out: Path, args: argparse.Namespace) -> None:
    """Without Ray: the in-process pipeline, writing one file into OUT in the same layout."""
    import json

    from engine import distributed
    from engine.api import Engine

    engine = Engine.load(model, **engine_options(args))
    preds = engine.predict_many(paths, seq_len=args.seq_len, sampling=args.sampling)
    records = [p.to_record() for p in preds]
    out.mkdir(parents=True, exist_ok=True)
    name = f"local_{uuid.uuid4().hex}"
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
    from engine.cli import EXIT_OK, EXIT_PARTIAL

    distributed.output_format(args.out)
    paths = list(expand_inputs(args.inputs))
    t0 = time.perf_counter()
    done = {r["video"] for r in distributed.read_records(args.out)}
    todo = [p for p in paths if p not in done]
    if todo and args.ray:
        init_ray(args.address)
        distributed.score(
            todo,
            args.model,
            args.out,
            resume=False,
            seq_len=args.seq_len,
            sampling=args.sampling,
            **ray_options(args),
            **engine_options(args),
        )
    elif todo:
        _score_locally(todo, args.model, args.out, args)
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
