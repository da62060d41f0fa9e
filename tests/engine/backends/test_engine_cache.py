"""The TensorRT engine cache as plain functions, on CPU: profiles, range checks, keys, lookup and
the rebuild decisions (the build itself is a stand-in function here)."""

from __future__ import annotations

import json

import pytest

from core.errors import InvalidInputError
from engine.backends.engine_cache import (
    DeviceInfo,
    TensorProfile,
    batch_ranges,
    cache_key,
    check_in_profile,
    engine_path,
    engine_status,
    ensure_engine,
    find_engine,
    key_digest,
    key_mismatch,
    meta_path,
    profile_shapes,
    timing_cache_path,
)

H100 = DeviceInfo("NVIDIA H100 80GB HBM3", "9.0", "10.8.0.43")
FRAMES = ["frames", 3, 112, 112]


def _key(max_batch=64, *, device=H100, precision="fp16", sha="a" * 64, graph="classifier"):
    prof = profile_shapes("frames", FRAMES, {0: batch_ranges(max_batch)})
    return cache_key(
        graph=graph, onnx_sha256=sha, precision=precision, profiles=[prof], device=device
    )


class FakeBuilder:
    """Counts builds; each plan's bytes name the build."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self) -> bytes:
        self.calls += 1
        return f"PLAN-{self.calls}".encode() * 100


# ------------------------------------------------------------------------------ profiles


def test_profile_shapes_batch_axis_min_1_opt_max():
    p = profile_shapes("frames", FRAMES, {0: batch_ranges(64)})
    assert p == TensorProfile("frames", (1, 3, 112, 112), (64, 3, 112, 112), (64, 3, 112, 112))
    p = profile_shapes("frames", FRAMES, {0: batch_ranges(64, opt=20)})
    assert p.opt == (20, 3, 112, 112)


def test_profile_shapes_detector_fixed_square_input():
    dims = ["batch", 3, "height", "width"]
    p = profile_shapes("input.1", dims, {0: batch_ranges(16), 2: (640,) * 3, 3: (640,) * 3})
    assert p.min == (1, 3, 640, 640) and p.max == (16, 3, 640, 640)


@pytest.mark.parametrize(
    ("dims", "ranges", "match"),
    [
        (FRAMES, {}, r"axis 0 \('frames'\) is dynamic"),
        (FRAMES, {0: (1, 1, 1), 1: (1, 2, 3)}, r"fixed at 3 in the graph.*supported value: 3"),
        (FRAMES, {0: (0, 1, 4)}, r"1 <= min <= opt <= max"),
        (FRAMES, {0: (1, 8, 4)}, r"1 <= min <= opt <= max"),
        (FRAMES, {5: (1, 1, 1)}, r"no axis \[5\]"),
    ],
)
def test_profile_shapes_rejects_bad_ranges(dims, ranges, match):
    with pytest.raises(InvalidInputError, match=match):
        profile_shapes("frames", dims, ranges)


def test_batch_ranges_rejects_non_positive():
    with pytest.raises(InvalidInputError, match="positive integer"):
        batch_ranges(0)


def test_check_in_profile_says_the_allowed_range():
    p = profile_shapes("frames", FRAMES, {0: batch_ranges(64)})
    check_in_profile("classifier", "frames", (1, 3, 112, 112), p)
    check_in_profile("classifier", "frames", (64, 3, 112, 112), p)
    with pytest.raises(InvalidInputError) as info:
        check_in_profile("classifier", "frames", (65, 3, 112, 112), p)
    msg = str(info.value)
    assert "axis 0 must be in [1, 64], got 65" in msg
    assert "1..64 x 3 x 112 x 112" in msg and "--max-batch" in msg
    with pytest.raises(InvalidInputError, match=r"axis 2 must be in \[112, 112\], got 96"):
        check_in_profile("classifier", "frames", (4, 3, 96, 96), p)
    with pytest.raises(InvalidInputError, match="has 3 axes"):
        check_in_profile("classifier", "frames", (4, 3, 112), p)


def test_profile_covers():
    big = profile_shapes("frames", FRAMES, {0: batch_ranges(128)})
    small = profile_shapes("frames", FRAMES, {0: batch_ranges(32)})
    assert big.covers(small) and not small.covers(big)


# ------------------------------------------------------------------------------ keys


def test_cache_key_has_every_field_and_each_changes_the_digest():
    key = _key()
    assert key["onnx_sha256"] == "a" * 64 and key["precision"] == "fp16"
    assert key["tensorrt_version"] == "10.8.0.43" and key["gpu_name"] == H100.gpu_name
    assert key["compute_capability"] == "9.0"
    assert key["profiles"]["frames"]["max"] == [64, 3, 112, 112]
    variants = [
        _key(sha="b" * 64),
        _key(precision="int8"),
        _key(32),
        _key(device=DeviceInfo("NVIDIA A100-SXM4-80GB", "8.0", "10.8.0.43")),
        _key(device=DeviceInfo(H100.gpu_name, "9.0", "10.9.0.34")),
        _key(device=DeviceInfo(H100.gpu_name, "8.9", H100.tensorrt_version)),
    ]
    digests = {key_digest(k) for k in [key, *variants]}
    assert len(digests) == len(variants) + 1
    assert key_digest(_key()) == key_digest(key)  # stable
    with pytest.raises(InvalidInputError, match="supported values are fp32, fp16, int8"):
        _key(precision="bf16")


def test_key_mismatch_names_the_fields():
    other = _key(device=DeviceInfo("NVIDIA L4", "8.9", "10.8.0.43"))
    reasons = key_mismatch(other, _key())
    assert any(r.startswith("gpu_name") for r in reasons)
    assert any(r.startswith("compute_capability") for r in reasons)
    assert key_mismatch(_key(128), _key(64)) == []  # a larger profile serves a smaller one
    assert any("profile of frames" in r for r in key_mismatch(_key(32), _key(64)))


def test_timing_cache_is_per_tensorrt_version_and_gpu(tmp_path):
    a = timing_cache_path(tmp_path, H100)
    assert a.name == "timing.trt10.8.0.43.nvidia-h100-80gb-hbm3.sm9.0.cache"
    assert a != timing_cache_path(tmp_path, DeviceInfo(H100.gpu_name, "9.0", "10.9.0.34"))


# ------------------------------------------------------------------------------ cache decisions


def test_ensure_engine_builds_once_then_uses_the_cache(tmp_path):
    build = FakeBuilder()
    first = ensure_engine(tmp_path, _key(), build)
    assert first.built and first.reason.startswith("missing") and build.calls == 1
    again = ensure_engine(tmp_path, _key(), build)
    assert not again.built and again.reason == "cached" and build.calls == 1
    assert again.path == first.path == engine_path(tmp_path, _key())
    # the key lives in a JSON sidecar next to the engine, never in the engine bytes
    meta = json.loads(meta_path(first.path).read_text())
    assert meta["key"] == _key()
    assert first.path.read_bytes() == b"PLAN-1" * 100
    assert b"onnx_sha256" not in first.path.read_bytes()


@pytest.mark.parametrize(
    "changed",
    [
        _key(device=DeviceInfo(H100.gpu_name, "9.0", "10.9.0.34")),  # TensorRT upgraded
        _key(device=DeviceInfo("NVIDIA L4", "8.9", "10.8.0.43")),  # engines copied to an L4
        _key(sha="c" * 64),  # model re-exported
        _key(precision="int8"),
        _key(256),  # a larger batch than the engine's profile
    ],
)
def test_a_mismatched_engine_is_rebuilt_never_loaded(tmp_path, changed):
    build = FakeBuilder()
    old = ensure_engine(tmp_path, _key(), build).path
    status = find_engine(tmp_path, changed)
    assert not status.ok
    result = ensure_engine(tmp_path, changed, build)
    assert result.built and build.calls == 2 and result.path != old
    assert result.path.read_bytes() == b"PLAN-2" * 100


def test_a_mismatched_key_at_the_exact_path_is_rebuilt(tmp_path):
    """An engine whose sidecar says another GPU, even under the expected file name."""
    build = FakeBuilder()
    path = ensure_engine(tmp_path, _key(), build).path
    meta = json.loads(meta_path(path).read_text())
    meta["key"]["gpu_name"] = "NVIDIA L4"
    meta_path(path).write_text(json.dumps(meta))
    status = engine_status(path, _key())
    assert status.state == "mismatch" and "gpu_name" in status.reasons[0]
    result = ensure_engine(tmp_path, _key(), build)
    assert result.built and result.reason.startswith("mismatch")
    assert engine_status(path, _key()).ok


def test_tampered_or_orphan_engine_is_rebuilt(tmp_path):
    build = FakeBuilder()
    path = ensure_engine(tmp_path, _key(), build).path
    path.write_bytes(b"garbage")
    assert engine_status(path, _key()).state == "corrupt"
    assert ensure_engine(tmp_path, _key(), build).built
    meta_path(path).unlink()  # an engine without its key sidecar is never trusted
    assert engine_status(path, _key()).state == "missing"
    meta_path(path).write_text("{not json")
    assert engine_status(path, _key()).state == "corrupt"
    assert ensure_engine(tmp_path, _key(), build).built and build.calls == 3


def test_an_engine_with_a_larger_profile_serves_smaller_batches(tmp_path):
    build = FakeBuilder()
    big = ensure_engine(tmp_path, _key(128), build).path  # dfe build --max-batch 128
    result = ensure_engine(tmp_path, _key(64), build)  # the runtime asks for batches <= 64
    assert not result.built and result.path == big and build.calls == 1


def test_rebuild_forces_a_build(tmp_path):
    build = FakeBuilder()
    ensure_engine(tmp_path, _key(), build)
    assert ensure_engine(tmp_path, _key(), build, rebuild=True).built and build.calls == 2
