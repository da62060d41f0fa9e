"""Backends run exactly the precision asked for, or refuse; none switches on its own."""

from __future__ import annotations

import numpy as np
import pytest

from core.errors import BackendUnavailableError, InvalidInputError
from engine.backends import PRECISION_BACKENDS, get_factory


def test_each_precision_lists_its_backends():
    assert PRECISION_BACKENDS["fp32"][0] == "tensorrt" and "ort" in PRECISION_BACKENDS["fp32"]
    assert set(PRECISION_BACKENDS["fp16"]) == {"tensorrt", "ort-tensorrt", "torch-cuda"}
    assert set(PRECISION_BACKENDS["bf16"]) == {"torch-cuda", "torch"}
    assert set(PRECISION_BACKENDS["int8"]) == {"tensorrt", "ort"}


@pytest.mark.parametrize(
    "backend,precision",
    [("ort", "fp16"), ("ort", "bf16"), ("ort-cuda", "fp16"), ("torch", "fp16"), ("torch", "int8")],
)
def test_backend_refuses_a_precision_it_cannot_run(backend, precision):
    with pytest.raises(InvalidInputError, match=f"does not run precision {precision}"):
        get_factory(backend, precision=precision)


def test_ort_tensorrt_compiles_fp16_only_when_asked(monkeypatch):
    from engine.backends import ort_backend

    monkeypatch.setattr(ort_backend, "check_available", lambda providers, what: None)
    for precision, fp16 in (("fp32", False), ("fp16", True)):
        factory = ort_backend.tensorrt_factory(precision=precision)
        trt_options = factory.providers[0][1]
        assert factory.precision == precision and trt_options["trt_fp16_enable"] is fp16
    with pytest.raises(InvalidInputError, match="does not run precision int8"):
        ort_backend.tensorrt_factory(precision="int8")


def test_ort_backend_runs_like_an_onnxruntime_session(tiny_model):
    factory = get_factory("ort")
    backend = factory("classifier", tiny_model / "classifier.onnx")
    x = np.random.default_rng(0).normal(size=(2, 3, 112, 112)).astype(np.float32)
    (logits,) = backend.run(["logits"], {"frames": x})
    assert logits.shape == (2, 2)
    assert backend.run(None, {"frames": x})[0].shape == (2, 2)
    with pytest.raises(InvalidInputError, match="dtype"):
        backend.run(["logits"], {"frames": x.astype(np.float64)})


def test_torch_cuda_without_a_gpu_is_an_error_not_cpu():
    pytest.importorskip("torch")
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    for precision in ("fp32", "fp16", "bf16"):
        with pytest.raises(BackendUnavailableError, match="CUDA is not available"):
            get_factory("torch-cuda", precision=precision)


def test_auto_with_a_torch_only_precision_names_the_backends():
    with pytest.raises(InvalidInputError, match="backends for bf16: torch-cuda, torch"):
        get_factory("auto", precision="bf16")
