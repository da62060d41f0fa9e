"""``engine.allocator``: free heap pages returned to the OS after videos (the default),
and the opt-in fixed mmap threshold that gives large blocks their own mappings.

Each test runs in a fresh interpreter: glibc's mmap threshold and the tuning are per process,
and the behaviour under test is what the first freed large block does to later ones.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from core.errors import InvalidInputError
from engine import allocator

ROOT = Path(__file__).resolve().parents[2]

# Allocate a 6 MB block (a 1080p BGR frame), free it, allocate the same size again and report
# how many bytes glibc had mapped for blocks of their own while the second one was held.
_PROBE = """
import json, sys
import numpy as np
from engine import allocator
tuning = allocator.tune_allocator() if sys.argv[1] == "tune" else None
size = 1920 * 1080 * 3
first = np.ones(size, np.uint8)
before = allocator.heap_stats()["mmapped"]
del first
second = np.ones(size, np.uint8)
held = allocator.heap_stats()["mmapped"]
print(json.dumps({
    "tuning": None if tuning is None else [tuning.applied, tuning.mmap_threshold, tuning.reason],
    "first_mapped": before >= size,
    "second_mapped": held >= size,
}))
"""


def _run(code: str, *args: str, **env: str) -> dict:
    """Run ``code`` in a fresh interpreter with the allocator variables cleared and ``env`` set;
    its stdout, as JSON."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("DFE_M", "MALLOC_"))}
    proc = subprocess.run(
        [sys.executable, "-c", code, *args],
        cwd=ROOT,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def _probe(mode: str, **env: str) -> dict:
    return _run(_PROBE, mode, **env)


@pytest.fixture(scope="module")
def glibc() -> None:
    if allocator.heap_stats() is None:
        pytest.skip("needs glibc >= 2.33 (mallinfo2)")


def test_allocator_default_glibc_moves_large_blocks_into_the_heap(glibc):
    # the cause: once a 6 MB block is freed, glibc raises its threshold and the next one
    # comes from the heap (this is what fragments a long job's heaps)
    out = _probe("plain")
    assert out["first_mapped"] and not out["second_mapped"], out


def test_allocator_threshold_keeps_large_blocks_on_their_own_mappings(glibc):
    out = _probe("tune", DFE_MMAP_THRESHOLD=str(allocator.MMAP_THRESHOLD))
    assert out["tuning"][:2] == [True, allocator.MMAP_THRESHOLD], out
    assert out["first_mapped"] and out["second_mapped"], out


@pytest.mark.parametrize("value", [None, "0"])
def test_allocator_default_and_zero_leave_the_threshold_alone(glibc, value):
    out = _probe("tune", **({} if value is None else {"DFE_MMAP_THRESHOLD": value}))
    assert out["tuning"][0] is False and "trimmed" in out["tuning"][2]
    assert not out["second_mapped"], out


def test_allocator_respects_the_users_malloc_setting(glibc):
    out = _probe("tune", MALLOC_MMAP_THRESHOLD_="4194304", DFE_MMAP_THRESHOLD="1048576")
    assert out["tuning"][0] is False and "MALLOC_MMAP_THRESHOLD_" in out["tuning"][2]
    assert out["second_mapped"], out  # glibc applied the user's 4 MiB threshold itself


def test_allocator_custom_threshold(glibc):
    out = _probe("tune", DFE_MMAP_THRESHOLD=str(8 << 20))
    assert out["tuning"][:2] == [True, 8 << 20], out
    assert not out["second_mapped"], out  # 6 MB is below 8 MiB: from the heap


@pytest.mark.parametrize("value", ["-1", "lots", str(64 << 20)])
def test_allocator_bad_threshold_is_an_error_naming_the_variable(monkeypatch, value):
    monkeypatch.setenv("DFE_MMAP_THRESHOLD", value)
    with pytest.raises(InvalidInputError, match="DFE_MMAP_THRESHOLD"):
        allocator.configured_threshold()


def test_allocator_engine_load_applies_an_asked_threshold(glibc, tiny_model, models_dir):
    code = (
        "from engine.api import Engine\n"
        "from engine import allocator\n"
        f"Engine.load({str(tiny_model)!r}, backend='ort', models_dir={models_dir!r}, "
        "download=False)\n"
        "t = allocator.tune_allocator()\n"
        "print(t.applied, t.mmap_threshold)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "MALLOC_MMAP_THRESHOLD_"}
    env["DFE_MMAP_THRESHOLD"] = str(allocator.MMAP_THRESHOLD)
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["True", str(allocator.MMAP_THRESHOLD)]


# Free 200 MB of 1 MB blocks (below the adaptive threshold once a 6 MB block was freed, so they
# come from the heap) held between small blocks that stay alive, as frames between records;
# report RSS before and after release_free_memory().
_TRIM_PROBE = """
import json, sys, threading
import numpy as np
from engine import allocator

def rss_mb():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024

def work(out):
    big = np.ones(1920 * 1080 * 3, np.uint8)
    del big  # raises glibc's adaptive threshold: the blocks below come from this arena's heap
    blocks, keep = [], []
    for i in range(200):
        blocks.append(np.ones(1 << 20, np.uint8))
        keep.append(np.ones(4096 + i, np.uint8))
    del blocks
    out["keep"] = keep

out = {}
t = threading.Thread(target=work, args=(out,))  # a thread arena, as in the pipeline
t.start(); t.join()
before = rss_mb()
first = allocator.release_free_memory()
after = rss_mb()
second = allocator.release_free_memory()
print(json.dumps({"before": before, "after": after, "first": first, "second": second}))
"""


def _trim_probe(**env: str) -> dict:
    return _run(_TRIM_PROBE, **env)


def test_allocator_release_returns_free_heap_pages_once_per_interval(glibc):
    out = _trim_probe()
    assert out["first"] is True and out["second"] is False, out  # the 30 s interval
    assert out["before"] - out["after"] > 150, out  # most of the 200 MB freed in the heap


def test_allocator_release_off_with_zero_interval(glibc):
    out = _trim_probe(DFE_MALLOC_TRIM_INTERVAL="0")
    assert out["first"] is False and out["before"] - out["after"] < 20, out


@pytest.mark.parametrize("value", ["-1", "soon"])
def test_allocator_bad_trim_interval_is_an_error_naming_the_variable(monkeypatch, value):
    monkeypatch.setenv("DFE_MALLOC_TRIM_INTERVAL", value)
    with pytest.raises(InvalidInputError, match="DFE_MALLOC_TRIM_INTERVAL"):
        allocator.trim_interval()


def test_allocator_bad_trim_interval_fails_at_load_not_after_a_video(tiny_model, models_dir):
    proc = subprocess.run(
        [sys.executable, "-m", "engine.cli", "predict", str(ROOT / "README.md"), "--model",
         str(tiny_model), "--models", models_dir, "--no-download", "--no-progress"],
        cwd=ROOT, env={**os.environ, "DFE_MALLOC_TRIM_INTERVAL": "abc"}, capture_output=True,
        text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2 and "DFE_MALLOC_TRIM_INTERVAL='abc'" in proc.stderr
    assert proc.stdout == ""  # no record: the job did not start


def test_the_trim_interval_default_is_one_and_documented_as_defined(monkeypatch):
    """One default, :data:`allocator.TRIM_INTERVAL`: what an unset variable gives, and what
    ``paths.ENVIRONMENT``, docs/layout.md's table and docs/performance.md say it is."""
    from core import paths

    monkeypatch.delenv("DFE_MALLOC_TRIM_INTERVAL", raising=False)
    assert allocator.trim_interval() == allocator.TRIM_INTERVAL
    default = f"{allocator.TRIM_INTERVAL:g}"
    assert f"(default {default};" in paths.ENVIRONMENT["DFE_MALLOC_TRIM_INTERVAL"]
    layout = (ROOT / "docs" / "layout.md").read_text()
    (row,) = [r for r in layout.splitlines() if r.startswith("| `DFE_MALLOC_TRIM_INTERVAL` |")]
    assert f"(default {default};" in row, row
    performance = " ".join((ROOT / "docs" / "performance.md").read_text().split())
    assert f"at most every {default} s" in performance
    assert f"the interval is {default} s" in performance
