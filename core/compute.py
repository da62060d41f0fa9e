"""The CPU thread budget: one compute thread per core, shared by the detector and the classifier.

On CPU the engine's network calls (SCRFD on a frame, the classifier on a chunk of frames) run on
**one ONNX Runtime thread each**, and a stage spreads its work over the cores by running several
calls at once in a shared pool of ``workers`` threads (one per usable core by default). FFmpeg
decodes each video on one thread too (``EngineConfig.decode_threads``). Why:

- Multi-threaded kernels synchronise at every operator. When the stages overlap (decode,
  detection and classification at the same time) a thread of one kernel that loses its core to
  another stage stalls the kernel's other threads: measured on 2 cores with
  ``dfe predict`` over 24 1080p videos at N=20, 3 rounds (``benchmarks.throughput``, run
  ``thread-budget`` of ``benchmarks/results/throughput-2core-cpu.json``), ONNX Runtime's and
  FFmpeg's own thread pools spent 1.08 CPU-seconds per video (1.83 videos/s), single-threaded
  calls on this pool 1.00 (1.98 videos/s), for the same records.
- One thread per call is also the most efficient per frame (measured on 2 cores, 1 thread:
  SCRFD ``det_500m`` at 640x384 12.1 ms per frame at batch 1 against 13.1 at batch 4; the
  ResNeXt classifier 24.6 ms per 112x112 frame at batch 20; two threads cost 5-8% more CPU).
- A single video still gets every core: its frames are split into one chunk per worker
  (one 1080p video at N=20 through ``Engine.predict``: 0.60 s against 0.69 s with the old
  pools, measured in-process, not by a committed benchmark).

The pool is shared per worker count (:func:`shared_pool`), so the detector and the classifier
of one engine never run more network calls at once than there are cores.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TypeVar

from core.errors import InvalidInputError

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity, which container CPU sets limit), >= 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return max(1, os.cpu_count() or 1)


class ComputePool:
    """At most ``workers`` calls at once, in threads; one worker runs calls inline.

    Thread-safe. Calls must not themselves wait on the pool (no nesting): the network calls it
    runs are leaves. Raises :class:`InvalidInputError` for ``workers`` < 1.
    """

    def __init__(self, workers: int) -> None:
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise InvalidInputError(f"compute workers must be an integer >= 1, got {workers!r}")
        self.workers = workers
        self._executor: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    def map(self, fn: Callable[[T], R], items: Sequence[T]) -> list[R]:
        """``[fn(item) for item in items]``, up to ``workers`` at a time; the first exception
        raised by a call is raised (after every call has ended)."""
        if self.workers == 1 or len(items) <= 1:
            return [fn(item) for item in items]
        with self._lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(self.workers, thread_name_prefix="dfe-compute")
            executor = self._executor
        futures = [executor.submit(fn, item) for item in items]
        errors = [f.exception() for f in futures]
        for error in errors:
            if error is not None:
                raise error
        return [f.result() for f in futures]

    def chunks(self, count: int, largest: int) -> list[tuple[int, int]]:
        """``(start, stop)`` bounds cutting ``count`` items into as few equal chunks as keep
        every worker busy and no chunk above ``largest``: ``max(ceil(count / largest),
        min(workers, count))`` chunks, sizes differing by at most one."""
        if count <= 0:
            return []
        pieces = max(math.ceil(count / largest), min(self.workers, count))
        base, extra = divmod(count, pieces)
        bounds, start = [], 0
        for i in range(pieces):
            stop = start + base + (1 if i < extra else 0)
            bounds.append((start, stop))
            start = stop
        return bounds

    def close(self) -> None:
        """Stop the threads (a later :meth:`map` starts them again)."""
        with self._lock:
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True)


_POOLS: dict[int, ComputePool] = {}
_POOLS_LOCK = threading.Lock()

#: Runs every call inline, in the caller's thread (GPU backends, explicit single worker).
INLINE = ComputePool(1)


def shared_pool(workers: int) -> ComputePool:
    """The process's pool of ``workers`` threads (created on first use), shared by every engine
    that asks for the same count. Raises :class:`InvalidInputError` for ``workers`` < 1."""
    if workers == 1:
        return INLINE
    with _POOLS_LOCK:
        pool = _POOLS.get(workers)
        if pool is None:
            pool = _POOLS[workers] = ComputePool(workers)
        return pool


#: Backends whose network calls run on this process's CPU threads (the budget applies).
CPU_POOL_BACKENDS = ("ort",)
#: Backends whose detector and classifier run on an NVIDIA GPU (the others run on the cores).
GPU_BACKENDS = ("ort-cuda", "ort-tensorrt", "tensorrt", "torch-cuda")


def default_decode_workers(sampling: str, cores: int, *, on_cpu: bool = True) -> int:
    """Videos decoded at once by ``predict_many`` when ``--decode-workers`` is 0 (the default):
    on a GPU backend throughout, on CPU at the start (then :class:`DecodeShare` follows the
    measured share; ``dfe score --ray`` actors keep it).

    ``sampling``: ``"first"`` or ``"uniform"`` (``EngineConfig`` sampling modes); ``cores``: the
    usable cores (>= 1); ``on_cpu``: whether the networks run on these cores too (a CPU
    backend). On a GPU backend: 2. On CPU the decoders get the share of the cores that decoding
    takes of a video's CPU time, so they keep the compute pool fed without competing with it:

    - ``first``: one per two cores. Decoding the first N frames is about a quarter of a 1080p
      video's CPU at N=20 (131 of 579 ms in one thread; :class:`DecodeShare` reads 0.22-0.30).
      Measured on 2 cores, 24 1080p DFDC videos, 3 rounds
      (run ``decode-workers`` of ``benchmarks/results/throughput-2core-cpu.json``): one
      decoding video 3.54 videos/s and 0.56 CPU s per video, two 3.17 and 0.62, peak RSS 1286
      against 1441 MB, identical records (runs whose JSON was not kept: 0.59 against 0.59 and
      0.54 against 0.57 s of CPU, and 0.72 against 0.77 on an Intel host).
    - ``uniform``: one per core. Seeking to N points spread over the video decodes from the
      keyframe before each (~70% of the CPU); one decoding video on 2 cores starved the compute
      pool: 1.17 against 1.57 videos/s, 3 rounds, same records
      (run ``decode-workers-sampling`` of ``benchmarks/results/throughput-2core-cpu.json``,
      which also repeats the ``first`` comparison: 3.17 against 3.11 videos/s, 0.59 against 0.64 s).
    """
    if not on_cpu:
        return 2
    cores = max(1, cores)
    return cores if sampling == "uniform" else max(1, cores // 2)


class DecodeShare:
    """Videos decoded at once, following the share of the process's CPU time that decoding takes.

    ``predict_many`` on a CPU backend with ``--decode-workers 0`` runs ``maximum`` decoding
    threads through this gate (:class:`engine.executor.DecodeGate`): threads 0 to
    :attr:`limit` - 1 decode (:meth:`wait_turn`), ``start`` at first, then, once ``window``
    videos are decoded, about ``ceil(cores * share)`` clamped to 1..``maximum`` (with the
    hysteresis of ``RAISE_MARGIN``), where ``share`` is the decoders' CPU time (each decode's
    ``time.thread_time``: FFmpeg decodes on the calling thread with ``--decode-threads 1``)
    over the process's (``time.process_time``) during the last ``window`` decodes. Why:
    decoding a ``share`` of the work needs ``cores * share`` cores
    to keep the compute pool fed, and every decoder beyond that competes with the compute
    threads for the cores. Measured on 2 cores, ``dfe predict`` at N=20 (shares seen by this
    gate; rates of 24 against 4 videos, 2-3 rounds): the first frames of 1080p clips 0.22-0.30
    (one decoder), uniform sampling's seeks on the same clips 0.58-0.66 (two: 1.57 against 1.17
    videos/s), the first frames of 4K clips 0.38-0.40 with one decoder (the gate stayed at one:
    2.30 videos/s and 1780 MB peak RSS, two decoders 2.10 and 3546 MB;
    run ``decode-share-4k`` of ``benchmarks/results/throughput-2core-cpu.json``), 480p clips
    0.06-0.24 (one). A job of mixed videos follows its recent ones.

    Thread-safe. ``clock`` and ``thread_clock`` (seconds) are injectable for tests. Raises
    :class:`InvalidInputError` for counts below 1 or ``start`` above ``maximum``.
    """

    #: A decoder is added only when decoding needs more than ``RAISE_MARGIN`` of a core beyond
    #: the current decoders, and removed when the others suffice (hysteresis): a decoder more
    #: costs CPU (contention, one more malloc arena). Measured on 2 cores (24 against 4
    #: videos, 2 rounds, an ad-hoc driver of ``benchmarks.throughput.run_ours`` whose JSON was
    #: not kept): INT8 on the 4K clips read shares of 0.45-0.52 and ran faster with one decoder
    #: (3.40 against 3.03 videos/s, 1559 against 3367 MB); uniform sampling read 0.58-0.66 and
    #: ran faster with two (committed JSON above): 2 x 0.55 lies between. With the margin, INT8
    #: on 4K stays at one (2.62 videos/s, 1629 MB; ``--decode-workers 1``: 2.60, 1608 MB;
    #: run ``decode-share-4k`` of ``throughput-2core-cpu.json``).
    RAISE_MARGIN = 0.1

    def __init__(
        self,
        cores: int,
        start: int,
        maximum: int,
        *,
        window: int = 8,
        clock: Callable[[], float] = time.process_time,
        thread_clock: Callable[[], float] = time.thread_time,
    ) -> None:
        if min(cores, start, maximum, window) < 1 or start > maximum:
            raise InvalidInputError(
                f"decode share needs cores, start, maximum, window >= 1 and start <= maximum, "
                f"got {cores}, {start}, {maximum}, {window}"
            )
        self.cores, self.maximum, self.limit = cores, maximum, start
        self._clock, self._thread_clock = clock, thread_clock
        self._cond = threading.Condition()
        self._closed = False
        self._decode_cpu = 0.0
        # (process CPU, decoders' CPU so far) after each decode, the last ``window`` + 1
        self._marks: deque[tuple[float, float]] = deque([(clock(), 0.0)], maxlen=window + 1)
        self.share: float | None = None

    def wait_turn(self, decoder: int) -> bool:
        """Block decoding thread ``decoder`` (0-based) while ``decoder >= limit`` (threads
        ``0 .. limit-1`` decode, so the same threads keep doing the work): True when it may
        take the next video, False when the input ended (:meth:`close`) while it waited."""
        with self._cond:
            while decoder >= self.limit:
                if self._closed:
                    return False
                self._cond.wait()
            return True

    @contextmanager
    def measure(self) -> Iterator[None]:
        """Time one video's decoding on this thread's CPU clock and update :attr:`limit`."""
        start = self._thread_clock()
        try:
            yield
        finally:
            spent = self._thread_clock() - start
            with self._cond:
                self._decode_cpu += spent
                self._marks.append((self._clock(), self._decode_cpu))
                self._update()
                self._cond.notify_all()

    def close(self) -> None:
        """The input is over: threads waiting for a turn end (:meth:`wait_turn` gives False);
        those with one decode what is queued."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def _update(self) -> None:
        if len(self._marks) < self._marks.maxlen:
            return
        (t0, d0), (t1, d1) = self._marks[0], self._marks[-1]
        if t1 <= t0:
            return
        self.share = min(1.0, (d1 - d0) / (t1 - t0))
        need = self.cores * self.share  # cores' worth of decoding
        limit = self.limit
        if need > limit + self.RAISE_MARGIN:
            limit = min(self.maximum, math.ceil(need - self.RAISE_MARGIN))
        elif need <= limit - 1:
            limit = max(1, math.ceil(need - 1e-9))
        if limit != self.limit:
            log.debug(
                "decoding takes %.0f%% of the CPU: %d video(s) decoded at once",
                100 * self.share,
                limit,
            )
            self.limit = limit


@dataclass(frozen=True)
class ThreadBudget:
    """How the engine's threads share the cores (see the module docstring).

    ``threads``: ONNX Runtime threads per classifier call (0: ONNX Runtime's own default);
    ``detector_threads``: the same for SCRFD; ``workers``: network calls at once
    (:func:`shared_pool`); ``decode_workers``: videos decoded at once by ``predict_many`` (each
    on ``EngineConfig.decode_threads`` FFmpeg threads; 0: the default, :meth:`decode_plan`);
    ``cores``: the usable cores it was resolved for; ``on_cpu``: whether the networks run on
    them. On a CPU backend the defaults are one thread per call and one worker per usable core;
    ``--threads`` T (or ``$DFE_ORT_THREADS``) gives ``cores // T`` workers;
    ``--compute-workers`` and ``--decode-workers`` set the counts. GPU backends keep one call
    at a time and ONNX Runtime's own threads (their kernels do not run on these cores).
    """

    threads: int
    detector_threads: int
    workers: int
    decode_workers: int = 0
    cores: int = 1
    on_cpu: bool = True

    @classmethod
    def resolve(
        cls,
        backend: str,
        *,
        intra_op_threads: int = 0,
        detector_threads: int | None = None,
        compute_workers: int = 0,
        decode_workers: int = 0,
        cores: int | None = None,
    ) -> ThreadBudget:
        """The budget of ``backend`` (a canonical backend name) from the config's values
        (``EngineConfig.intra_op_threads``, ``detector_threads``, ``compute_workers``,
        ``decode_workers``; 0 or None: the default) on ``cores`` cores (default
        :func:`usable_cores`). Raises :class:`InvalidInputError` for a negative count."""
        from core.onnx_session import default_threads

        counts = {"compute_workers": compute_workers, "decode_workers": decode_workers}
        for name, value in counts.items():
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise InvalidInputError(f"{name} must be an integer >= 0, got {value!r}")
        threads = default_threads(intra_op_threads)
        cores = cores or usable_cores()
        on_cpu = backend not in GPU_BACKENDS
        if backend not in CPU_POOL_BACKENDS:
            det = threads if detector_threads is None else detector_threads
            return cls(threads, det, compute_workers or 1, decode_workers, cores, on_cpu)
        threads = threads or 1
        det = threads if detector_threads is None else detector_threads
        workers = compute_workers or max(1, cores // threads)
        return cls(threads, det, workers, decode_workers, cores, on_cpu)

    def decode_plan(self, sampling: str = "first") -> tuple[int, DecodeShare | None]:
        """(decoding threads, gate) of ``predict_many`` for ``sampling``: a count that was
        asked for, or a GPU backend's, is fixed (no gate); on a CPU backend by default one
        thread per core behind a :class:`DecodeShare` gate that starts at
        :func:`default_decode_workers` and follows decoding's share of the CPU."""
        if self.decode_workers or not self.on_cpu:
            return self.decoding(sampling), None
        return self.cores, DecodeShare(self.cores, self.decoding(sampling), self.cores)

    def decoding(self, sampling: str = "first") -> int:
        """Videos decoded at once by ``predict_many`` for ``sampling``: ``decode_workers`` when
        set, else :func:`default_decode_workers` (on CPU the start of :class:`DecodeShare`)."""
        return self.decode_workers or default_decode_workers(
            sampling, self.cores, on_cpu=self.on_cpu
        )

    def oversubscription(self, cores: int | None = None) -> str | None:
        """Why this budget (of a CPU backend) runs more compute threads at once than there are
        ``cores`` (default :func:`usable_cores`), or None when it does not. A thread count of
        0 means ONNX Runtime's default, one thread per core. Oversubscribed kernel threads wait
        for each other (the module docstring's measurement), so the engine warns."""
        cores = cores or usable_cores()
        threads = self.threads or cores
        detector = self.detector_threads or cores
        busiest = self.workers * max(threads, detector)
        if busiest <= cores:
            return None
        return (
            f"the thread budget runs up to {busiest} compute threads at once on {cores} usable "
            f"core(s) ({self.workers} network call(s) at once, {threads} ONNX Runtime thread(s) "
            f"per classifier call, {detector} per SCRFD call): the threads will compete for the "
            "cores and the job will be slower; keep workers x threads <= cores "
            "(--compute-workers, --threads, --detector-threads; the defaults do)"
        )

    def to_record(self, sampling: str = "first") -> dict[str, int | bool]:
        """The budget as a JSON-able dict for ``sampling`` (benchmarks record it);
        ``decode_workers`` is the start value where ``decode_by_share`` (:class:`DecodeShare`)."""
        return {
            "threads_per_call": self.threads,
            "detector_threads_per_call": self.detector_threads,
            "compute_workers": self.workers,
            "decode_workers": self.decoding(sampling),
            "decode_by_share": not self.decode_workers and self.on_cpu,
        }
