"""Shared fixtures: where the test assets live, and the GPU tier."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("DFE_SHARED", REPO.parent / "shared"))
VIDEOS_DIR = SHARED / "videos"
MODELS_DIR = SHARED / "models"


def shared_videos() -> list[Path]:
    return sorted(VIDEOS_DIR.glob("*.mp4")) if VIDEOS_DIR.is_dir() else []


def _has_gpu() -> bool:
    return shutil.which("nvidia-smi") is not None


def pytest_collection_modifyitems(config, items):
    require_gpu = os.environ.get("REQUIRE_GPU") == "1"
    if _has_gpu() or require_gpu:
        return  # with REQUIRE_GPU=1 GPU tests run, and fail where there is no GPU
    skip = pytest.mark.skip(reason="needs an NVIDIA GPU (set REQUIRE_GPU=1 to make this fail)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not VIDEOS_DIR.is_dir() or not MODELS_DIR.is_dir():
        pytest.skip(f"test assets not found at {SHARED} (set DFE_SHARED)")
    return SHARED


@pytest.fixture(scope="session")
def video_paths(shared_dir) -> list[Path]:
    return shared_videos()


# Checkpoints made by the independent reference implementation, shared by export/ and engine/.
pytest_plugins = ["tests.fixtures_models"]
