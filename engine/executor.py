"""An overlapped, bounded executor for a three-stage job pipeline (decode, detect, classify).

The stages run at the same time in threads (FFmpeg and ONNX Runtime release the GIL): a pool
of ``decode_workers`` threads runs ``decode`` on one job each; ``detect_workers`` threads gather
decoded jobs into batches of about ``detect_frames`` frames for ``detect``; ``classify_workers``
threads gather detected jobs into batches of about ``classify_frames`` frames for ``classify``,
whose results ``finish`` turns into the values yielded (how the cores are shared by the
network calls of the stages: :mod:`engine.core.compute`). At most ``max_in_flight`` jobs are
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
    """Which decoding threads may decode (``engine.core.compute.DecodeShare`` is one)."""

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
    each decode cost (:class:`DecodeGate`, e.g. :class:`engine.core.compute.DecodeShare`; by
    default all of them). Raises ``ValueError`` for a worker count or ``max_in_flight`` below
    1."""
    for name, count in (
        ("max_in_flight", max_in_flight),
        ("decode_workers", decode_workers),
        ("detect_workers", detect_workers),
        ("classify_workers", classify_workers),
    ):
        if count < 1:
            raise ValueError(f"{name} must be at least 1, got {count}")
    source = iter(jobs)
    gate: DecodeGate = decode_gate or _OPEN_GATE
    todo: queue.Queue = queue.Queue()  # bounded by ``slots``
    slots = threading.Semaphore(max_in_flight)
    stop = threading.Event()
    decoded: queue.Queue = queue.Queue(maxsize=max_in_flight)
    detected: queue.Queue = queue.Queue(maxsize=max_in_flight)
    results: queue.Queue = queue.Queue()

    def isolate(stage: Callable[[list[J]], Any], batch: list[J]) -> list[Any]:
        """``stage(batch)`` as a list aligned with ``batch``; on failure, each job alone, so
        only the culprit gets the error (and None)."""
        try:
            out = stage(batch)
        except Exception as exc:
            if len(batch) == 1:
                batch[0].error = stages.error_text(exc)
                return [None]
            log.debug("a batch of %d failed (%s); retrying one by one", len(batch), exc)
            return [value for job in batch for value in isolate(stage, [job])]
        return [None] * len(batch) if out is None else list(out)

    def decode_one(job: J) -> None:
        try:
            with gate.measure():
                stages.decode(job)
        except Exception as exc:  # recorded per job, never fatal for the run
            job.error = stages.error_text(exc)
        decoded.put(job)

    def decoder(k: int) -> None:
        """Decoding thread ``k``: decodes while the gate gives it a turn, so that with fewer
        turns than threads the same threads do the work (fewer malloc arenas in use). A bug
        that escapes ``decode_one`` stops the run with that exception (the gate is closed, so
        no thread waits for a turn that will not come)."""
        try:
            while gate.wait_turn(k):
                job = todo.get()
                if job is _SENTINEL:
                    return
                if not stop.is_set():  # after a stop, what is queued is dropped
                    decode_one(job)
        except BaseException as exc:
            log.exception("decoding thread %d failed", k)
            stop.set()
            gate.close()
            results.put(exc)

    def feeder() -> None:
        decoders = [
            threading.Thread(target=decoder, args=(k,), name=f"dfe-decode-{k}", daemon=True)
            for k in range(decode_workers)
        ]
        for t in decoders:
            t.start()
        try:
            for job in source:
                slots.acquire()
                if stop.is_set():
                    break
                todo.put(job)
        except Exception as exc:  # the input iterator itself failed
            log.error("reading the list of inputs failed: %s", exc)
            results.put(exc)
        finally:
            for _ in decoders:
                todo.put(_SENTINEL)
            gate.close()  # threads without a turn end; the others decode what is queued
            for t in decoders:
                t.join()
        decoded.put(_SENTINEL)

    def gather(q: queue.Queue, limit: int) -> tuple[list[J], bool]:
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

    def closing(workers: int, q_in: queue.Queue, on_last: Callable[[], None]) -> Callable[[], None]:
        """What a stage worker does at the end of input: pass the sentinel on to the next
        worker of its stage; the last one out calls ``on_last``."""
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

    def detect_stage(close: Callable[[], None]) -> None:
        done = False
        while not done:
            batch, done = gather(decoded, detect_frames)
            live = [j for j in batch if j.error is None]
            if live:
                isolate(stages.detect, live)
            for job in batch:
                detected.put(job)
        close()

    def classify_stage(close: Callable[[], None]) -> None:
        done = False
        while not done:
            batch, done = gather(detected, classify_frames)
            live = [j for j in batch if j.error is None]
            values: dict[int, Any] = {}
            if live:
                out = isolate(stages.classify, live)
                values = {
                    j.index: v for j, v in zip(live, out) if j.error is None and v is not None
                }
            for job in batch:
                results.put((job.index, stages.finish(job, values.get(job.index))))
        close()

    def guarded(stage: Callable[..., None], *args: Any) -> Callable[[], None]:
        def run() -> None:
            try:
                stage(*args)
            except BaseException as exc:  # a bug in a stage: surface it, never hang
                log.exception("pipeline stage %s failed", stage.__name__)
                stop.set()
                results.put(exc)

        return run

    close_detect = closing(detect_workers, decoded, lambda: detected.put(_SENTINEL))
    close_classify = closing(classify_workers, detected, lambda: results.put(_SENTINEL))
    workers = [(feeder, ())]
    workers += [(detect_stage, (close_detect,))] * detect_workers
    workers += [(classify_stage, (close_classify,))] * classify_workers
    threads = [
        threading.Thread(target=guarded(f, *args), name=f"dfe-{f.__name__}", daemon=True)
        for f, args in workers
    ]
    for t in threads:
        t.start()

    pending: dict[int, R] = {}
    next_index = 0
    try:
        while True:
            item = results.get()
            if item is _SENTINEL:
                break
            if isinstance(item, BaseException):
                raise item
            index, result = item
            if not ordered:
                slots.release()
                yield result
                continue
            pending[index] = result
            while next_index in pending:
                slots.release()
                yield pending.pop(next_index)
                next_index += 1
        for index in sorted(pending):  # only if a stage lost an index
            yield pending.pop(index)
    finally:
        stop.set()
        for _ in range(max_in_flight + 1):
            slots.release()
