"""The CPU thread budget (core.compute): the shared pool, chunking, the resolved budget."""

from __future__ import annotations

import threading
import time

import pytest

from core.compute import (
    INLINE,
    ComputePool,
    DecodeShare,
    ThreadBudget,
    default_decode_workers,
    shared_pool,
    usable_cores,
)
from core.errors import InvalidInputError


def test_map_keeps_the_order_and_runs_at_most_workers_at_once():
    pool = ComputePool(2)
    active, peak = [0], [0]
    lock = threading.Lock()

    def work(x):
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        time.sleep(0.01)
        with lock:
            active[0] -= 1
        return x * x

    assert pool.map(work, list(range(7))) == [x * x for x in range(7)]
    assert peak[0] == 2
    pool.close()


def test_map_raises_the_first_error_after_every_call_ended():
    pool = ComputePool(2)
    done = []

    def work(x):
        time.sleep(0.005)
        if x == 1:
            raise ValueError("bad item 1")
        done.append(x)
        return x

    with pytest.raises(ValueError, match="bad item 1"):
        pool.map(work, [0, 1, 2, 3])
    assert sorted(done) == [0, 2, 3]
    pool.close()


def test_one_worker_runs_inline_in_the_callers_thread():
    caller = threading.get_ident()
    assert INLINE.map(lambda _: threading.get_ident(), [0, 1]) == [caller, caller]
    assert shared_pool(1) is INLINE
    assert shared_pool(3) is shared_pool(3)


@pytest.mark.parametrize(
    ("workers", "count", "largest", "expected"),
    [
        (2, 20, 64, [(0, 10), (10, 20)]),  # one video: one chunk per worker
        (2, 1, 64, [(0, 1)]),
        (2, 0, 64, []),
        (1, 20, 64, [(0, 20)]),
        (2, 130, 64, [(0, 44), (44, 87), (87, 130)]),  # the batch size bounds a chunk
        (4, 6, 64, [(0, 2), (2, 4), (4, 5), (5, 6)]),
    ],
)
def test_chunks_cover_every_item_once_within_the_batch_size(workers, count, largest, expected):
    bounds = ComputePool(workers).chunks(count, largest)
    assert bounds == expected
    assert all(stop - start <= largest for start, stop in bounds)


@pytest.mark.parametrize("workers", [0, -1, True, 1.5])
def test_bad_worker_counts_are_refused(workers):
    with pytest.raises(InvalidInputError, match="compute workers"):
        ComputePool(workers)


def test_budget_on_cpu_is_one_thread_per_call_and_a_worker_per_core(monkeypatch):
    monkeypatch.delenv("DFE_ORT_THREADS", raising=False)
    b = ThreadBudget.resolve("ort", cores=4)
    assert (b.threads, b.detector_threads, b.workers) == (1, 1, 4)
    b = ThreadBudget.resolve("ort", intra_op_threads=2, cores=4)
    assert (b.threads, b.workers) == (2, 2)  # the cores are shared out, not oversubscribed
    b = ThreadBudget.resolve("ort", intra_op_threads=8, cores=4)
    assert b.workers == 1
    b = ThreadBudget.resolve("ort", detector_threads=2, compute_workers=3, cores=4)
    assert (b.threads, b.detector_threads, b.workers) == (1, 2, 3)
    assert ThreadBudget.resolve("ort").workers == usable_cores()


def test_budget_reads_the_environment_and_leaves_gpu_backends_alone(monkeypatch):
    monkeypatch.setenv("DFE_ORT_THREADS", "2")
    assert ThreadBudget.resolve("ort", cores=4).to_record() == {
        "threads_per_call": 2,
        "detector_threads_per_call": 2,
        "compute_workers": 2,
        "decode_workers": 2,
        "decode_by_share": True,
    }
    monkeypatch.delenv("DFE_ORT_THREADS")
    b = ThreadBudget.resolve("ort-cuda", cores=4)
    assert (b.threads, b.workers) == (0, 1)  # ONNX Runtime's own threads, one call at a time
    assert b.decoding() == 2


@pytest.mark.parametrize(
    ("cores", "first", "uniform"), [(1, 1, 1), (2, 1, 2), (3, 1, 3), (4, 2, 4), (16, 8, 16)]
)
def test_cpu_decoders_take_decodings_share_of_the_cores_unless_told(
    monkeypatch, cores, first, uniform
):
    monkeypatch.delenv("DFE_ORT_THREADS", raising=False)
    b = ThreadBudget.resolve("ort", cores=cores)
    # the first N frames: one decoding video per two cores; uniform (seeks, ~70% of the CPU):
    # one per core
    assert (b.decoding("first"), b.decoding("uniform")) == (first, uniform)
    assert b.to_record("uniform")["decode_workers"] == uniform
    assert default_decode_workers("first", cores) == first
    # the PyTorch backend on CPU runs on these cores too; a GPU backend decodes two at once
    assert ThreadBudget.resolve("torch", cores=cores).decoding("uniform") == uniform
    assert ThreadBudget.resolve("ort-cuda", cores=cores).decoding("first") == 2
    # a count that was asked for is kept, whatever the sampling and backend
    told = ThreadBudget.resolve("ort", decode_workers=3, cores=cores)
    assert told.decoding("first") == told.decoding("uniform") == 3
    assert ThreadBudget.resolve("ort-cuda", decode_workers=5, cores=cores).decoding() == 5


@pytest.mark.parametrize("value", [-1, 1.5, True, "2"])
def test_budget_refuses_a_bad_worker_count(value):
    with pytest.raises(InvalidInputError, match="decode_workers must be an integer >= 0"):
        ThreadBudget.resolve("ort", decode_workers=value, cores=2)


@pytest.mark.parametrize("value", ["abc", "1.5", "-1"])
def test_a_bad_ort_threads_variable_is_an_error_naming_it(monkeypatch, value):
    monkeypatch.setenv("DFE_ORT_THREADS", value)
    with pytest.raises(InvalidInputError, match="DFE_ORT_THREADS"):
        ThreadBudget.resolve("ort", cores=2)


def test_a_huge_ort_threads_variable_is_refused(monkeypatch):
    monkeypatch.setenv("DFE_ORT_THREADS", "100000")
    with pytest.raises(InvalidInputError, match="at most 256"):
        ThreadBudget.resolve("ort", cores=2)


@pytest.mark.parametrize(
    ("kwargs", "busiest"),
    [
        ({"compute_workers": 4}, 4),  # more calls at once than cores
        ({"intra_op_threads": 2, "compute_workers": 2}, 4),  # calls x threads
        ({"detector_threads": 0}, 4),  # 0: ONNX Runtime's default, a thread per core per call
    ],
)
def test_a_budget_above_the_cores_says_so(monkeypatch, kwargs, busiest):
    monkeypatch.delenv("DFE_ORT_THREADS", raising=False)
    note = ThreadBudget.resolve("ort", cores=2, **kwargs).oversubscription(cores=2)
    assert note is not None and f"up to {busiest} compute threads at once on 2" in note


@pytest.mark.parametrize("kwargs", [{}, {"intra_op_threads": 2}, {"compute_workers": 1}])
def test_a_budget_within_the_cores_is_quiet(monkeypatch, kwargs):
    monkeypatch.delenv("DFE_ORT_THREADS", raising=False)
    assert ThreadBudget.resolve("ort", cores=2, **kwargs).oversubscription(cores=2) is None


class _Clocks:
    """Fake process and thread CPU clocks (seconds)."""

    def __init__(self) -> None:
        self.process = 0.0
        self.thread = 0.0


def _decode(gate, clocks, decode_s, other_s):
    """One decode of ``decode_s`` CPU seconds while the rest of the process spends
    ``other_s``."""
    with gate.measure():
        clocks.thread += decode_s
        clocks.process += decode_s + other_s


def _gate(clocks, **kw):
    opts = dict(cores=2, start=1, maximum=2, window=4)
    opts.update(kw)
    return DecodeShare(clock=lambda: clocks.process, thread_clock=lambda: clocks.thread, **opts)


def test_decoders_follow_decodings_share_of_the_cpu():
    clocks = _Clocks()
    gate = _gate(clocks)
    for _ in range(3):  # fewer than a window: the start value holds
        _decode(gate, clocks, 0.9, 0.1)
    assert gate.limit == 1 and gate.share is None
    _decode(gate, clocks, 0.9, 0.1)  # 90% of the CPU: two cores' worth of decoding
    assert gate.limit == 2 and gate.share == pytest.approx(0.9)
    for _ in range(4):  # the videos change: decoding is 25% of the CPU now
        _decode(gate, clocks, 0.25, 0.75)
    assert gate.limit == 1 and gate.share == pytest.approx(0.25)
    for _ in range(4):  # exactly half of 2 cores: one decoder is enough
        _decode(gate, clocks, 0.5, 0.5)
    assert gate.limit == 1
    for _ in range(4):  # a little more: within the margin, still one
        _decode(gate, clocks, 0.54, 0.46)
    assert gate.limit == 1
    for _ in range(4):  # beyond the margin (1.12 cores' worth): two
        _decode(gate, clocks, 0.56, 0.44)
    assert gate.limit == 2
    for _ in range(4):  # back under the margin but above one core's worth: two stay
        _decode(gate, clocks, 0.52, 0.48)
    assert gate.limit == 2
    big = _gate(clocks, cores=16, start=8, maximum=16, window=2)
    for _ in range(2):
        _decode(big, clocks, 0.3, 0.7)
    assert big.limit == 5  # ceil(16 x 0.3)
    for _ in range(2):
        _decode(big, clocks, 0.0, 1.0)
    assert big.limit == 1  # never below one


def test_a_decode_gate_holds_threads_beyond_its_limit_until_closed():
    gate = DecodeShare(cores=2, start=1, maximum=2)
    assert gate.wait_turn(0)  # thread 0 has a turn
    answer: list[bool] = []
    t = threading.Thread(target=lambda: answer.append(gate.wait_turn(1)))
    t.start()
    t.join(0.2)
    assert t.is_alive() and not answer  # thread 1 waits while the limit is 1
    gate.close()  # the end of input: the waiting thread ends, thread 0 still decodes
    t.join(5)
    assert answer == [False] and gate.wait_turn(0)


@pytest.mark.parametrize("kw", [{"cores": 0}, {"start": 3}, {"window": 0}, {"start": 0}])
def test_a_decode_gate_refuses_bad_counts(kw):
    opts = dict(cores=2, start=1, maximum=2)
    opts.update(kw)
    with pytest.raises(InvalidInputError, match="decode share needs"):
        DecodeShare(**opts)
