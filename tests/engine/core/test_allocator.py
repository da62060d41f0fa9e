"""The allocator tuning of ``engine.core.allocator``: large blocks get their own mappings.

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

from engine.core import allocator
from engine.core.errors import InvalidInputError

ROOT = Path(__file__).resolve().parents[3]

# Allocate a 6 MB block (a 1080p BGR frame), free it, allocate the same size again and report
# how many bytes glibc had mapped for blocks of their own while the second one was held.
_PROBE = """
import json, sys
import numpy as np
from engine.core import allocator
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


def _probe(mode: str, **env: str) -> dict:
    clean = {k: v for k, v in os.environ.items() if k not in ("DFE_MMAP_THRESHOLD",)}
    clean.pop("MALLOC_MMAP_THRESHOLD_", None)
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE, mode],
        cwd=ROOT,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


@pytest.fixture(scope="module")
def glibc() -> None:
    if allocator.heap_stats() is None:
        pytest.skip("needs glibc >= 2.33 (mallinfo2)")


def test_allocator_default_glibc_moves_large_blocks_into_the_heap(glibc):
    # the cause: once a 6 MB block is freed, glibc raises its threshold and the next one
    # comes from the heap (this is what fragments a long job's heaps)
    out = _probe("plain")
    assert out["first_mapped"] and not out["second_mapped"], out


def test_allocator_tuned_keeps_large_blocks_on_their_own_mappings(glibc):
    out = _probe("tune")
    assert out["tuning"][:2] == [True, allocator.MMAP_THRESHOLD], out
    assert out["first_mapped"] and out["second_mapped"], out


def test_allocator_zero_leaves_glibc_alone(glibc):
    out = _probe("tune", DFE_MMAP_THRESHOLD="0")
    assert out["tuning"][0] is False and "DFE_MMAP_THRESHOLD=0" in out["tuning"][2]
    assert not out["second_mapped"], out


def test_allocator_respects_the_users_malloc_setting(glibc):
    out = _probe("tune", MALLOC_MMAP_THRESHOLD_="4194304")
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


def test_allocator_engine_load_tunes_the_process(glibc, tiny_model, models_dir):
    code = (
        "from engine.api import Engine\n"
        "from engine.core import allocator\n"
        f"Engine.load({str(tiny_model)!r}, backend='ort', models_dir={models_dir!r}, "
        "download=False)\n"
        "t = allocator.tune_allocator()\n"
        "print(t.applied, t.mmap_threshold)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "DFE_MMAP_THRESHOLD"}
    env.pop("MALLOC_MMAP_THRESHOLD_", None)
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["True", str(allocator.MMAP_THRESHOLD)]
