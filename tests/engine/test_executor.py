"""The overlapped executor: one result per job, order, error isolation, bounded memory."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import pytest

from engine.executor import Stages, run_overlapped


@dataclass
class Job:
    index: int
    frames: int = 2
    error: str | None = None
    log: list[str] = field(default_factory=list)

    @property
    def size(self) -> int:
        return self.frames


def _stages(fail_decode=(), fail_detect=(), fail_classify=(), seen=None):
    def decode(job):
        if job.index in fail_decode:
            raise ValueError(f"cannot decode {job.index}")
        job.log.append("decode")

    def detect(jobs):
        if any(j.index in fail_detect for j in jobs):
            raise ValueError("detector failed")
        for j in jobs:
            j.log.append("detect")

    def classify(jobs):
        if seen is not None:
            seen.append([j.index for j in jobs])
        if any(j.index in fail_classify for j in jobs):
            raise ValueError("classifier failed")
        return [j.index * 10 for j in jobs]

    return Stages(
        decode=decode,
        detect=detect,
        classify=classify,
        finish=lambda job, value: (job.index, job.error, value, tuple(job.log)),
        error_text=str,
    )


def _run(jobs, stages, **kw):
    opts = dict(decode_workers=2, max_in_flight=4, detect_frames=4, classify_frames=6)
    opts.update(kw)
    return list(run_overlapped(jobs, stages, **opts))


def test_every_job_gets_one_result_in_order():
    out = _run([Job(i) for i in range(12)], _stages())
    assert [r[0] for r in out] == list(range(12))
    assert all(r[1] is None and r[2] == r[0] * 10 for r in out)
    assert all(r[3] == ("decode", "detect") for r in out)


def test_failures_are_isolated_to_the_culprit():
    out = _run(
        [Job(i) for i in range(8)],
        _stages(fail_decode={1}, fail_detect={3}, fail_classify={6}),
    )
    errors = {r[0]: r[1] for r in out}
    assert errors[1] == "cannot decode 1"
    assert errors[3] == "detector failed" and errors[6] == "classifier failed"
    assert all(errors[i] is None for i in (0, 2, 4, 5, 7))  # batch-mates were retried alone
    assert all(r[2] is None for r in out if r[1])


def test_classify_batches_gather_frames_of_several_jobs():
    seen: list[list[int]] = []
    _run([Job(i) for i in range(6)], _stages(seen=seen), classify_frames=6)
    assert max(len(b) for b in seen) > 1  # frames of several videos share a batch
    assert sorted(i for b in seen for i in b) == list(range(6))


def test_unordered_yields_as_they_finish_and_bounds_jobs_in_flight():
    started, active, peak = [], [0], [0]
    lock = threading.Lock()

    def jobs():
        for i in range(10):
            started.append(i)
            yield Job(i)

    stages = _stages()
    decode = stages.decode

    def slow_decode(job):
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        time.sleep(0.01)
        decode(job)
        with lock:
            active[0] -= 1

    stages = Stages(slow_decode, stages.detect, stages.classify, stages.finish, stages.error_text)
    it = run_overlapped(
        jobs(), stages, decode_workers=2, max_in_flight=3, detect_frames=2, classify_frames=2,
        ordered=False,
    )  # fmt: skip
    first = next(it)
    assert len(started) <= 3 + 1  # the input is read lazily, at most max_in_flight ahead
    rest = list(it)
    assert sorted(r[0] for r in [first, *rest]) == list(range(10))
    assert peak[0] <= 2


def test_a_bug_in_a_stage_surfaces_instead_of_hanging():
    stages = _stages()

    def broken_finish(job, value):
        raise RuntimeError("bug")

    stages = Stages(stages.decode, stages.detect, stages.classify, broken_finish, str)
    with pytest.raises(RuntimeError, match="bug"):
        _run([Job(i) for i in range(3)], stages)


@pytest.mark.parametrize("workers", [2, 3])
def test_several_workers_per_stage_keep_one_result_per_job_and_the_order(workers):
    calls, active, peak = [], [0], [0]
    lock = threading.Lock()
    stages = _stages(fail_detect={4}, fail_classify={9})
    classify = stages.classify

    def slow_classify(jobs):
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
            calls.append(len(jobs))
        time.sleep(0.01)
        try:
            return classify(jobs)
        finally:
            with lock:
                active[0] -= 1

    stages = Stages(stages.decode, stages.detect, slow_classify, stages.finish, str)
    out = _run(
        [Job(i) for i in range(20)],
        stages,
        classify_frames=2,
        max_in_flight=8,
        detect_workers=workers,
        classify_workers=workers,
    )
    assert [r[0] for r in out] == list(range(20))
    errors = {r[0]: r[1] for r in out}
    assert errors[4] == "detector failed" and errors[9] == "classifier failed"
    assert all(errors[i] is None for i in range(20) if i not in (4, 9))
    assert 1 < peak[0] <= workers  # batches classified at once, never more than the workers


def test_worker_counts_below_one_are_refused():
    with pytest.raises(ValueError, match="classify_workers"):
        _run([Job(0)], _stages(), classify_workers=0)


def test_a_decode_gate_picks_the_decoding_threads_and_sees_every_decode():
    """Four decoding threads behind a gate that gives one of them turns: the same thread
    decodes every video (failures too), never two at once, and every job gets one result."""
    from core.compute import DecodeShare

    gate = DecodeShare(cores=4, start=1, maximum=4, window=100)
    running, peak, names, lock = [0], [0], set(), threading.Lock()
    base = _stages(fail_decode={2})

    def decode(job):
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
            names.add(threading.current_thread().name)
        time.sleep(0.01)
        with lock:
            running[0] -= 1
        base.decode(job)

    stages = Stages(decode, base.detect, base.classify, base.finish, base.error_text)
    out = _run([Job(i) for i in range(10)], stages, decode_workers=4, decode_gate=gate)
    assert [r[0] for r in out] == list(range(10)) and out[2][1] == "cannot decode 2"
    assert peak[0] == 1 and names == {"dfe-decode-0"} and gate.limit == 1
    assert len(gate._marks) == 11  # the start, then one mark per decode
    # an empty input ends too (the waiting threads are let through to see its end)
    assert _run([], stages, decode_workers=4, decode_gate=DecodeShare(4, 1, 4)) == []


def test_a_bug_in_a_decoding_thread_stops_the_run_instead_of_hanging_it():
    """``error_text`` itself raising while a decode fails: with a gate giving thread 0 the
    only turn, its death must not leave the other threads waiting for turns forever."""
    from core.compute import DecodeShare

    base = _stages(fail_decode={1})

    def bad_text(exc):
        raise RuntimeError("error_text is broken")

    stages = Stages(base.decode, base.detect, base.classify, base.finish, bad_text)
    result: list[BaseException] = []

    def run():
        try:
            _run([Job(i) for i in range(20)], stages, decode_workers=2,
                 decode_gate=DecodeShare(2, 1, 2), ordered=False)  # fmt: skip
        except BaseException as exc:
            result.append(exc)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(20)
    assert not t.is_alive(), "the run hung"
    assert result and "error_text is broken" in str(result[0])


def test_max_in_flight_below_one_is_refused():
    with pytest.raises(ValueError, match="max_in_flight"):
        _run([Job(0)], _stages(), max_in_flight=0)
