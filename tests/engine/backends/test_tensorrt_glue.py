"""TensorRT build and runtime glue on CPU, with TensorRT and cuda-python replaced by stand-ins
(``_fake_trt``): which graph and profile go to the builder, the timing cache, the engine cache,
pinned buffers, the range check before launch, copies out of reused buffers. The real TensorRT
path is only exercised by the GPU tests (tests/engine/test_tensorrt_gpu.py)."""

from __future__ import annotations

import sys
import threading

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from core.errors import InvalidInputError, MissingDependencyError
from engine.backends.engine_cache import DeviceInfo, meta_path
from engine.backends.trt_build import (
    compile_onnx,
    detector_profiles,
    ensure_graph_engine,
    graph_precision,
    graph_profiles,
    onnx_input_dims,
)
from tests.engine.backends._fake_trt import PLAN, FakeCudart, FakeTensorRT

DEVICE = DeviceInfo("Fake GPU 80GB", "9.0", FakeTensorRT.__version__)


@pytest.fixture
def fake_trt(monkeypatch):
    trt = FakeTensorRT()
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    return trt


@pytest.fixture
def fake_cuda(monkeypatch):
    rt = FakeCudart()
    monkeypatch.setattr("engine.backends.cuda_runtime.import_cudart", lambda: rt)
    return rt


@pytest.fixture
def tiny_classifier(tmp_path):
    """frames [N, 3, 112, 112] -> logits [N, 2]: a graph with the classifier's I/O."""
    w = numpy_helper.from_array(np.ones((3, 2), np.float32), "w")
    graph = helper.make_graph(
        [
            helper.make_node("GlobalAveragePool", ["frames"], ["p"]),
            helper.make_node("Flatten", ["p"], ["f"]),
            helper.make_node("MatMul", ["f", "w"], ["logits"]),
        ],
        "tiny",
        [helper.make_tensor_value_info("frames", TensorProto.FLOAT, ["frames", 3, 112, 112])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["frames", 2])],
        [w],
    )
    path = tmp_path / "classifier.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def test_profiles_from_graph_dims(tiny_classifier, shared_dir):
    dims = onnx_input_dims(tiny_classifier)
    assert dims == {"frames": ["frames", 3, 112, 112]}
    (p,) = graph_profiles("classifier", dims, max_batch=64)
    assert (p.min, p.opt, p.max) == ((1, 3, 112, 112), (64, 3, 112, 112), (64, 3, 112, 112))
    (h,) = graph_profiles("head", {"features": ["videos", "steps", 2048]}, max_batch=16)
    assert h.min == (1, 1, 2048) and h.max == (16, 256, 2048)
    det = onnx_input_dims(shared_dir / "models" / "scrfd_500m_kps_dynamic.onnx")
    (d,) = detector_profiles(det, batch=16, input_size=640)
    assert d.min == (1, 3, 640, 640) and d.max == (16, 3, 640, 640)


def test_graph_precision():
    assert graph_precision("classifier", "int8") == "int8"
    assert graph_precision("head", "int8") == "fp16"
    assert graph_precision("head", "fp32") == "fp32"
    assert graph_precision("detector", "fp32") == "fp16"


def test_compile_onnx_sets_profile_flags_and_timing_cache(fake_trt, tiny_classifier, tmp_path):
    (profile,) = graph_profiles("classifier", onnx_input_dims(tiny_classifier), max_batch=32)
    cache = tmp_path / "t.cache"
    plan = compile_onnx(tiny_classifier, precision="fp16", profiles=[profile], timing_cache=cache)
    assert plan == PLAN
    rec = fake_trt.builds[-1]
    assert rec["flags"] == {"FP16"}
    assert rec["profiles"] == [{"frames": ((1, 3, 112, 112), (32, 3, 112, 112), (32, 3, 112, 112))}]
    assert rec["source"] == ("file", str(tiny_classifier))
    assert rec["timing_cache_in"] == b"" and cache.read_bytes() == b"TIMING"
    compile_onnx(tiny_classifier, precision="int8", profiles=[profile], timing_cache=cache)
    assert fake_trt.builds[-1]["timing_cache_in"] == b"TIMING"  # reused across builds
    assert fake_trt.builds[-1]["flags"] == {"FP16", "INT8"}


def test_int8_engines_are_built_from_the_tensorrt_form_of_the_qdq_graph(fake_trt, tmp_path):
    from tests.engine.backends._qdq_models import tiny_qdq_model

    path = tmp_path / "classifier.int8.onnx"
    onnx.save(tiny_qdq_model(), path)
    result = ensure_graph_engine(
        "classifier", path, precision="int8", max_batch=4, device=DEVICE, cache_dir=tmp_path
    )
    assert result.built
    kind, data = fake_trt.builds[-1]["source"]
    assert kind == "bytes"
    parsed = onnx.load_model_from_string(data)
    zps = [i for i in parsed.graph.initializer if i.name.endswith("_trt")]
    assert zps and all(i.data_type != TensorProto.UINT8 for i in parsed.graph.initializer)


def test_ensure_graph_engine_caches_by_key(fake_trt, tiny_classifier, tmp_path):
    def build(device: DeviceInfo):
        return ensure_graph_engine(
            "classifier", tiny_classifier, precision="fp16", max_batch=8, device=device,
            cache_dir=tmp_path,
        )  # fmt: skip

    first = build(DEVICE)
    assert first.built and meta_path(first.path).is_file()
    again = build(DEVICE)
    assert not again.built and len(fake_trt.builds) == 1
    upgraded = DeviceInfo(DEVICE.gpu_name, DEVICE.compute_capability, "11.0.0.1")
    rebuilt = build(upgraded)
    assert rebuilt.built and "tensorrt_version" in rebuilt.reason and len(fake_trt.builds) == 2


def test_backend_runs_on_pinned_buffers_and_checks_the_profile(
    fake_trt, fake_cuda, tiny_classifier, tmp_path
):
    from engine.backends import get_factory

    factory = get_factory("trt", precision="fp16", max_batch=8, cache_dir=str(tmp_path))
    assert factory.name == "tensorrt" and factory.device.gpu_name == "Fake GPU 80GB"
    runner = factory("classifier", tiny_classifier, spec=None)
    assert len(fake_trt.builds) == 1  # missing: built, then loaded
    x = np.random.default_rng(0).normal(size=(5, 3, 112, 112)).astype(np.float32)
    out = runner.infer({"frames": x}, ["logits"])["logits"]
    m = x.reshape(5, -1).mean(1)
    np.testing.assert_allclose(out, np.stack([m, -m], 1), rtol=1e-5)
    assert fake_cuda.synced == 1
    out[:] = 0  # outputs are copies: the pinned buffers are reused by the next call
    small = runner.infer({"frames": x[:2]}, ["logits"])["logits"]
    assert small.shape == (2, 2) and np.allclose(small[:, 0], m[:2], rtol=1e-5)
    ctx = fake_trt.engines[-1].contexts[-1]
    with pytest.raises(InvalidInputError, match=r"axis 0 must be in \[1, 8\], got 9"):
        runner.infer({"frames": np.zeros((9, 3, 112, 112), np.float32)}, ["logits"])
    assert ctx.launches == 2  # the bad batch never reached the GPU
    # the second runner of the factory shares its stream and lock; the engine comes from cache
    second = factory("classifier", tiny_classifier, spec=None)
    assert len(fake_trt.builds) == 1 and second._lock is runner._lock
    assert second.inputs["frames"].shape == (None, 3, 112, 112)  # from the profile
    assert second.outputs == ("logits",) and second.describe()["backend"] == "tensorrt"
    results = []
    threads = [  # a runner is called the way ONNX Runtime's sessions are, from any thread
        threading.Thread(target=lambda: results.append(second.run(None, {"frames": x})[0]))
        for _ in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(np.allclose(r[:, 0], m, rtol=1e-5) for r in results)
    owned = [p for b in runner._bindings.values() for p in (b.host_ptr, b.device_ptr)]
    assert all(p in fake_cuda.buffers for p in owned)  # alive for the runner's lifetime
    runner.close()
    assert not any(p in fake_cuda.buffers for p in owned)


def test_detector_engine_is_built_from_the_loaded_graph_once(
    fake_trt, tmp_path, shared_dir, monkeypatch
):
    """The detector's engine comes from the graph the loader made (its file and its sha256:
    nothing is hashed or rewritten again), with the detector's profile; then from the cache."""
    from engine.backends import trt_build
    from preprocess.scrfd_graph import load_detector_graph

    graph = load_detector_graph(shared_dir / "models" / "scrfd_500m_kps_dynamic.onnx", verify=False)

    def no_hashing(path):
        raise AssertionError(f"hashed {path} again")

    monkeypatch.setattr(trt_build, "sha256_file", no_hashing)
    kwargs = {"batch": 4, "input_size": 640, "device": DEVICE, "cache_dir": tmp_path}
    first = trt_build.ensure_detector_engine(graph, **kwargs)
    assert first.built and fake_trt.builds[-1]["source"] == ("file", str(graph.path))
    assert fake_trt.builds[-1]["flags"] == {"FP16"}
    (profile,) = fake_trt.builds[-1]["profiles"]
    assert profile[graph.input_name] == ((1, 3, 640, 640), (4, 3, 640, 640), (4, 3, 640, 640))
    again = trt_build.ensure_detector_engine(graph, **kwargs)
    assert not again.built and again.path == first.path and len(fake_trt.builds) == 1


def test_tensorrt_detector_is_the_scrfd_maths_over_an_engine_runner(
    fake_trt, fake_cuda, tmp_path, shared_dir, monkeypatch
):
    """factory.detector(): the engine of the loaded graph (asked with the detector's batch and
    input size), a runner over it, and SCRFDDetector over that runner, which takes the runner's
    fixed square input (the engine's profile) and so letterboxes to it. The runner here is
    ONNX Runtime declaring that profile, standing in for the engine the fake cannot run."""
    from core.onnx_session import create_session
    from engine.backends import get_factory, trt_build
    from engine.backends.base import DetectorOptions, TensorSpec
    from engine.backends.engine_cache import EnsureResult
    from engine.backends.ort_backend import OrtBackend
    from preprocess.scrfd import DetectorConfig, SCRFDDetector
    from preprocess.scrfd_graph import load_detector_graph

    models = shared_dir / "models"
    graph = load_detector_graph(models / "det_500m.onnx")  # the shipped rewrite: nothing written
    asked: dict = {}

    def ensure(g, **kwargs):
        asked.update(kwargs, graph=g)
        path = tmp_path / "detector.engine"
        path.write_bytes(PLAN)
        return EnsureResult(path, True, "missing")

    monkeypatch.setattr(trt_build, "ensure_detector_engine", ensure)
    factory = get_factory("tensorrt", cache_dir=str(tmp_path))
    runner = OrtBackend("tensorrt", create_session(graph.path))
    runner.inputs = {
        graph.input_name: TensorSpec(graph.input_name, np.dtype(np.float32), (None, 3, 640, 640))
    }
    loaded: list = []
    monkeypatch.setattr(factory, "runner", lambda name, path: loaded.append((name, path)) or runner)
    config = DetectorConfig(input_size=640, batch_size=4, input_shape="frame")
    det = factory.detector(graph, DetectorOptions(config, model_dir=tmp_path))
    assert isinstance(det, SCRFDDetector) and det.graph is graph
    assert asked == {
        "graph": graph,
        "batch": 4,
        "input_size": 640,
        "device": factory.device,
        "cache_dir": tmp_path,
        "model_dir": tmp_path,
    }
    assert loaded == [("detector", tmp_path / "detector.engine")]
    assert det.fixed_input and det.config.input_shape == "square"
    frame = np.zeros((360, 640, 3), np.uint8)
    frame[100:260, 250:390] = 200
    ref = SCRFDDetector.from_file(models / "det_500m.onnx", input_shape="square")
    assert det.detect([frame]) == ref.detect([frame])


def test_tensorrt_backend_without_tensorrt_names_the_gpu_extra(monkeypatch):
    from engine.backends import AUTO_ORDER, get_factory

    assert AUTO_ORDER[0] == "tensorrt"
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    for name in ("tensorrt", "trt"):
        with pytest.raises(MissingDependencyError, match=r"deepfake-engine\[gpu\]"):
            get_factory(name)
    assert get_factory("auto").name in ("ort-cuda", "ort")  # auto moves on to ONNX Runtime
    assert get_factory("auto", precision="int8").name == "ort"
    with pytest.raises(InvalidInputError, match="does not run precision int8"):
        get_factory("torch", precision="int8")
