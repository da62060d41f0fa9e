"""Shared fixtures: where the test assets live, the tiny torch-free model, and the test tiers.

Tiers (markers, see pyproject.toml): ``gpu`` tests are skipped without an NVIDIA GPU unless
``REQUIRE_GPU=1`` (then they fail); ``model`` tests use a full ResNeXt50 + LSTM checkpoint made
with torch (the ``export`` extra) and are skipped, with the reason, where torch is missing;
everything else runs with the runtime's dependencies alone (``pip install -e '.[cpu,dev]'``).
This file imports no torch: checkpoint fixtures live in :mod:`tests.model_fixtures`, which
imports it inside the fixtures.
"""

from __future__ import annotations

import ctypes
import importlib.util
import os
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("DFE_SHARED") or REPO.parent / "shared")
VIDEOS_DIR = SHARED / "videos"
MODELS_DIR = SHARED / "models"

# Fixtures that build a full model with torch; a test using one is a `model` test.
MODEL_FIXTURES = {
    "real_crops",
    "original_ckpt",
    "sequence_ckpt",
    "exported_model",
    "hard_models",
    "demo_model",
}

pytest_plugins = ["tests.model_fixtures"]

#: glibc's mmap threshold (bytes) in a process once it runs a ``model`` test: torch's and ONNX
#: Runtime's large buffers (a ResNeXt50 batch's activations, tens of MB) are then reused from the
#: heap instead of being mapped, zeroed by the kernel and unmapped on every call. Measured on the
#: export-parity tests (one process, one thread): 94 s -> 80 s wall, system time 22.6 s -> 9.1 s,
#: minor page faults 7.9 M -> 2.4 M; in a suite run with the threshold set for both workers (by
#: the environment) the two INT8 builds took 133 + 149 s -> 97 + 125 s. Not for the other tests:
#: on the decoding tests (PyAV threads) it faulted more (1.1-1.6 M -> 2.1 M). The engine keeps
#: glibc's adaptive threshold (engine/allocator.py); processes the tests start do not inherit
#: this.
MODEL_MMAP_THRESHOLD = 1 << 30
_mmap_tuned = False


def _tune_mmap_threshold() -> None:
    """``mallopt(M_MMAP_THRESHOLD, MODEL_MMAP_THRESHOLD)`` in this process, once (glibc only)."""
    global _mmap_tuned
    if _mmap_tuned:
        return
    _mmap_tuned = True
    from engine.allocator import M_MMAP_THRESHOLD, _libc

    libc = _libc()  # None where the C library is not glibc: nothing to tune
    if libc is not None:
        libc.mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
        libc.mallopt(M_MMAP_THRESHOLD, MODEL_MMAP_THRESHOLD)


def shared_videos() -> list[Path]:
    return sorted(VIDEOS_DIR.glob("*.mp4")) if VIDEOS_DIR.is_dir() else []


def has_torch() -> bool:
    try:
        return importlib.util.find_spec("torch") is not None
    except (ImportError, ValueError):  # a blocked or broken torch
        return False


def _has_gpu() -> bool:
    return shutil.which("nvidia-smi") is not None


def _workers() -> int:
    """How many pytest-xdist workers share this machine (1 outside xdist)."""
    return int(os.environ.get("PYTEST_XDIST_WORKER_COUNT") or 1)


def pytest_configure(config):
    """Under pytest-xdist (``make test`` runs ``-n 2 --dist loadgroup``) each worker, and each
    process its tests start, runs torch, OpenMP and ONNX Runtime on one thread: two workers with
    two-thread pools on two cores wait for each other (measured in docs/testing.md).

    ``--dist loadgroup`` on pytest 9 is refused: pytest-xdist's grouping silently stops working
    there (pytest-xdist issue 1386), and each worker would build the full models on its own."""
    if _workers() > 1:
        for var in (
            "OMP_NUM_THREADS",
            "MKL_NUM_THREADS",
            "OPENBLAS_NUM_THREADS",
            "DFE_ORT_THREADS",
        ):
            os.environ.setdefault(var, "1")
    pytest_major = int(pytest.__version__.split(".")[0])
    if getattr(config.option, "dist", "no") == "loadgroup" and pytest_major >= 9:
        raise pytest.UsageError(
            f"--dist loadgroup does not group tests on pytest {pytest.__version__} (pytest-xdist "
            "issue 1386): install the dev extra's pytest<9 (make setup), or run without it"
        )


@pytest.hookimpl(tryfirst=True)  # before xdist reads the xdist_group markers
def pytest_collection_modifyitems(config, items):
    require_gpu = os.environ.get("REQUIRE_GPU") == "1"
    skip_gpu = pytest.mark.skip(reason="needs an NVIDIA GPU (set REQUIRE_GPU=1 to make this fail)")
    skip_model = pytest.mark.skip(
        reason="needs torch to make a full model (pip install -e '.[export]')"
    )
    torch_ok = has_torch()
    for item in items:
        if MODEL_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.model)
        if item.get_closest_marker("model"):
            # one worker builds the session's full models (--dist loadgroup), from the start;
            # also for a test marked by hand, which may request them by request.getfixturevalue
            item.add_marker(pytest.mark.xdist_group("model"))
        if "gpu" in item.keywords and not (_has_gpu() or require_gpu):
            item.add_marker(skip_gpu)
        if item.get_closest_marker("model") and not torch_ok:
            item.add_marker(skip_model)
    if os.environ.get("PYTEST_XDIST_WORKER"):  # the longest group first, then the other groups
        items.sort(key=_group_order)  # (a stable sort)


def _group_order(item) -> int:
    """0 for the ``model`` group, 1 for the other xdist groups (``ray``), 2 for the rest."""
    group = item.get_closest_marker("xdist_group")
    if group is None:
        return 2
    return 0 if (group.args[0] if group.args else group.kwargs.get("name")) == "model" else 1


def pytest_runtest_setup(item):
    if item.get_closest_marker("model"):
        _tune_mmap_threshold()


def pytest_runtest_call(item):
    """A test without the ``model`` marker that got a full-model fixture through
    ``request.getfixturevalue`` fails: it would build the models again on another xdist worker
    (minutes) and run where torch is missing. (The fixtures it set up are in its request.)"""
    defs = getattr(getattr(item, "_request", None), "_fixture_defs", None) or {}
    used = sorted(MODEL_FIXTURES & set(defs))
    if used and not item.get_closest_marker("model"):
        pytest.fail(
            f"{item.nodeid} uses the full-model fixture(s) {used} without the `model` marker: "
            "mark it @pytest.mark.model (tests/conftest.py)",
            pytrace=False,
        )


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not VIDEOS_DIR.is_dir() or not MODELS_DIR.is_dir():
        pytest.skip(f"test assets not found at {SHARED} (set DFE_SHARED)")
    return SHARED


@pytest.fixture(scope="session")
def video_paths(shared_dir) -> list[Path]:
    return shared_videos()


@pytest.fixture(scope="session")
def models_dir(shared_dir) -> str:
    """The shared detector models, as ``--models DIR`` takes them."""
    return str(shared_dir / "models")


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """A tiny exported model (original variant, reduce mean, N=20), made without torch."""
    from tests.tiny_model import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="session")
def tiny_engine(tiny_model, models_dir):
    """An Engine on the tiny model, ONNX Runtime CPU, shared detector models, no downloads."""
    from engine.api import Engine

    return Engine.load(tiny_model, backend="ort", models_dir=models_dir, download=False)
