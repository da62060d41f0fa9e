"""Scoring on a Ray cluster with Ray Data: one video path per row, a stateful actor pool.

Each actor loads the :class:`~engine.api.Engine` once and scores its batches of paths with
``predict_many`` (decode and detection happen in the actor, next to the classifier). A video
that fails becomes an error record inside the actor, so a bad file never fails the job; an actor
that dies (out of memory, a crashed decoder) is restarted by Ray and its batch retried, and
because a batch's records leave the actor only when the whole batch is done, nothing is lost or
written twice. A retried batch is scored one video at a time, with each attempt noted in a small
ledger actor shared by the pool; a video whose scoring killed the worker ``MAX_CRASHES`` times
gets an error record instead of another try, so one poisonous file cannot stall the job.

Records are the ones ``dfe predict`` writes, with two columns stored as JSON strings so every
block has the same Arrow schema in Parquet and JSONL: ``timings`` (a dict whose keys vary by
outcome) and ``boxes`` (a list of ``[x1, y1, x2, y2]`` or ``null``). :func:`read_records` reads
an output back and restores both, giving exactly the ``dfe predict`` records.

Ray is optional (the ``ray`` extra) and imported only here, lazily.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
import uuid
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.compute import default_decode_workers
from core.config import GPU_BACKENDS, EngineConfig, RayConfig, SequenceConfig
from core.errors import InvalidInputError, MissingDependencyError
from core.paths import env
from engine.batch import ResumePlan
from engine.batch import output_format as batch_output_format
from engine.records import (
    arrow_schema,
    decode_json_columns,
    encode_json_columns,
    error_record,
)

if TYPE_CHECKING:
    import pyarrow as pa
    import ray.data

log = logging.getLogger(__name__)

OUTPUT_FORMATS = (".parquet", ".jsonl")
# Test hook: "SUBSTRING:MARKER" makes the first actor call whose batch holds a path containing
# SUBSTRING kill its worker process (os._exit) once, creating MARKER so the retry succeeds.
CRASH_ONCE_ENV = "DFE_RAY_CRASH_ONCE"
# Test hook: kill the worker whenever it is about to score a path containing this substring.
CRASH_ALWAYS_ENV = "DFE_RAY_CRASH_ALWAYS"
# A video whose scoring killed its worker this many times gets an error record, not another try.
MAX_CRASHES = 2
_LEDGERS: dict[str, Any] = {}  # ledger actors of datasets built here, kept alive by name


def require_ray() -> Any:
    """Import ``ray`` (with Ray Data) or raise :class:`MissingDependencyError` naming the extra."""
    try:
        import ray
        import ray.data
    except ImportError as exc:
        raise MissingDependencyError(
            f"Ray Data is needed for --ray / engine.distributed but could not be imported ({exc}); "
            "install it with: pip install 'deepfake-engine[ray]'"
        ) from exc
    return ray


def record_schema() -> pa.Schema:
    """The Arrow schema of one scored video: :func:`engine.records.arrow_schema`."""
    return arrow_schema()


encode_record = encode_json_columns
decode_record = decode_json_columns


def records_table(records: Sequence[dict[str, Any]]) -> pa.Table:
    import pyarrow as pa

    schema = record_schema()
    rows = [encode_record(r) for r in records]
    return pa.Table.from_pylist([{f.name: r.get(f.name) for f in schema} for r in rows], schema)


def default_cpus_per_worker(cluster_cpus: float, num_workers: int) -> float:
    """CPUs to reserve per actor: up to one each, but always leaving one CPU of the cluster (at
    least a quarter per actor) for Ray Data's other tasks, so the pipeline never starves."""
    spare = (cluster_cpus - 1.0) / max(num_workers, 1)
    return round(min(1.0, max(0.25, spare)), 3)


class AttemptLedger:
    """A Ray actor shared by a scoring pool: how many attempts at each key (a batch, or one
    video) started and never finished, i.e. died with their worker."""

    def __init__(self) -> None:
        self.unfinished: dict[str, int] = {}

    def start(self, key: str) -> int:
        """Note an attempt at ``key``; the number of earlier attempts that never finished."""
        before = self.unfinished.get(key, 0)
        self.unfinished[key] = before + 1
        return before

    def finish(self, key: str) -> None:
        self.unfinished.pop(key, None)


class VideoScorer:
    """The actor: loads the Engine once, scores batches of paths, never raises for a video."""

    def __init__(
        self,
        model_dir: str,
        sequence: SequenceConfig,
        config: EngineConfig,
        crash_once: str | None = None,
        crash_always: str | None = None,
        ledger: str | None = None,
    ) -> None:
        from engine.api import Engine

        self.engine = Engine.load(model_dir, config=config)
        self.seq_len = sequence.seq_len
        self.sampling = sequence.sampling
        self.crash_once = crash_once
        self.crash_always = crash_always
        self.ledger = require_ray().get_actor(ledger) if ledger else None

    def _maybe_crash(self, paths: list[str]) -> None:
        if self.crash_always and any(self.crash_always in p for p in paths):
            os._exit(1)  # simulate a video that kills its worker every time (a decoder segfault)
        if not self.crash_once:
            return
        needle, _, marker = self.crash_once.partition(":")
        if any(needle in p for p in paths) and marker and not os.path.exists(marker):
            Path(marker).write_text(str(os.getpid()))
            os._exit(1)  # simulate a worker killed mid-batch (OOM, segfault)

    def _start(self, key: str) -> int:
        return 0 if self.ledger is None else require_ray().get(self.ledger.start.remote(key))

    def _finish(self, key: str) -> None:
        if self.ledger is not None:
            require_ray().get(self.ledger.finish.remote(key))

    def __call__(self, batch: dict[str, Any]) -> pa.Table:
        paths = [str(p) for p in batch["video"]]
        batch_key = "batch:" + "\n".join(paths)
        if self._start(batch_key) == 0:
            self._maybe_crash(paths)
            try:
                preds = self.engine.predict_many(
                    paths, seq_len=self.seq_len, sampling=self.sampling
                )
                self._finish(batch_key)
                return records_table([p.to_record() for p in preds])
            except Exception as exc:  # never fail the job: score one by one, find the culprit
                log.warning("batch of %d failed (%s); scoring one by one", len(paths), exc)
        else:
            log.warning("an earlier attempt at this batch of %d died; one by one", len(paths))
        records = [self._score_one(path) for path in paths]
        self._finish(batch_key)
        return records_table(records)

    def _error(self, path: str, message: str) -> dict[str, Any]:
        """An error record made here (not by the pipeline), with the provenance it would have
        had, so that ``--resume`` knows its input and retries it."""
        from engine.provenance import input_identity

        try:
            prov = self.engine.job_provenance(self.seq_len, self.sampling)
            prov = {**prov, "input": input_identity(path)}
        except Exception:  # the record must still be written
            prov = {"input": input_identity(path)}
        return error_record(path, message, provenance=prov)

    def _score_one(self, path: str) -> dict[str, Any]:
        crashes = self._start("video:" + path)
        if crashes >= MAX_CRASHES:
            log.error("%s killed its worker %d times; recorded as an error", path, crashes)
            return self._error(
                path,
                f"WorkerCrashed: scoring this video killed the worker process {crashes} times "
                "(a crash in decoding or inference, or out of memory); it was not tried again. "
                "Check the file (ffprobe), or score it alone with dfe predict to see the error",
            )
        self._maybe_crash([path])
        try:
            (pred,) = self.engine.predict_many([path], seq_len=self.seq_len, sampling=self.sampling)
            record = pred.to_record()
        except Exception as one:
            record = self._error(path, f"{type(one).__name__}: {one}")
        self._finish("video:" + path)
        return record


#: ``--out`` of a Ray job (a directory Ray writes files into): its format, one of
#: :data:`OUTPUT_FORMATS` (:func:`engine.batch.output_format`, which raises InvalidInputError).
output_format = functools.partial(
    batch_output_format,
    formats=OUTPUT_FORMATS,
    note=" for a Ray job (a directory Ray writes files into)",
)


def record_files(out: str | os.PathLike[str]) -> list[Path]:
    """The record files of an output directory, sorted (hidden and temporary files are not
    records: a file is renamed into place only once it is complete)."""
    out = Path(out)
    if not out.is_dir():
        return []
    suffixes = (".parquet",) if output_format(out) == ".parquet" else (".json", ".jsonl")
    return sorted(p for p in out.iterdir() if p.suffix in suffixes and not p.name.startswith("."))


def check_record_folder(out: str | os.PathLike[str]) -> None:
    """Refuse an output folder that holds anything but record files (and the hidden files
    scoring jobs make next to them): ``--resume`` and ``--overwrite`` rewrite and replace the
    folder, which must never take a user's other files with it."""
    out = Path(out)
    if not out.is_dir():
        return
    records = set(record_files(out))
    others = sorted(
        p.name for p in out.iterdir() if p not in records and not p.name.startswith(".")
    )
    if others:
        more = " ..." if len(others) > 5 else ""
        raise InvalidInputError(
            f"--out {out} holds files that are not scoring records ({', '.join(others[:5])}"
            f"{more}); dfe score rewrites and replaces its folder, so it must be its own: "
            "choose another --out"
        )


def read_file_records(path: Path) -> tuple[list[dict[str, Any]], bool]:
    """The records of one file of an output directory, decoded, and whether it was damaged
    (a JSON Lines file whose last line is torn: its complete lines are returned). Raises
    ``OSError`` or ``ValueError`` (pyarrow's errors included) for a file that cannot be read
    at all (a Parquet file a killed writer left without its footer)."""
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        return [decode_record(r) for r in pq.read_table(path).to_pylist()], False
    text = path.read_text()
    lines = text.split("\n")
    torn = bool(text) and not text.endswith("\n")
    if torn:
        lines.pop()
    return [decode_record(json.loads(line)) for line in lines if line.strip()], torn


def read_dataset(
    out: str | os.PathLike[str],
) -> tuple[list[dict[str, Any]], list[Path], list[Path]]:
    """(records, the files they came from, the damaged files) of an output directory: a file
    that cannot be read at all gives no record (its videos count as not scored); a JSON Lines
    file with a torn last line gives its complete records and is listed as damaged too. Needs
    pyarrow for Parquet, not Ray."""
    records: list[dict[str, Any]] = []
    files: list[Path] = []
    damaged: list[Path] = []
    for f in record_files(out):
        try:
            got, torn = read_file_records(f)
        except Exception as exc:  # pyarrow raises its own types for a torn file
            log.warning("%s cannot be read (%s): its videos count as not scored", f, exc)
            damaged.append(f)
            continue
        records.extend(got)
        files.append(f)
        if torn:
            damaged.append(f)
    return records, files, damaged


def read_records(out: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The records of a scoring job's output directory (``*.parquet`` or ``*.jsonl``), decoded
    to the ``dfe predict`` form. Empty when it does not exist yet; a file that cannot be read
    (left half written by a killed job) is skipped with a warning. Needs pyarrow, not Ray."""
    return read_dataset(out)[0]


def write_records_file(out: Path, name: str, records: Sequence[dict[str, Any]]) -> Path:
    """Write ``records`` as one file ``name`` + the directory's suffix (``.parquet`` or
    ``.json``) in ``out``: a hidden temporary file first, synced, renamed into place, so a
    reader never sees a half-written file."""
    suffix = ".parquet" if output_format(out) == ".parquet" else ".json"
    final = out / f"{name}{suffix}"
    tmp = out / f".{name}{suffix}.tmp"
    try:
        if suffix == ".parquet":
            import pyarrow.parquet as pq

            pq.write_table(records_table(records), tmp)
        else:
            with tmp.open("w") as f:
                for r in records:
                    f.write(json.dumps(encode_record(r)) + "\n")
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, final)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        from core.errors import OutputError

        raise OutputError(
            f"writing {final} failed: {exc.strerror or exc}. The files already in {out} are "
            "complete; free some space (or choose another --out) and run the same command with "
            "--resume to score the rest"
        ) from exc
    return final


def resume_dataset(
    out: Path, paths: list[str], current: dict[str, Any], *, content: bool = False
) -> ResumePlan:
    """:func:`engine.batch.plan_resume` for an output directory, carried out: when records
    must go (error records retried, changed inputs, a second record of one input, unreadable
    files), the records that stay are written to one new file and the old files removed, so
    the directory holds one record per input once the job ends. Killed in between, the next
    resume finds each kept record twice and keeps one."""

    from engine.batch import Entry, plan_resume

    records, files, damaged = read_dataset(out)
    plan = plan_resume([Entry(r, "") for r in records], paths, current, content=content, out=out)
    plan.unreadable = len(damaged)
    if plan.rewrite:
        kept = [e.record for e in plan.keep]
        if kept:
            write_records_file(out, f"resumed_{uuid.uuid4().hex}", kept)
        for f in {*files, *damaged}:
            f.unlink(missing_ok=True)
    return plan


def actor_config(
    config: EngineConfig, sequence: SequenceConfig, cpus: float, gpus: float = 0.0
) -> EngineConfig:
    """The config an actor with ``cpus`` CPUs (and ``gpus`` GPUs) reserved runs: unless given,
    as many network calls at once as its CPUs (at least 1), as many videos decoded at once as
    :func:`~core.compute.default_decode_workers` gives for those CPUs and
    ``sequence.sampling``, and ``ort-cuda`` for ``backend="auto"`` with GPUs. Sized by the
    reservation, not by the node's cores: Ray does not pin an actor to its CPUs."""
    cores = max(1, int(cpus))
    if not config.intra_op_threads and not config.compute_workers:
        config = config.replace(compute_workers=cores)
    if gpus > 0 and config.backend == "auto":
        config = config.replace(backend="ort-cuda")
    if not config.decode_workers:
        on_cpu = config.backend_name not in GPU_BACKENDS
        config = config.replace(
            decode_workers=default_decode_workers(sequence.sampling, cores, on_cpu=on_cpu)
        )
    return config


def build_dataset(
    paths: Iterable[str | os.PathLike[str]],
    model_dir: str | os.PathLike[str],
    *,
    config: EngineConfig | None = None,
    sequence: SequenceConfig | None = None,
    layout: RayConfig | None = None,
) -> ray.data.Dataset:
    """A lazy Ray Dataset of ``dfe predict`` records (storage form, see :func:`read_records`)
    for ``paths``, scored by an actor pool of ``layout.num_workers`` Engines.

    Each actor receives the frozen ``config`` (:class:`~core.config.EngineConfig`) and
    ``sequence`` (:class:`~core.config.SequenceConfig`) objects. Call it after
    ``ray.init`` (it reads the cluster's CPUs to size ``cpus_per_worker`` when not given). An
    actor runs as many network calls at once, one ONNX Runtime thread each, as the CPUs reserved
    for it (at least 1; :mod:`core.compute`) unless ``config.intra_op_threads`` or
    ``config.compute_workers`` is set, and decodes as many videos at once as
    :func:`~core.compute.default_decode_workers` gives for those CPUs unless
    ``config.decode_workers`` is set; with GPUs per actor and ``backend="auto"`` the actors
    run ``ort-cuda``. ``layout.memory_per_worker`` (GB) reserves memory per actor in Ray's
    scheduler (an actor scoring 1080p videos peaks near 1.5 GiB), so a node is never given more
    actors than it can hold.
    """
    ray = require_ray()
    config = config or EngineConfig()
    sequence = sequence or SequenceConfig()
    layout = layout or RayConfig()
    cpus_per_worker = layout.cpus_per_worker
    if cpus_per_worker is None:
        cpus_per_worker = default_cpus_per_worker(
            ray.cluster_resources().get("CPU", 1.0), layout.num_workers
        )
    config = actor_config(config, sequence, cpus_per_worker, layout.gpus_per_worker)
    videos_per_batch = layout.videos_per_batch
    items = [{"video": str(p)} for p in paths]
    if not items:
        raise InvalidInputError("no inputs to score")
    ledger = f"dfe-ledger-{uuid.uuid4().hex}"
    _LEDGERS[ledger] = ray.remote(num_cpus=0)(AttemptLedger).options(name=ledger).remote()
    # one block per actor call: a retried task (a dead actor) then redoes exactly one batch,
    # whose records had not left the actor, so nothing is lost or written twice
    blocks = math.ceil(len(items) / videos_per_batch)
    ds = ray.data.from_items(items, override_num_blocks=blocks)
    return ds.map_batches(
        VideoScorer,
        batch_size=videos_per_batch,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=layout.num_workers),
        num_cpus=cpus_per_worker,
        num_gpus=layout.gpus_per_worker or None,
        memory=int(layout.memory_per_worker * 2**30) if layout.memory_per_worker else None,
        fn_constructor_kwargs={
            "model_dir": str(model_dir),
            "sequence": sequence,
            "config": config,
            "crash_once": env(CRASH_ONCE_ENV),
            "crash_always": env(CRASH_ALWAYS_ENV),
            "ledger": ledger,
        },
        # Ray Data's actor pools default to max_restarts=-1 and max_task_retries=-1: a dead
        # actor is restarted and its batch retried, which is what we want.
    )


def score(
    paths: Iterable[str | os.PathLike[str]],
    model_dir: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    resume: bool = True,
    config: EngineConfig | None = None,
    sequence: SequenceConfig | None = None,
    layout: RayConfig | None = None,
) -> tuple[int, int]:
    """Score ``paths`` on the connected Ray cluster and write records to ``out`` (a directory
    named ``*.parquet`` or ``*.jsonl``). With ``resume`` (the default) the rules of
    :func:`resume_dataset` apply: videos recorded there as scored, unchanged, with the same
    model and settings are skipped, error records and changed files are scored again and their
    records replaced, and records made with other settings raise
    :class:`~core.errors.InvalidInputError` (nothing scored); new files are added next
    to the old ones. Returns (scored, skipped)."""
    fmt = output_format(out)
    paths = [str(p) for p in paths]
    config = config or EngineConfig()
    sequence = sequence or SequenceConfig()
    todo = paths
    if resume and record_files(out):
        from engine.api import Engine

        layout_ = layout or RayConfig()
        cpus = layout_.cpus_per_worker or 1.0
        engine = Engine.load(
            model_dir, config=actor_config(config, sequence, cpus, layout_.gpus_per_worker)
        )
        current = engine.job_provenance(sequence.seq_len, sequence.sampling)
        todo = resume_dataset(Path(out), paths, current, content=config.hash_inputs).todo
    if not todo:
        return 0, len(paths)
    before = set(_LEDGERS)
    ds = build_dataset(todo, model_dir, config=config, sequence=sequence, layout=layout)
    try:
        if fmt == ".parquet":
            ds.write_parquet(str(out))
        else:
            ds.write_json(str(out))  # JSON Lines files, one record per line
    finally:
        release_ledgers(set(_LEDGERS) - before)
    return len(todo), len(paths) - len(todo)


def release_ledgers(names: Iterable[str]) -> None:
    """Kill the attempt ledgers ``names`` (of datasets built here, once they have run)."""
    ray = require_ray()
    for name in names:
        handle = _LEDGERS.pop(name, None)
        if handle is not None:
            ray.kill(handle)


def collect(
    paths: Iterable[str | os.PathLike[str]],
    model_dir: str | os.PathLike[str],
    *,
    config: EngineConfig | None = None,
    sequence: SequenceConfig | None = None,
    layout: RayConfig | None = None,
) -> list[dict[str, Any]]:
    """Score on the cluster and return the decoded records (for ``dfe eval --ray``)."""
    before = set(_LEDGERS)
    try:
        ds = build_dataset(paths, model_dir, config=config, sequence=sequence, layout=layout)
        rows = ds.take_all()
    finally:
        release_ledgers(set(_LEDGERS) - before)
    return [decode_record(r) for r in rows]
