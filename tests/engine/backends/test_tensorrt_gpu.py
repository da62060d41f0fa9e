"""TensorRT on a real NVIDIA GPU: ``dfe build`` then predict with ``--backend tensorrt``.

Marked ``gpu``: skipped without a GPU, failing under REQUIRE_GPU=1 when the GPU, TensorRT or
cuda-python is missing. These tests have NOT been run yet (no GPU with TensorRT was available
when they were written).
"""

from __future__ import annotations

import shutil

import pytest

from core.errors import InvalidInputError
from engine.api import Engine

pytestmark = pytest.mark.gpu

FP16_MAX_DELTA = 0.01  # |delta p_fake| vs fp32 ONNX Runtime
INT8_MAX_DELTA = 0.05  # TensorRT's symmetric INT8 form; see tensorrt_form_accuracy


@pytest.fixture(scope="module")
def model_copy(exported_model, tmp_path_factory):
    d = tmp_path_factory.mktemp("model_trt")
    (d / "classifier.onnx").symlink_to(exported_model / "classifier.onnx")
    shutil.copy(exported_model / "classifier.json", d / "classifier.json")
    return d


def _build(model_dir, shared_dir, *args):
    from engine.cli import main

    rc = main(
        [
            "build",
            str(model_dir),
            *args,
            "--models",
            str(shared_dir / "models"),
            "--no-download",
            "--max-batch",
            "64",
        ]
    )
    assert rc == 0


def _engines(model_dir, shared_dir, precision):
    common = {"models_dir": str(shared_dir / "models"), "download": False}
    return (
        Engine.load(model_dir, backend="ort", **common),
        Engine.load(model_dir, backend="tensorrt", precision=precision, **common),
    )


def test_build_fp16_then_predict_on_tensorrt(model_copy, shared_dir, video_paths):
    _build(model_copy, shared_dir, "--precision", "fp16")
    engines = sorted((model_copy / "engines").glob("*.engine"))
    names = " ".join(p.name for p in engines)
    assert "classifier.fp16." in names and "detector-" in names
    assert all(p.with_name(p.name + ".json").is_file() for p in engines)
    ref, trt = _engines(model_copy, shared_dir, "fp16")
    assert trt.backend == "tensorrt"
    for r, g in zip(ref.predict_many(video_paths, seq_len=20), trt.predict_many(video_paths)):
        assert r.ok and g.ok
        assert abs(g.p_fake - r.p_fake) <= FP16_MAX_DELTA, (r.video, r.p_fake, g.p_fake)
    # a second build finds everything cached
    _build(model_copy, shared_dir, "--precision", "fp16")
    assert sorted((model_copy / "engines").glob("*.engine")) == engines


def test_build_int8_tensorrt_engine_from_the_qdq_graph(model_copy, shared_dir, video_paths):
    _build(model_copy, shared_dir, "--precision", "int8")
    assert (model_copy / "classifier.int8.onnx").is_file()
    ref, trt = _engines(model_copy, shared_dir, "int8")
    for r, g in zip(ref.predict_many(video_paths, seq_len=20), trt.predict_many(video_paths)):
        assert abs(g.p_fake - r.p_fake) <= INT8_MAX_DELTA, (r.video, r.p_fake, g.p_fake)


def test_tensorrt_rejects_a_batch_outside_the_profile(model_copy, shared_dir):
    import numpy as np

    _build(model_copy, shared_dir, "--precision", "fp16")
    trt = Engine.load(
        model_copy,
        backend="tensorrt",
        precision="fp16",
        models_dir=str(shared_dir / "models"),
        batch_size=64,
    )
    classifier, _ = trt._get_runners(trt.catalog.specs[0])
    with pytest.raises(InvalidInputError, match=r"must be in \[1, 64\], got 65"):
        classifier.infer({"frames": np.zeros((65, 3, 112, 112), np.float32)})
