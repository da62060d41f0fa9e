"""Stand-ins for ``tensorrt`` and cuda-python's runtime, to run the glue code on CPU.

They implement only what :mod:`engine.backends.trt_build` and :mod:`engine.backends.trt_backend`
call, with "device" memory that is host memory, and an "engine" that computes, per frame,
logits ``[mean, -mean]`` of its input. They check what the real APIs would: the profile set before
building, tensor addresses bound before launch, shapes inside the profile.
"""

from __future__ import annotations

import ctypes
import enum
from types import SimpleNamespace

import numpy as np

PLAN = b"FAKE-TRT-PLAN"


class FakeCudart:
    class cudaError_t(enum.IntEnum):
        cudaSuccess = 0
        cudaErrorMemoryAllocation = 2

    class cudaMemcpyKind(enum.IntEnum):
        cudaMemcpyHostToDevice = 1
        cudaMemcpyDeviceToHost = 2

    def __init__(self) -> None:
        self.buffers: dict[int, ctypes.Array] = {}
        self.pinned: set[int] = set()
        self.copies: list[tuple[str, int]] = []
        self.synced = 0

    def cudaGetDeviceCount(self):
        return (self.cudaError_t.cudaSuccess, 1)

    def cudaSetDevice(self, device):
        return (self.cudaError_t.cudaSuccess,)

    def cudaGetDeviceProperties(self, device):
        props = SimpleNamespace(name=b"Fake GPU 80GB\0\0\0", major=9, minor=0)
        return (self.cudaError_t.cudaSuccess, props)

    def cudaGetErrorString(self, err):
        return (self.cudaError_t.cudaSuccess, b"fake error")

    def cudaStreamCreate(self):
        return (self.cudaError_t.cudaSuccess, "stream-0")

    def _alloc(self, n):
        buf = ctypes.create_string_buffer(n)
        ptr = ctypes.addressof(buf)
        self.buffers[ptr] = buf
        return ptr

    def cudaMallocHost(self, n):
        ptr = self._alloc(n)
        self.pinned.add(ptr)
        return (self.cudaError_t.cudaSuccess, ptr)

    def cudaMalloc(self, n):
        return (self.cudaError_t.cudaSuccess, self._alloc(n))

    def cudaMemcpyAsync(self, dst, src, n, kind, stream):
        assert stream == "stream-0"
        host = src if kind == self.cudaMemcpyKind.cudaMemcpyHostToDevice else dst
        assert host in self.pinned, "host side of an async copy must be pinned"
        ctypes.memmove(dst, src, n)
        self.copies.append((kind.name, n))
        return (self.cudaError_t.cudaSuccess,)

    def cudaStreamSynchronize(self, stream):
        self.synced += 1
        return (self.cudaError_t.cudaSuccess,)

    def cudaFree(self, ptr):
        self.buffers.pop(ptr)
        return (self.cudaError_t.cudaSuccess,)

    def cudaFreeHost(self, ptr):
        self.pinned.discard(ptr)
        self.buffers.pop(ptr)
        return (self.cudaError_t.cudaSuccess,)


class _Context:
    def __init__(self, engine: _Engine) -> None:
        self.engine = engine
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.addresses: dict[str, int] = {}
        self.launches = 0

    def set_input_shape(self, name, shape):
        lo, _, hi = self.engine.profile
        ok = all(a <= s <= b for a, s, b in zip(lo, shape, hi))
        if ok:
            self.shapes[name] = tuple(shape)
        return ok

    def get_tensor_shape(self, name):
        if name == "frames":
            return self.shapes.get(name, (-1, 3, 112, 112))
        return (self.shapes["frames"][0], 2) if "frames" in self.shapes else (-1, 2)

    def set_tensor_address(self, name, ptr):
        self.addresses[name] = ptr

    def execute_async_v3(self, stream_handle):
        assert stream_handle == "stream-0"
        assert set(self.addresses) == {"frames", "logits"}, "every I/O tensor must be bound"
        shape = self.shapes["frames"]
        n = int(np.prod(shape))
        x = np.ctypeslib.as_array((ctypes.c_float * n).from_address(self.addresses["frames"]))
        m = x.reshape(shape[0], -1).mean(axis=1)
        out = np.ctypeslib.as_array(
            (ctypes.c_float * (2 * shape[0])).from_address(self.addresses["logits"])
        )
        out[:] = np.stack([m, -m], axis=1).reshape(-1)
        self.launches += 1
        return True


class _Engine:
    num_io_tensors = 2

    def __init__(self, profile) -> None:
        self.profile = profile
        self.contexts: list[_Context] = []

    def get_tensor_name(self, i):
        return ("frames", "logits")[i]

    def get_tensor_mode(self, name):
        return TensorIOMode.INPUT if name == "frames" else TensorIOMode.OUTPUT

    def get_tensor_profile_shape(self, name, index):
        assert name == "frames" and index == 0
        return self.profile

    def get_tensor_dtype(self, name):
        return DataType.FLOAT

    def create_execution_context(self):
        ctx = _Context(self)
        self.contexts.append(ctx)
        return ctx


class TensorIOMode(enum.Enum):
    INPUT = 1
    OUTPUT = 2


class DataType(enum.Enum):
    FLOAT = 1


class BuilderFlag(enum.Enum):
    FP16 = 1
    INT8 = 2


class MemoryPoolType(enum.Enum):
    WORKSPACE = 1


class Logger:
    WARNING = 2

    def __init__(self, level=None) -> None:
        self.level = level


class FakeTensorRT:
    """A ``tensorrt`` module stand-in; records what was built."""

    __version__ = "10.99.0.1"
    Logger, TensorIOMode, DataType = Logger, TensorIOMode, DataType
    BuilderFlag, MemoryPoolType = BuilderFlag, MemoryPoolType

    def __init__(self, *, runtime_profile=((1, 3, 112, 112), (8, 3, 112, 112), (8, 3, 112, 112))):
        self.builds: list[dict] = []
        self.runtime_profile = runtime_profile
        self.engines: list[_Engine] = []
        fake = self

        class Builder:
            def __init__(self, logger) -> None:
                self.record: dict = {"flags": set(), "profiles": []}

            def create_network(self, flags):
                return SimpleNamespace()

            def create_builder_config(self):
                record = self.record

                class Config:
                    def set_memory_pool_limit(self, pool, size):
                        record["workspace"] = size

                    def set_flag(self, flag):
                        record["flags"].add(flag.name)

                    def add_optimization_profile(self, profile):
                        record["profiles"].append(profile.shapes)

                    def create_timing_cache(self, data):
                        record["timing_cache_in"] = bytes(data)
                        return SimpleNamespace(serialize=lambda: b"TIMING" + bytes(data)[:6])

                    def set_timing_cache(self, cache, ignore_mismatch):
                        self.cache = cache

                    def get_timing_cache(self):
                        return self.cache

                return Config()

            def build_serialized_network(self, network, config):
                record = self.record
                record["source"] = fake._last_source
                fake.builds.append(record)
                return PLAN

        def _profile(builder):
            shapes: dict = {}

            def set_shape(name, lo, opt, hi):
                shapes[name] = (tuple(lo), tuple(opt), tuple(hi))

            return SimpleNamespace(shapes=shapes, set_shape=set_shape)

        Builder.create_optimization_profile = _profile
        self.Builder = Builder
        self._last_source = None

        class OnnxParser:
            num_errors = 0

            def __init__(self, network, logger) -> None:
                pass

            def parse_from_file(self, path):
                fake._last_source = ("file", path)
                return True

            def parse(self, data):
                fake._last_source = ("bytes", data)
                return True

        self.OnnxParser = OnnxParser

        class Runtime:
            def __init__(self, logger) -> None:
                pass

            def deserialize_cuda_engine(self, plan):
                if bytes(plan) != PLAN:
                    return None
                engine = _Engine(fake.runtime_profile)
                fake.engines.append(engine)
                return engine

        self.Runtime = Runtime

    @staticmethod
    def nptype(dtype):
        return np.float32
