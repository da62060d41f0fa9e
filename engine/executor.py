"""An overlapped, bounded executor for a three-stage job pipeline (decode, detect, classify).

The stages run at the same time in threads (FFmpeg and ONNX Runtime release the GIL): a pool
of ``decode_workers`` threads runs ``decode`` on one job each; ``detect_workers`` threads gather
decoded jobs into batches of about ``detect_frames`` frames for ``detect``; ``classify_workers``
threads gather detected jobs into batches of about ``classify_frames`` frames for ``classify``,
whose results ``finish`` turns into the values yielded (how the cores are shared by the
network calls of the stages: :mod:`core.compute`). At most ``max_in_flight`` jobs are
between decoding and their result
at any time, so memory stays bounded over any job length.

A stage that raises for a batch is retried one job at a time to find the culprit, whose
``error`` is set; the others go on. A job with ``error`` set skips the later stages and still
reaches ``finish``, so every input gets exactly one result. A bug that escapes a stage stops the
run with that exception instead of hanging it.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

log = logging.getLogger(__name__)


class Job(Protocol):
    """What the executor needs of a job: its input position, its size, and an error slot."""

    index: int
    error: str | None

    @property
    def size(self) -> int: ...


J = TypeVar("J", bound=Job)
R = TypeVar("R")
_SENTINEL = object()


@dataclass(frozen=True)
class Stages(Generic[J, R]):
    """The stage callables. ``decode(job)`` and ``detect(jobs)`` fill the jobs in place;
    ``classify(jobs)`` returns a per-job value (by position) handed to ``finish(job, value)``
    (``None`` for a job that failed); ``error_text`` turns an exception into a job's error."""

    decode: Callable[[J], None]
    detect: Callable[[list[J]], None]
    classify: Callable[[list[J]], list[Any]]
    finish: Callable[[J, Any], R]
    error_text: Callable[[BaseException], str]


class DecodeGate(Protocol):
    """Which decoding threads may decode (``core.compute.DecodeShare`` is one)."""

    def wait_turn(self, decoder: int) -> bool:
        """Block decoding thread ``decoder`` (0-based) until it may take the next video (True),
        or until the input is over while it had no turn (False: the thread ends)."""

    def measure(self) -> AbstractContextManager[Any]:
        """A context around one video's decoding (the gate may time it)."""

    def close(self) -> None:
        """The input is over: threads waiting for a turn end; those with one finish the
        queued videos."""


class _OpenGate:
    """Every thread decodes (a fixed ``decode_workers``)."""

    def wait_turn(self, decoder: int) -> bool:
        return True

    def measure(self) -> AbstractContextManager[Any]:
        return nullcontext()

    def close(self) -> None:
        return None


_OPEN_GATE = _OpenGate()


def run_overlapped(
    jobs: Iterable[J],
    stages: Stages[J, R],
    *,
    decode_workers: int,
    max_in_flight: int,
    detect_frames: int,
    classify_frames: int,
    ordered: bool = True,
    detect_workers: int = 1,
    classify_workers: int = 1,
    decode_gate: DecodeGate | None = None,
) -> Iterator[R]:
    """Run ``jobs`` through ``stages``; yield one result per job, in input order (``ordered``)
    or as they finish. The ``jobs`` iterable is consumed lazily (at most ``max_in_flight`` ahead
    of the results taken). ``detect_workers``/``classify_workers``: threads calling ``detect``/
    ``classify`` at the same time (the stage callables must then be thread-safe).
    ``decode_gate``: which of the ``decode_workers`` decoding threads may decode now, and what
    each decode cost (:class:`DecodeGate`, e.g. :class:`core.compute.DecodeShare`; by
    default all of them). Raises ``ValueError`` for a worker count or ``max_in_flight`` below
    1 (when the first result is asked for: this is a generator, and nothing starts before)."""
    for name, count in (
        ("max_in_flight", max_in_flight),
        ("decode_workers", decode_workers),
        ("detect_workers", detect_workers),
        ("classify_workers", classify_workers),
    ):
        if count < 1:
            raise ValueError(f"{name} must be at least 1, got {count}")
    run = _Overlapped(
        jobs,
        stages,
        decode_workers=decode_workers,
        max_in_flight=max_in_flight,
        detect_frames=detect_frames,
        classify_frames=classify_frames,
        detect_workers=detect_workers,
        classify_workers=classify_workers,
        gate=decode_gate or _OPEN_GATE,
    )
    run.start()
    yield from run.results(ordered)


class _Overlapped(Generic[J, R]):
    """One run of :func:`run_overlapped`: its queues and threads.

    Jobs flow ``source`` -> ``todo`` (the feeder; ``slots`` bounds the jobs in flight) ->
    decoding threads -> ``decoded`` -> detect workers -> ``detected`` -> classify workers ->
    ``results_q`` -> :meth:`results` (which gives a slot back per result yielded). ``decoded``
    and ``detected`` hold at most ``max_in_flight`` jobs; ``todo`` and ``results_q`` are
    bounded by the slots. The end of input travels as ``_SENTINEL`` through the queues; an
    exception put on ``results_q`` (a failed input iterator, a bug in a stage) is raised to
    the consumer. ``stop`` is set when the run stops early: the feeder takes no more jobs and
    what is queued for decoding is dropped."""

    def __init__(
        self,
        jobs: Iterable[J],
        stages: Stages[J, R],
        *,
        decode_workers: int,
        max_in_flight: int,
        detect_frames: int,
        classify_frames: int,
        detect_workers: int,
        classify_workers: int,
        gate: DecodeGate,
    ) -> None:
        self.source = iter(jobs)
        self.stages = stages
        self.gate = gate
        self.decode_workers = decode_workers
        self.detect_workers = detect_workers
        self.classify_workers = classify_workers
        self.max_in_flight = max_in_flight
        self.detect_frames = detect_frames
        self.classify_frames = classify_frames
        self.todo: queue.Queue = queue.Queue()  # bounded by ``slots``
        self.slots = threading.Semaphore(max_in_flight)
        self.stop = threading.Event()
        self.decoded: queue.Queue = queue.Queue(maxsize=max_in_flight)
        self.detected: queue.Queue = queue.Queue(maxsize=max_in_flight)
        self.results_q: queue.Queue = queue.Queue()

    # -------------------------------------------------------------- threads

    def start(self) -> None:
        """Start the feeder (which starts the decoding threads), ``detect_workers`` detect and
        ``classify_workers`` classify threads (daemons, named ``dfe-<step>``)."""
        close_detect = _closing(
            self.detect_workers, self.decoded, lambda: self.detected.put(_SENTINEL)
        )
        close_classify = _closing(
            self.classify_workers, self.detected, lambda: self.results_q.put(_SENTINEL)
        )
        workers: list[tuple[Callable[..., None], tuple[Any, ...]]] = [(self.feeder, ())]
        workers += [(self.detect_stage, (close_detect,))] * self.detect_workers
        workers += [(self.classify_stage, (close_classify,))] * self.classify_workers
        threads = [
            threading.Thread(target=self.guarded(f, *args), name=f"dfe-{f.__name__}", daemon=True)
            for f, args in workers
        ]
        for t in threads:
            t.start()

    def guarded(self, stage: Callable[..., None], *args: Any) -> Callable[[], None]:
        """``stage(*args)`` for a thread: a bug that escapes it stops the run and is raised to
        the consumer (never a hang)."""

        def run() -> None:
            try:
                stage(*args)
            except BaseException as exc:  # a bug in a stage: surface it, never hang
                log.exception("pipeline stage %s failed", stage.__name__)
                self.stop.set()
                self.results_q.put(exc)

        return run

    # -------------------------------------------------------------- decoding (the producer)

    def feeder(self) -> None:
        """The producer: start the decoding threads, queue the input's jobs for them as slots
        free up (a failed input iterator is raised to the consumer), then end the decoding
        threads, wait for them, and pass the end of input on to the detect workers."""
        decoders = [
            threading.Thread(target=self.decoder, args=(k,), name=f"dfe-decode-{k}", daemon=True)
            for k in range(self.decode_workers)
        ]
        for t in decoders:
            t.start()
        try:
            for job in self.source:
                self.slots.acquire()
                if self.stop.is_set():
                    break
                self.todo.put(job)
        except Exception as exc:  # the input iterator itself failed
            log.error("reading the list of inputs failed: %s", exc)
            self.results_q.put(exc)
        finally:
            for _ in decoders:
                self.todo.put(_SENTINEL)
            self.gate.close()  # threads without a turn end; the others decode what is queued
            for t in decoders:
                t.join()
        self.decoded.put(_SENTINEL)

    def decoder(self, k: int) -> None:
        """Decoding thread ``k``: decodes while the gate gives it a turn, so that with fewer
        turns than threads the same threads do the work (fewer malloc arenas in use). A bug
        that escapes ``decode_one`` stops the run with that exception (the gate is closed, so
        no thread waits for a turn that will not come)."""
        try:
            while self.gate.wait_turn(k):
                job = self.todo.get()
                if job is _SENTINEL:
                    return
                if not self.stop.is_set():  # after a stop, what is queued is dropped
                    self.decode_one(job)
        except BaseException as exc:
            log.exception("decoding thread %d failed", k)
            self.stop.set()
            self.gate.close()
            self.results_q.put(exc)

    def decode_one(self, job: J) -> None:
        """Decode ``job`` (a failure is the job's ``error``, never fatal for the run) and pass
        it on to the detect workers."""
        try:
            with self.gate.measure():
                self.stages.decode(job)
        except Exception as exc:  # recorded per job, never fatal for the run
            job.error = self.stages.error_text(exc)
        self.decoded.put(job)

    # -------------------------------------------------------------- detect and classify

    def detect_stage(self, close: Callable[[], None]) -> None:
        """A detect worker: batches of about ``detect_frames`` decoded frames through
        ``detect`` (jobs with an error pass untouched), on to the classify workers."""
        done = False
        while not done:
            batch, done = _gather(self.decoded, self.detect_frames)
            live = [j for j in batch if j.error is None]
            if live:
                self.isolate(self.stages.detect, live)
            for job in batch:
                self.detected.put(job)
        close()

    def classify_stage(self, close: Callable[[], None]) -> None:
        """A classify worker: batches of about ``classify_frames`` frames through
        ``classify``; every job of the batch goes to ``finish`` (with ``None`` for a job
        that failed) and its result to the consumer, tagged with the job's index."""
        done = False
        while not done:
            batch, done = _gather(self.detected, self.classify_frames)
            live = [j for j in batch if j.error is None]
            values: dict[int, Any] = {}
            if live:
                out = self.isolate(self.stages.classify, live)
                values = {
                    j.index: v for j, v in zip(live, out) if j.error is None and v is not None
                }
            for job in batch:
                self.results_q.put((job.index, self.stages.finish(job, values.get(job.index))))
        close()

    def isolate(self, stage: Callable[[list[J]], Any], batch: list[J]) -> list[Any]:
        """``stage(batch)`` as a list aligned with ``batch``; on failure, each job alone, so
        only the culprit gets the error (and None)."""
        try:
            out = stage(batch)
        except Exception as exc:
            if len(batch) == 1:
                batch[0].error = self.stages.error_text(exc)
                return [None]
            log.debug("a batch of %d failed (%s); retrying one by one", len(batch), exc)
            return [value for job in batch for value in self.isolate(stage, [job])]
        return [None] * len(batch) if out is None else list(out)

    # -------------------------------------------------------------- results (the consumer)

    def results(self, ordered: bool) -> Iterator[R]:
        """The results as they come (``ordered=False``) or in input order (held back until
        the jobs before them are done); each result yielded frees one slot for the feeder.
        Raises what a stage or the input iterator raised. On exit (the end, an exception, or
        the consumer closing the generator) the run stops and every waiting feeder is let
        go."""
        pending: dict[int, R] = {}
        next_index = 0
        try:
            while True:
                item = self.results_q.get()
                if item is _SENTINEL:
                    break
                if isinstance(item, BaseException):
                    raise item
                index, result = item
                if not ordered:
                    self.slots.release()
                    yield result
                    continue
                pending[index] = result
                while next_index in pending:
                    self.slots.release()
                    yield pending.pop(next_index)
                    next_index += 1
            for index in sorted(pending):  # only if a stage lost an index
                yield pending.pop(index)
        finally:
            self.stop.set()
            for _ in range(self.max_in_flight + 1):
                self.slots.release()


def _gather(q: queue.Queue, limit: int) -> tuple[list[J], bool]:
    """A batch from ``q``: the next job (waiting for it), then those already queued while the
    batch holds fewer than ``limit`` frames; and whether the end of input was taken."""
    first = q.get()
    if first is _SENTINEL:
        return [], True
    batch, frames = [first], first.size
    while frames < limit:
        try:
            item = q.get_nowait()
        except queue.Empty:
            break
        if item is _SENTINEL:
            return batch, True
        batch.append(item)
        frames += item.size
    return batch, False


def _closing(workers: int, q_in: queue.Queue, on_last: Callable[[], None]) -> Callable[[], None]:
    """What a stage worker does at the end of input: pass the sentinel on to the next worker
    of its stage; the last one out calls ``on_last``."""
    left = [workers]
    lock = threading.Lock()

    def close() -> None:
        with lock:
            left[0] -= 1
            last = left[0] == 0
        if last:
            on_last()
        else:
            q_in.put(_SENTINEL)

    return close
