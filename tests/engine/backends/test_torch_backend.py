"""The PyTorch classifier backend: precision exactly as asked, and parity with ONNX Runtime CPU
fp32 of the exported classifier on face crops of the shared clips (CPU in the normal suite, CUDA
under the ``gpu`` marker)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from core.errors import BackendUnavailableError, InvalidInputError
from engine.backends import get_factory
from tests.engine.backends._assets import face_crops, gpu_model_dir, missing_clips

# |delta p_fake| against ONNX Runtime CPU fp32: of each clip (the mean of its frames' logits, as
# the engine reduces; the bounds), and of each frame (frame_p_fake, looser: bf16 keeps 8
# bits of mantissa, fp16 11). Measured on CPU, per frame / per clip: bf16 0.019 / 0.005 on the
# test fixture's checkpoint and 0.050 / 0.004 on gpu_check's; fp16 0.005 / 0.0004 and 0.007 / 0.002.
CLIP_TOL = {"fp32": 1e-3, "fp16": 0.01, "bf16": 0.01}
FRAME_TOL = {"fp32": 1e-3, "fp16": 0.02, "bf16": 0.1}
PER_CLIP = 8


def _cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


# ---------------------------------------------------------------------------- no model needed


def test_torch_precision_unsupported_raises_with_supported_values():
    pytest.importorskip("torch")
    from engine.backends.torch_backend import cpu_factory, cuda_factory

    with pytest.raises(
        InvalidInputError, match="backends for fp16: tensorrt, ort-tensorrt, torch-cuda"
    ):
        get_factory("torch", precision="fp16")
    with pytest.raises(InvalidInputError, match="supported values are fp32, bf16"):
        cpu_factory(precision="fp16")
    with pytest.raises(InvalidInputError, match="supported values are fp32, bf16"):
        cpu_factory(precision="int8")
    with pytest.raises(InvalidInputError, match="backends for int8: tensorrt, ort"):
        get_factory("torch-cuda", precision="int8")
    with pytest.raises(InvalidInputError, match="backends for bf16: torch-cuda, torch"):
        get_factory("auto", precision="bf16")
    with pytest.raises(InvalidInputError, match="precision='fp16'"):
        cpu_factory(fp16=True)
    with pytest.raises(InvalidInputError, match="unknown options"):
        cpu_factory(channel_last=True)
    with pytest.raises(InvalidInputError, match="cuda_graphs needs CUDA"):
        cpu_factory(cuda_graphs=True)
    with pytest.raises(InvalidInputError, match="compile='fast'"):
        cpu_factory(compile="fast")
    assert get_factory("torch", precision="bf16").precision == "bf16"
    assert get_factory("torch").precision == "fp32"  # fp32 when nothing is said
    if not _cuda():
        with pytest.raises(BackendUnavailableError, match="CUDA is not available"):
            cuda_factory(precision="fp32")


def test_torch_cuda_factory_keeps_the_precision_asked(monkeypatch):
    """torch-cuda used to run fp16 whatever was asked; now the factory carries the precision
    (checked without a GPU by pretending CUDA is there)."""
    torch = pytest.importorskip("torch")
    from engine.backends import torch_backend

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "Old GPU")
    monkeypatch.setattr(torch_backend, "use_ieee_fp32", lambda torch: None)
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    for precision in ("fp32", "fp16"):
        fac = get_factory("torch-cuda", precision=precision)
        assert fac.precision == precision and fac.device == "cuda:0"
    with pytest.raises(BackendUnavailableError, match="Old GPU does not support bf16"):
        get_factory("torch-cuda", precision="bf16")
    with pytest.raises(BackendUnavailableError, match="torch sees 1 CUDA device"):
        get_factory("torch-cuda", device_id=3)


def test_torch_cpu_layout_follows_the_precision_and_emulated_bf16_warns(monkeypatch, caplog):
    """NHWC for bf16 (oneDNN's bf16 kernels), NCHW for fp32 unless asked; bf16 on a CPU without
    bf16 instructions runs as asked, with a warning that it is emulated."""
    pytest.importorskip("torch")
    import logging

    from engine.backends import torch_backend

    assert get_factory("torch", precision="fp32").options["channels_last"] is False
    assert get_factory("torch", precision="fp32", channels_last=True).options["channels_last"]
    monkeypatch.setattr(torch_backend, "_native_cpu_bf16", lambda torch: False)
    with caplog.at_level(logging.WARNING, logger="engine.backends.torch_backend"):
        fac = get_factory("torch", precision="bf16")
    assert fac.precision == "bf16" and fac.options["channels_last"] is True
    assert "no bf16 instructions" in caplog.text and "runs as asked" in caplog.text
    caplog.clear()
    monkeypatch.setattr(torch_backend, "_native_cpu_bf16", lambda torch: True)
    with caplog.at_level(logging.WARNING, logger="engine.backends.torch_backend"):
        get_factory("torch", precision="bf16", channels_last=False)
    assert "bf16" not in caplog.text


def test_torch_bucket_pads_to_powers_of_two():
    from engine.backends.torch_backend import _bucket

    assert [_bucket(n, 64) for n in (1, 2, 3, 5, 33, 64)] == [1, 2, 4, 8, 64, 64]
    assert _bucket(100, 64) == 100  # never below n (the caller splits at max_batch)


# ---------------------------------------------------------------------------- parity


@pytest.fixture(scope="module")
def model_dir(request) -> Path:
    pytest.importorskip("torch")
    return gpu_model_dir(request)


@pytest.fixture(scope="module")
def crops(shared_dir) -> np.ndarray:
    from preprocess.scrfd import SCRFDDetector

    videos = shared_dir / "videos"
    if missing_clips(videos):
        pytest.skip(f"test clips {missing_clips(videos)} not found in {videos}")
    return face_crops(
        videos, SCRFDDetector.from_file(shared_dir / "models" / "det_500m.onnx"), PER_CLIP
    )


def _clip_and_frame_p_fake(logits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    from core.reduce import reduce_logits, softmax

    clips = [
        softmax(reduce_logits(logits[i : i + PER_CLIP], "mean"))[0]
        for i in range(0, len(logits), PER_CLIP)
    ]
    return np.asarray(clips), softmax(logits)[:, 0]


@pytest.fixture(scope="module")
def reference(model_dir, crops) -> tuple[np.ndarray, np.ndarray]:
    from core.sidecar import load_sidecar

    spec = load_sidecar(model_dir)
    ort = get_factory("ort")("classifier", spec.classifier_file, spec=spec)
    return _clip_and_frame_p_fake(ort.infer({"frames": crops}, ["logits"])["logits"])


def _check(model_dir, crops, reference, backend, precision, options) -> dict:
    from core.sidecar import load_sidecar

    spec = load_sidecar(model_dir)
    fac = get_factory(backend, precision=precision, **options)
    runner = fac("classifier", spec.classifier_for(precision), spec=spec)
    out = runner.infer({"frames": crops}, ["logits"])
    assert set(out) == {"logits"} and out["logits"].dtype == np.float32
    clips, frames = _clip_and_frame_p_fake(out["logits"])
    desc = runner.describe()
    assert desc["precision"] == precision
    clip_delta = float(np.abs(clips - reference[0]).max())
    frame_delta = float(np.abs(frames - reference[1]).max())
    # one line per case, collected by benchmarks/gpu_check.py
    figures = {"clip_max_delta": clip_delta, "frame_max_delta": frame_delta, "crops": len(crops)}
    print(f"\nPARITY {json.dumps({'what': 'classifier', **desc, **figures})}")
    assert clip_delta <= CLIP_TOL[precision]
    assert frame_delta <= FRAME_TOL[precision]
    assert np.ptp(reference[1]) > 0.05  # the test model's outputs are spread out
    return desc


CPU_CASES = [("fp32", {}), ("bf16", {})]
CUDA_CASES = [
    ("fp32", {"channels_last": False}),
    ("fp32", {"channels_last": True}),
    ("fp32", {"cuda_graphs": True, "max_batch": 16}),
    ("fp16", {}),
    ("fp16", {"cuda_graphs": True, "max_batch": 16}),
    ("bf16", {}),
]


@pytest.mark.model  # the session's exported test checkpoint (gpu_model_dir)
@pytest.mark.parametrize(("precision", "options"), CPU_CASES)
def test_torch_cpu_classifier_matches_onnxruntime(model_dir, crops, reference, precision, options):
    desc = _check(model_dir, crops, reference, "torch", precision, options)
    assert desc["device"] == "cpu"


@pytest.mark.gpu
@pytest.mark.model
@pytest.mark.parametrize(("precision", "options"), CUDA_CASES)
def test_torch_cuda_classifier_matches_onnxruntime(model_dir, crops, reference, precision, options):
    desc = _check(model_dir, crops, reference, "torch-cuda", precision, options)
    assert desc["device"].startswith("cuda")
