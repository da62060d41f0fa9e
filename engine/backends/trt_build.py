"""Compile TensorRT engines for a model directory (``dfe build`` with TensorRT present).

NOT TESTED ON A GPU: written without TensorRT or an NVIDIA GPU at hand. The decisions around it
(profiles, keys, cache lookup and rebuild) are plain functions in
:mod:`engine.backends.engine_cache`, unit-tested on CPU.

- classifier: fp32, fp16 (from ``classifier.onnx``), or int8 (from the Q/DQ
  ``classifier.int8.onnx`` of ``dfe build --precision int8``, in its TensorRT form
  :func:`engine.backends.trt_qdq.tensorrt_qdq`); one optimisation profile over the frame-batch
  axis (min 1, opt = max = ``--max-batch``).
- sequence head (variant ``sequence``): profile over videos (1..max batch) and steps
  (1..``MAX_STEPS``).
- SCRFD detector: the batch-dynamic graph (:func:`preprocess.scrfd_graph.make_batch_dynamic`),
  fp16, batch 1..detector batch at a fixed square input size.
- a timing cache per TensorRT version and GPU, reused across builds.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from core.deps import require
from core.errors import EngineError, ModelFormatError
from core.hashing import sha256_file
from engine.backends.engine_cache import (
    DeviceInfo,
    EnsureResult,
    TensorProfile,
    batch_ranges,
    cache_key,
    default_cache_dir,
    ensure_engine,
    profile_shapes,
    timing_cache_path,
)

if TYPE_CHECKING:
    from preprocess.scrfd_graph import DetectorGraph

log = logging.getLogger(__name__)

MAX_STEPS = 256  # longest sequence the sequence-variant head engine accepts
WORKSPACE_BYTES = 4 << 30
DETECTOR_OPT_BATCH = None  # None: the detector batch itself


def graph_precision(graph: str, precision: str) -> str:
    """The precision an engine of ``graph`` is built in for a model run at ``precision``: the
    classifier as asked; the sequence head in fp16 unless fp32 (it has no Q/DQ graph); the
    detector always in fp16."""
    if graph == "classifier":
        return precision
    if graph == "head":
        return "fp32" if precision == "fp32" else "fp16"
    return "fp16"


def onnx_input_dims(path: Path) -> dict[str, list[int | str | None]]:
    """Graph inputs (not initializers) and their dims: int, a dim name, or None."""
    onnx = require("onnx")
    model = onnx.load(str(path), load_external_data=False)
    inits = {i.name for i in model.graph.initializer}
    out = {}
    for value in model.graph.input:
        if value.name in inits:
            continue
        dims: list[int | str | None] = []
        for d in value.type.tensor_type.shape.dim:
            if d.HasField("dim_value") and d.dim_value > 0:
                dims.append(int(d.dim_value))
            else:
                dims.append(d.dim_param or None)
        out[value.name] = dims
    return out


def graph_profiles(
    graph: str, dims: Mapping[str, Sequence[int | str | None]], *, max_batch: int
) -> list[TensorProfile]:
    """Profiles for the classifier (``frames``: batch axis) or the sequence head
    (``features``: videos and steps)."""
    if graph == "head":
        return [
            profile_shapes(name, d, {0: batch_ranges(max_batch, opt=1), 1: (1, 60, MAX_STEPS)})
            for name, d in dims.items()
        ]
    return [profile_shapes(name, d, {0: batch_ranges(max_batch)}) for name, d in dims.items()]


def detector_profiles(
    dims: Mapping[str, Sequence[int | str | None]], *, batch: int, input_size: int
) -> list[TensorProfile]:
    size = (input_size, input_size, input_size)
    return [
        profile_shapes(name, d, {0: batch_ranges(batch, opt=DETECTOR_OPT_BATCH), 2: size, 3: size})
        for name, d in dims.items()
    ]


def compile_onnx(
    source: Path | bytes,
    *,
    precision: str,
    profiles: Sequence[TensorProfile],
    timing_cache: Path,
    workspace_bytes: int = WORKSPACE_BYTES,
) -> bytes:
    """Parse an ONNX graph (a path, or serialized bytes) and build a serialized engine."""
    trt = require("tensorrt", purpose="compiling TensorRT engines")
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # TensorRT 10: explicit batch is the only mode
    parser = trt.OnnxParser(network, logger)
    ok = parser.parse_from_file(str(source)) if isinstance(source, Path) else parser.parse(source)
    if not ok:
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ModelFormatError(f"TensorRT could not parse the ONNX graph: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_bytes)
    if precision in ("fp16", "int8"):
        config.set_flag(trt.BuilderFlag.FP16)  # layers left unquantized may run in fp16
    if precision == "int8" and hasattr(trt.BuilderFlag, "INT8"):
        config.set_flag(trt.BuilderFlag.INT8)  # explicit Q/DQ network
    profile = builder.create_optimization_profile()
    for p in profiles:
        profile.set_shape(p.name, p.min, p.opt, p.max)
    config.add_optimization_profile(profile)
    cache_bytes = timing_cache.read_bytes() if timing_cache.is_file() else b""
    cache = config.create_timing_cache(cache_bytes)
    config.set_timing_cache(cache, ignore_mismatch=False)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise EngineError(
            "TensorRT failed to build the engine (see its log above); check the GPU memory "
            "and the ONNX graph"
        )
    timing_cache.parent.mkdir(parents=True, exist_ok=True)
    timing_cache.write_bytes(bytes(memoryview(config.get_timing_cache().serialize())))
    return bytes(memoryview(plan))


def _tensorrt_source(onnx_path: Path, precision: str) -> Path | bytes:
    """What TensorRT parses: the graph itself, or the TensorRT form of the Q/DQ graph."""
    if precision != "int8":
        return onnx_path
    onnx = require("onnx")
    from engine.backends.trt_qdq import tensorrt_qdq

    return tensorrt_qdq(onnx.load(str(onnx_path))).SerializeToString()


def ensure_graph_engine(
    graph: str,
    onnx_path: Path,
    *,
    precision: str,
    max_batch: int,
    device: DeviceInfo,
    cache_dir: Path | None = None,
    model_dir: Path | None = None,
    rebuild: bool = False,
) -> EnsureResult:
    """The engine of a model graph (``classifier`` or ``head``): cached, or built now."""
    profiles = graph_profiles(graph, onnx_input_dims(onnx_path), max_batch=max_batch)
    key = cache_key(
        graph=graph,
        onnx_sha256=sha256_file(onnx_path),
        precision=precision,
        profiles=profiles,
        device=device,
    )
    directory = cache_dir or default_cache_dir(model_dir)
    return ensure_engine(
        directory,
        key,
        lambda: compile_onnx(
            _tensorrt_source(onnx_path, precision),
            precision=precision,
            profiles=profiles,
            timing_cache=timing_cache_path(directory, device),
        ),
        rebuild=rebuild,
        onnx_file=onnx_path.name,
    )


def ensure_detector_engine(
    graph: DetectorGraph,
    *,
    batch: int,
    input_size: int,
    device: DeviceInfo,
    cache_dir: Path | None = None,
    model_dir: Path | None = None,
    rebuild: bool = False,
) -> EnsureResult:
    """The fp16 engine of the batch-dynamic SCRFD ``graph`` (loaded once by
    :func:`preprocess.scrfd_graph.load_detector_graph`, which gives its sha256 too): cached, or
    built now."""
    batched = graph.path
    profiles = detector_profiles(onnx_input_dims(batched), batch=batch, input_size=input_size)
    key = cache_key(
        graph=f"detector-{graph.source.stem}",
        onnx_sha256=graph.sha256,
        precision="fp16",
        profiles=profiles,
        device=device,
    )
    directory = cache_dir or default_cache_dir(model_dir)
    return ensure_engine(
        directory,
        key,
        lambda: compile_onnx(
            batched,
            precision="fp16",
            profiles=profiles,
            timing_cache=timing_cache_path(directory, device),
        ),
        rebuild=rebuild,
        onnx_file=batched.name,
    )


@dataclass(frozen=True)
class BuiltEngine:
    graph: str
    precision: str
    path: Path
    built: bool
    reason: str


def build_engines(
    model_dir: Path,
    *,
    precision: str,
    max_batch: int,
    detector_path: Path | None,
    detector_batch: int,
    detector_input: int,
    cache_dir: Path | None = None,
    rebuild: bool = False,
    device_id: int = 0,
) -> list[BuiltEngine]:
    """Every engine ``dfe predict --backend tensorrt --precision P`` will load for a model."""
    from core.sidecar import load_sidecar
    from engine.backends.cuda_runtime import device_info

    spec = load_sidecar(model_dir)
    device = device_info(device_id)
    out: list[BuiltEngine] = []
    graphs: list[tuple[str, Path, str]] = [
        ("classifier", spec.classifier_for(precision), precision)
    ]
    if spec.head_file is not None:
        graphs.append(("head", spec.head_file, graph_precision("head", precision)))
    for graph, onnx_path, prec in graphs:
        r = ensure_graph_engine(
            graph,
            onnx_path,
            precision=prec,
            max_batch=max_batch,
            device=device,
            cache_dir=cache_dir,
            model_dir=spec.directory,
            rebuild=rebuild,
        )
        out.append(BuiltEngine(graph, prec, r.path, r.built, r.reason))
    if detector_path is not None:
        from preprocess.scrfd_graph import load_detector_graph

        r = ensure_detector_engine(
            load_detector_graph(detector_path),
            batch=detector_batch,
            input_size=detector_input,
            device=device,
            cache_dir=cache_dir,
            model_dir=spec.directory,
            rebuild=rebuild,
        )
        out.append(BuiltEngine("detector", "fp16", r.path, r.built, r.reason))
    return out
