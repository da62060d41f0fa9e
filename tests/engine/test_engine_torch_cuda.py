"""``--backend torch-cuda`` end to end: detection and classification both in PyTorch on the GPU,
through the public ``Engine`` API, against the ONNX Runtime CPU engine. The hook that makes the
engine take its detector from the backend factory is checked on CPU too."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.engine.backends._assets import CLIPS, gpu_model_dir, missing_clips

# every test here uses a full model (the session's exported test checkpoint, gpu_model_dir)
pytestmark = pytest.mark.model

N = 8
CLIP_TOL = {"fp32": 1e-3, "fp16": 0.01, "bf16": 0.01}


@pytest.fixture(scope="module")
def model_dir(request) -> Path:
    pytest.importorskip("torch")
    pytest.importorskip("onnx2torch")
    return gpu_model_dir(request)


@pytest.fixture(scope="module")
def clips(shared_dir) -> list[Path]:
    videos = shared_dir / "videos"
    if missing_clips(videos):
        pytest.skip(f"test clips {missing_clips(videos)} not found in {videos}")
    return [videos / name for name in CLIPS]


@pytest.fixture(scope="module")
def reference(model_dir, shared_dir, clips):
    from engine.api import Engine

    eng = Engine.load(model_dir, backend="ort", models_dir=str(shared_dir / "models"))
    return list(eng.predict_many(clips, seq_len=N))


def max_diff(a, b) -> int:
    return max(abs(x - y) for x, y in zip(a, b, strict=True))


def _compare(reference, got, tol):
    for r, g in zip(reference, got, strict=True):
        assert r.ok and g.ok, (r.error, g.error)
        assert g.faces == r.faces and g.frame_indices == r.frame_indices
        # integer crop boxes: the same faces (a coordinate may round the other way)
        for a, b in zip(r.boxes, g.boxes, strict=True):
            assert (a is None) == (b is None) and (a is None or max_diff(a, b) <= 1), (a, b)
        assert abs(g.p_fake - r.p_fake) <= tol, (r.video, r.p_fake, g.p_fake)


def test_engine_takes_its_detector_from_the_backend_factory(
    model_dir, shared_dir, clips, reference, monkeypatch, tmp_path
):
    """What torch-cuda does on the GPU, done on CPU: the factory's ``detector`` gives the
    engine its detector (here the PyTorch SCRFD on CPU)."""
    import dataclasses

    monkeypatch.setenv("DFE_CACHE", str(tmp_path))
    from engine.api import Engine
    from engine.backends import torch_backend
    from engine.backends.torch_detector import TorchSCRFDDetector

    real = torch_backend.cpu_factory

    def with_torch_detector(**options):
        fac = real(**options)
        fac.detector = lambda graph, opts: TorchSCRFDDetector(
            graph.source, device="cpu", **dataclasses.asdict(opts.config)
        )
        return fac

    monkeypatch.setattr(torch_backend, "cpu_factory", with_torch_detector)
    eng = Engine.load(model_dir, backend="torch", models_dir=str(shared_dir / "models"))
    got = list(eng.predict_many(clips, seq_len=N))
    assert isinstance(eng.detector, TorchSCRFDDetector)
    assert eng.detector.config.batch_size == eng.detector_batch
    _compare(reference, got, CLIP_TOL["fp32"])


@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["fp32", "fp16", "bf16"])
def test_engine_torch_cuda_detects_and_classifies_on_the_gpu(
    model_dir, shared_dir, clips, reference, precision
):
    from engine.api import Engine
    from engine.backends.torch_detector import TorchSCRFDDetector

    eng = Engine.load(
        model_dir, backend="torch-cuda", precision=precision, models_dir=str(shared_dir / "models")
    )
    got = list(eng.predict_many(clips, seq_len=N))
    assert isinstance(eng.detector, TorchSCRFDDetector)
    assert eng.detector.device.type == "cuda"
    assert all(p.backend == "torch-cuda" for p in got)
    _compare(reference, got, CLIP_TOL[precision])
