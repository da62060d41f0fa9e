"""The one ``open_detector``: the detector file loaded once (read, hashed, rewritten into the
cache of derived graphs, never next to the user's files), then the SCRFD maths over the runner
the backend gives for it."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from core.config import EngineConfig


@pytest.fixture
def models_copy(shared_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A read-write models folder holding the shipped detector pack alone (no rewrite next to
    it), and a private cache of derived graphs."""
    folder = tmp_path / "models"
    folder.mkdir()
    shutil.copy(shared_dir / "models" / "det_500m.onnx", folder / "det_500m.onnx")
    monkeypatch.setenv("DFE_CACHE", str(tmp_path / "cache"))
    return folder


def _listing(folder: Path) -> list[tuple[str, int, int]]:
    return sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in folder.iterdir())


def _spy(monkeypatch: pytest.MonkeyPatch, module: object, name: str) -> list[object]:
    calls: list[object] = []
    real = getattr(module, name)

    def spy(*args: object, **kwargs: object) -> object:
        calls.append(args[0] if args else None)
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, spy)
    return calls


def test_open_detector_writes_only_to_the_cache_and_rewrites_once(
    models_copy: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import preprocess.scrfd_graph as scrfd_graph
    from engine.api import open_detector
    from preprocess.scrfd import SCRFDDetector

    before = _listing(models_copy)
    rewrites = _spy(monkeypatch, scrfd_graph, "rewrite_batch_dynamic")
    reads = _spy(monkeypatch, scrfd_graph, "_read_source")
    hashes = _spy(monkeypatch, scrfd_graph, "file_sha256")
    config = EngineConfig(backend="ort", models_dir=str(models_copy), download=False)

    first = open_detector(config)
    assert isinstance(first, SCRFDDetector)
    assert _listing(models_copy) == before, "nothing may be written next to the user's files"
    cached = sorted(p.name for p in (tmp_path / "cache").iterdir())
    assert cached == [first.graph.path.name] and first.graph.path.parent == tmp_path / "cache"
    assert len(rewrites) == 1, "the graph is rewritten once"
    assert len(reads) == len(hashes) == 1, "the source is read and hashed once per open"

    second = open_detector(config)
    assert len(rewrites) == 1, "a second open reuses the cached rewrite"
    assert len(reads) == len(hashes) == 2
    assert second.graph == first.graph
    assert _listing(models_copy) == before
    frames = [np.full((240, 320, 3), 90, np.uint8)]
    assert second.detect(frames) == first.detect(frames)


def test_every_caller_opens_the_same_detector(models_copy: Path) -> None:
    """export/'s open_detector is the runtime's on ONNX Runtime CPU, with the same options."""
    from engine.api import open_detector
    from export.datasets import open_detector as training_detector

    config = EngineConfig(
        backend="auto", models_dir=str(models_copy), download=False, detector_input=320
    )
    runtime = open_detector(config.replace(backend="ort"))
    training = training_detector(config)
    assert type(training) is type(runtime)
    assert training.config == runtime.config and training.graph == runtime.graph
    assert training.providers == runtime.providers == ["CPUExecutionProvider"]


def test_torch_on_cpu_runs_the_onnxruntime_detector(models_copy: Path) -> None:
    """torch (CPU) has no detector of its own: its factory gives the ONNX Runtime one,
    explicitly (the PyTorch detector is torch-cuda's)."""
    pytest.importorskip("torch")
    from engine.api import open_detector
    from engine.backends import get_factory
    from preprocess.scrfd import SCRFDDetector

    config = EngineConfig(backend="torch", models_dir=str(models_copy), download=False)
    det = open_detector(config, factory=get_factory("torch"))
    assert type(det) is SCRFDDetector and det.providers == ["CPUExecutionProvider"]
    assert det.config.batch_size == config.detector_batch_for("torch")


def test_the_detector_path_inspects_no_signature() -> None:
    """Options go to the backend as one typed object (DetectorOptions), never picked by
    inspecting what a factory's method accepts."""
    repo = Path(__file__).resolve().parents[2]
    files = [
        repo / "engine" / "api.py",
        repo / "export" / "datasets.py",
        repo / "preprocess" / "scrfd.py",
        repo / "preprocess" / "scrfd_graph.py",
        *sorted((repo / "engine" / "backends").glob("*.py")),
    ]
    bad = [f.name for f in files if "signature(" in f.read_text()]
    assert not bad, bad
