"""Make InsightFace SCRFD ONNX graphs truly batch-dynamic, and prove the result.

The SCRFD files shipped in InsightFace's model packs (``det_500m``, ``det_2.5g``, ``det_10g``)
declare batch 1. Every head ends in ``Transpose(perm=[2, 3, 0, 1])`` followed by
``Reshape(shape=[-1, C])``: with a batch of N the rows come out ordered (h, w, n, anchor), so the
batch is interleaved rather than stacked (InsightFace issues #2878 / #2879). The rewrite here turns
each head into ``Transpose(perm=[0, 2, 3, 1])`` + ``Reshape(shape=[0, -1, C])``, which gives
``[N, H*W*anchors, C]`` with each sample's rows in the same (h, w, anchor) order as a batch-1 run.
The input is declared ``[batch, 3, height, width]`` and the outputs ``[batch, anchors_i, C]``.

Graphs whose outputs are already 3-D with a batch axis (re-exports such as
``scrfd_500m_kps_640x640.onnx``) need no head rewrite; a fixed batch dimension is relaxed.

A rewrite is only saved after :func:`verify_batched` has shown that a batch of different frames
gives the same outputs as batch-1 runs of the original. It is saved in the cache of derived graphs
(:func:`cache_dir`), never next to the user's model file, under a name keyed by the source's
sha256 and the rewrite's version, and it records both in its metadata, so a stale rewrite is never
reused. :func:`load_detector_graph` is the loader every backend's detector starts from: the file is
read, hashed and (if needed) rewritten once per open.
"""

from __future__ import annotations

import hashlib
import logging
import os
import stat
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
import onnx
from onnx import helper, numpy_helper

from core import paths
from core.deps import require
from core.errors import ArtifactNotFoundError, EngineError, ModelFormatError
from core.hashing import file_sha256

logger = logging.getLogger(__name__)

__all__ = [
    "META_REWRITE",
    "META_SOURCE_SHA256",
    "META_VERIFIED_MAX_ABS_DIFF",
    "REWRITE_TAG",
    "REWRITE_VERSION",
    "DetectorGraph",
    "GraphLayout",
    "cache_dir",
    "cpu_detector_model",
    "inspect_scrfd_graph",
    "load_detector_graph",
    "make_batch_dynamic",
    "rewrite_batch_dynamic",
    "rewrite_path",
    "verify_batched",
]

#: Bumped whenever the rewrite changes, so that older rewrites are regenerated: it is part of a
#: cached rewrite's file name (:func:`rewrite_path`) and of its metadata (:data:`REWRITE_TAG`).
REWRITE_VERSION = 1
REWRITE_TAG = f"dfe-scrfd-batch-dynamic/{REWRITE_VERSION}"
META_REWRITE = "dfe.rewrite"
META_SOURCE_SHA256 = "dfe.source_sha256"
META_VERIFIED_MAX_ABS_DIFF = "dfe.verified_max_abs_diff"

_SCRFD_OUTPUT_COUNTS = (6, 9, 10, 15)
_INTERLEAVED_PERM = (2, 3, 0, 1)
_BATCHED_PERM = (0, 2, 3, 1)
# Element-wise ops allowed between a head's Reshape and the graph output (scores end in Sigmoid).
_ELEMENTWISE_TAIL = frozenset({"Sigmoid", "Identity"})
_DEFAULT_TOLERANCE = 1e-4

LayoutKind = Literal["interleaved", "batched_fixed", "batched_dynamic"]


@dataclass(frozen=True)
class GraphLayout:
    """What :func:`inspect_scrfd_graph` found.

    ``kind`` is ``"interleaved"`` for InsightFace's batch-1 packs (head rewrite needed),
    ``"batched_fixed"`` for batch-aware outputs behind a fixed batch dimension (relax it), and
    ``"batched_dynamic"`` for a graph that can be used as it is.
    """

    kind: LayoutKind
    input_name: str
    input_shape: tuple[int | str | None, ...]
    output_names: tuple[str, ...]
    output_channels: tuple[int | None, ...]


@dataclass(frozen=True)
class _Head:
    output: str
    reshape: onnx.NodeProto
    transpose: onnx.NodeProto
    shape: tuple[int, ...]
    perm: tuple[int, ...]


# --------------------------------------------------------------------------------------------
# Helpers


def cache_dir() -> Path:
    """Where rewrites are written: the cache of derived graphs (``$DFE_CACHE``, else
    ``~/.cache/deepfake-engine/graphs``; :func:`core.paths.cache_dir`), never the folder
    of the source."""
    return paths.cache_dir()


def _dims(value: onnx.ValueInfoProto) -> tuple[int | str | None, ...]:
    out: list[int | str | None] = []
    for dim in value.type.tensor_type.shape.dim:
        if dim.HasField("dim_value"):
            out.append(int(dim.dim_value))
        elif dim.HasField("dim_param") and dim.dim_param not in ("", "?"):
            out.append(dim.dim_param)
        else:
            out.append(None)
    return tuple(out)


def _set_dims(value: onnx.ValueInfoProto, dims: Sequence[int | str]) -> None:
    shape = value.type.tensor_type.shape
    shape.ClearField("dim")
    for d in dims:
        dim = shape.dim.add()
        if isinstance(d, str):
            dim.dim_param = d
        else:
            dim.dim_value = int(d)


def _graph_inputs(graph: onnx.GraphProto) -> list[onnx.ValueInfoProto]:
    # Older IR versions list initializers as graph inputs too.
    initializers = {t.name for t in graph.initializer}
    return [v for v in graph.input if v.name not in initializers]


def _constant_values(graph: onnx.GraphProto) -> dict[str, np.ndarray]:
    values = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    values[node.output[0]] = numpy_helper.to_array(attr.t)
    return values


def _perm(node: onnx.NodeProto) -> tuple[int, ...]:
    for attr in node.attribute:
        if attr.name == "perm":
            return tuple(int(i) for i in attr.ints)
    return ()


def _load(model: onnx.ModelProto | str | os.PathLike[str]) -> onnx.ModelProto:
    if isinstance(model, onnx.ModelProto):
        return model
    path = Path(model)
    if not path.is_file():
        raise ArtifactNotFoundError(f"ONNX model not found: {path}")
    try:
        return onnx.load(str(path))
    except Exception as exc:  # protobuf DecodeError and friends
        raise ModelFormatError(f"{path} is not a readable ONNX model ({exc})") from exc


# --------------------------------------------------------------------------------------------
# Inspection and rewrite (pure, in memory)


def _trace_head(
    output: str,
    producers: dict[str, onnx.NodeProto],
    constants: dict[str, np.ndarray],
) -> _Head | str:
    """Follow an output back to ``Transpose -> Reshape``; a string says what was found instead."""
    node = producers.get(output)
    while node is not None and node.op_type in _ELEMENTWISE_TAIL:
        node = producers.get(node.input[0])
    if node is None or node.op_type != "Reshape":
        found = "a graph input" if node is None else node.op_type
        return f"{output!r} is produced by {found}, expected Reshape (after Transpose)"
    if node.input[1] not in constants:
        return f"{output!r}: Reshape takes its shape from a computed tensor, not a constant"
    shape = tuple(int(v) for v in constants[node.input[1]].reshape(-1))
    transpose = producers.get(node.input[0])
    if transpose is None or transpose.op_type != "Transpose":
        found = "a graph input" if transpose is None else transpose.op_type
        return f"{output!r}: Reshape input comes from {found}, expected Transpose"
    return _Head(output, node, transpose, shape, _perm(transpose))


def inspect_scrfd_graph(model: onnx.ModelProto) -> GraphLayout:
    """Classify an SCRFD graph's batch layout, or raise :class:`ModelFormatError` saying why not."""
    graph = model.graph
    inputs = _graph_inputs(graph)
    if len(inputs) != 1:
        raise ModelFormatError(
            f"expected an SCRFD graph with exactly one image input, found {len(inputs)}: "
            f"{[v.name for v in inputs]}"
        )
    input_shape = _dims(inputs[0])
    if len(input_shape) != 4 or input_shape[1] not in (3, None):
        raise ModelFormatError(
            f"expected an NCHW input [N, 3, H, W], found {inputs[0].name!r} with shape "
            f"{list(input_shape)}"
        )
    outputs = list(graph.output)
    if len(outputs) not in _SCRFD_OUTPUT_COUNTS:
        raise ModelFormatError(
            f"expected an SCRFD graph with {', '.join(map(str, _SCRFD_OUTPUT_COUNTS))} outputs "
            f"(scores, boxes[, keypoints] per stride), found {len(outputs)}"
        )
    shapes = [_dims(o) for o in outputs]
    ranks = {len(s) for s in shapes}
    names = tuple(o.name for o in outputs)
    channels = tuple(s[-1] if s and isinstance(s[-1], int) else None for s in shapes)

    if ranks == {3}:
        fixed = isinstance(input_shape[0], int) or any(isinstance(s[0], int) for s in shapes)
        kind: LayoutKind = "batched_fixed" if fixed else "batched_dynamic"
        return GraphLayout(kind, inputs[0].name, input_shape, names, channels)

    if ranks != {2}:
        raise ModelFormatError(
            "expected SCRFD outputs that are all 2-D [anchors, C] (InsightFace batch-1 packs) or "
            f"all 3-D [batch, anchors, C], found ranks {[len(s) for s in shapes]}"
        )

    producers = {out: node for node in graph.node for out in node.output}
    constants = _constant_values(graph)
    problems: list[str] = []
    for name in names:
        head = _trace_head(name, producers, constants)
        if isinstance(head, str):
            problems.append(head)
        elif head.perm != _INTERLEAVED_PERM or len(head.shape) != 2 or head.shape[0] != -1:
            problems.append(
                f"{name!r}: found Transpose perm {list(head.perm)} + Reshape {list(head.shape)}, "
                f"expected perm {list(_INTERLEAVED_PERM)} + Reshape [-1, C]"
            )
    if problems:
        raise ModelFormatError(
            "unrecognised SCRFD head layout; expected every output to end in "
            "Transpose(perm=[2, 3, 0, 1]) -> Reshape([-1, C]) as in InsightFace's packs: "
            + "; ".join(problems)
        )
    return GraphLayout("interleaved", inputs[0].name, input_shape, names, channels)


def _rewrite_heads(model: onnx.ModelProto) -> None:
    graph = model.graph
    producers = {out: node for node in graph.node for out in node.output}
    constants = _constant_values(graph)
    consumers: dict[str, int] = {}
    for node in graph.node:
        for name in node.input:
            consumers[name] = consumers.get(name, 0) + 1
    graph_outputs = {o.name for o in graph.output}

    new_shapes: dict[int, str] = {}
    old_shape_names: set[str] = set()
    for out in graph.output:
        head = _trace_head(out.name, producers, constants)
        if isinstance(head, str):  # inspect_scrfd_graph has been called; cannot happen
            raise ModelFormatError(head)
        for tensor in (head.transpose.output[0], head.reshape.output[0]):
            if consumers.get(tensor, 0) != 1 and tensor not in graph_outputs:
                raise ModelFormatError(
                    f"head tensor {tensor!r} feeds {consumers.get(tensor, 0)} nodes; expected "
                    "exactly one, so the head cannot be rewritten in place safely"
                )
        channels = head.shape[1]
        if channels not in new_shapes:
            name = f"dfe_batched_reshape_c{channels}"
            graph.initializer.append(
                numpy_helper.from_array(np.array([0, -1, channels], dtype=np.int64), name)
            )
            new_shapes[channels] = name
        old_shape_names.add(head.reshape.input[1])
        head.reshape.input[1] = new_shapes[channels]
        for attr in head.transpose.attribute:
            if attr.name == "perm":
                del attr.ints[:]
                attr.ints.extend(_BATCHED_PERM)

    # Drop the old [-1, C] shape constants if nothing else uses them.
    still_used = {name for node in graph.node for name in node.input}
    unused = old_shape_names - still_used
    keep_init = [t for t in graph.initializer if t.name not in unused]
    del graph.initializer[:]
    graph.initializer.extend(keep_init)
    keep_inputs = [v for v in graph.input if v.name not in unused]
    del graph.input[:]
    graph.input.extend(keep_inputs)
    keep_nodes = [n for n in graph.node if not (n.op_type == "Constant" and n.output[0] in unused)]
    del graph.node[:]
    graph.node.extend(keep_nodes)


def rewrite_batch_dynamic(
    model: onnx.ModelProto, *, source_sha256: str | None = None
) -> onnx.ModelProto:
    """Return a batch-dynamic copy of an SCRFD graph (the input is left untouched).

    Raises :class:`ModelFormatError` for a layout it does not recognise. A graph that is already
    batch-dynamic is returned as an unchanged copy.
    """
    layout = inspect_scrfd_graph(model)
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    if layout.kind == "interleaved":
        _rewrite_heads(out)

    (image_input,) = _graph_inputs(graph)
    h, w = layout.input_shape[2], layout.input_shape[3]
    _set_dims(
        image_input,
        [
            "batch",
            3,
            h if isinstance(h, int) else "height",
            w if isinstance(w, int) else "width",
        ],
    )
    for i, value in enumerate(graph.output):
        channels = layout.output_channels[i]
        if channels is None:
            raise ModelFormatError(
                f"output {value.name!r} does not declare its channel count (expected 1, 4 or 10)"
            )
        _set_dims(value, ["batch", f"anchors_{i}", channels])
    # Intermediate shape annotations pin batch 1 (and the old head layout); ORT infers them again.
    del graph.value_info[:]

    meta = {p.key: p.value for p in out.metadata_props}
    meta[META_REWRITE] = REWRITE_TAG
    if source_sha256:
        meta[META_SOURCE_SHA256] = source_sha256
    meta.pop(META_VERIFIED_MAX_ABS_DIFF, None)
    helper.set_model_props(out, meta)
    try:
        onnx.checker.check_model(out, full_check=True)
    except Exception as exc:
        raise ModelFormatError(f"the batch-dynamic rewrite failed onnx.checker: {exc}") from exc
    return out


# --------------------------------------------------------------------------------------------
# Proof: batch of N == N batch-1 runs


def _session(model: onnx.ModelProto) -> object:
    """A CPU session for the checks, with the engine's session options (``$DFE_ORT_THREADS``
    threads, no spinning; log level 3 hides the declared-vs-actual shape warnings of batch-1
    graphs)."""
    ort = require("onnxruntime")
    from core.onnx_session import session_options

    options = session_options()
    return ort.InferenceSession(
        model.SerializeToString(), sess_options=options, providers=["CPUExecutionProvider"]
    )


def _synthetic_frames(count: int = 3) -> list[np.ndarray]:
    """Different, deterministic BGR images (noise over gradients, various aspect ratios)."""
    rng = np.random.default_rng(20240607)
    sizes = [(480, 640), (720, 1280), (640, 480), (360, 360)]
    frames = []
    for i in range(count):
        h, w = sizes[i % len(sizes)]
        ramp = np.linspace(0, 255, w, dtype=np.float32)[None, :, None]
        noise = rng.normal(0, 60, size=(h, w, 3)).astype(np.float32)
        frames.append(np.clip(ramp * (i + 1) / count + noise + 40 * i, 0, 255).astype(np.uint8))
    return frames


def _blob(frames: Sequence[np.ndarray], height: int, width: int) -> np.ndarray:
    """Plain resize (no letterbox needed: this only tests batch consistency), RGB, NCHW."""
    out = np.empty((len(frames), 3, height, width), dtype=np.float32)
    for i, frame in enumerate(frames):
        resized = cv2.resize(frame, (width, height), interpolation=cv2.INTER_LINEAR)
        out[i] = resized[:, :, ::-1].transpose(2, 0, 1)
    out -= 127.5
    out /= 128.0
    return out


def verify_batched(
    original: onnx.ModelProto | str | os.PathLike[str],
    rewritten: onnx.ModelProto | str | os.PathLike[str],
    *,
    frames: Sequence[np.ndarray] | None = None,
    atol: float = _DEFAULT_TOLERANCE,
) -> float:
    """Run ``rewritten`` on one batch of different frames and ``original`` on each frame alone.

    ``frames`` are BGR uint8 images (at least 3, all different); without them, deterministic
    synthetic images are used. Checked at 640x640 and, when the graph allows it, at a
    non-square 384x640 too. Returns the largest absolute difference over every output; raises
    :class:`ModelFormatError` when it exceeds ``atol`` or a shape differs.
    """
    original_model = _load(original)
    rewritten_model = _load(rewritten)
    frames = list(frames) if frames is not None else _synthetic_frames(3)
    if len(frames) < 2:
        raise ModelFormatError(f"verify_batched needs at least 2 frames, got {len(frames)}")
    for i, frame in enumerate(frames):
        if not (isinstance(frame, np.ndarray) and frame.ndim == 3 and frame.shape[2] == 3):
            raise ModelFormatError(f"verify_batched: frame {i} is not an HxWx3 image")

    (orig_input,) = _graph_inputs(original_model.graph)
    dims = _dims(orig_input)
    fixed_h, fixed_w = dims[2], dims[3]
    if isinstance(fixed_h, int) and isinstance(fixed_w, int):
        sizes = [(fixed_h, fixed_w)]
    else:
        sizes = [(640, 640), (384, 640)]

    original_session = _session(original_model)
    rewritten_session = _session(rewritten_model)
    orig_in = original_session.get_inputs()[0].name
    new_in = rewritten_session.get_inputs()[0].name
    worst = 0.0
    for height, width in sizes:
        blob = _blob(frames, height, width)
        try:
            batched = rewritten_session.run(None, {new_in: blob})
        except Exception as exc:  # ORT raises its own exception types
            raise ModelFormatError(
                f"the model does not run on a batch of {len(frames)} at {height}x{width}: {exc}"
            ) from exc
        for n in range(len(frames)):
            single = original_session.run(None, {orig_in: blob[n : n + 1]})
            if len(single) != len(batched):
                raise ModelFormatError(
                    f"output count differs: original {len(single)}, rewritten {len(batched)}"
                )
            for k, (ref, got) in enumerate(zip(single, batched, strict=True)):
                ref2 = ref.reshape(-1, ref.shape[-1])
                if got.ndim != 3 or got.shape[0] != len(frames) or got[n].shape != ref2.shape:
                    raise ModelFormatError(
                        f"output {k} at {height}x{width}: rewritten shape {list(got.shape)} does "
                        f"not hold [batch={len(frames)}, {ref2.shape[0]}, {ref2.shape[1]}]"
                    )
                worst = max(worst, float(np.max(np.abs(got[n] - ref2), initial=0.0)))
    if not worst <= atol:
        raise ModelFormatError(
            f"batched outputs differ from batch-1 runs of the original by up to {worst:.3g} "
            f"(tolerance {atol:g}); the graph is not safely batch-dynamic"
        )
    logger.debug("verified batch of %d against batch-1 runs: max abs diff %.3g", len(frames), worst)
    return worst


# --------------------------------------------------------------------------------------------
# Files: the loader


@dataclass(frozen=True)
class DetectorGraph:
    """A SCRFD graph loaded once for the runners (the loader half of Polygraphy's loader/runner
    split): the batch-dynamic file every backend runs, its sha256, and its input and outputs as
    the file declares them. Made by :func:`load_detector_graph`; the backends make a runner from
    ``path`` (ONNX Runtime: :meth:`model_for`; TensorRT: an engine built from ``path``, keyed by
    ``sha256``), and :class:`preprocess.scrfd.SCRFDDetector` runs the SCRFD maths over it.

    ``source`` is the user's file and ``source_sha256`` its digest; ``path`` is ``source``
    itself when it is already batch-dynamic, else its rewrite in :func:`cache_dir`.
    """

    source: Path
    source_sha256: str
    path: Path
    sha256: str
    layout: LayoutKind  # the source's layout (what the rewrite started from)
    input_name: str
    input_dims: tuple[int | None, ...]  # of ``path``: ints where fixed, None where free
    output_names: tuple[str, ...]
    output_channels: tuple[int | None, ...]

    @property
    def rewritten(self) -> bool:
        """Whether ``path`` is a rewrite (False: the source is batch-dynamic already)."""
        return self.path != self.source

    def model_for(self, provider: str) -> Path | bytes:
        """The graph an ONNX Runtime session on ``provider`` loads: on the CPU provider, the
        graph with its sibling head convolutions fused where that is bit-identical here
        (:func:`cpu_detector_model`, in memory); on any other provider ``path``."""
        if provider == "CPUExecutionProvider":
            return cpu_detector_model(self.path)
        return self.path


def rewrite_path(source: str | os.PathLike[str], source_sha256: str) -> Path:
    """Where the rewrite of ``source`` is cached: ``cache_dir()/<stem>.<sha256[:16]>.v<rewrite
    version>.batched.onnx`` (keyed by the source's content and the rewrite's version)."""
    stem = Path(source).stem
    return cache_dir() / f"{stem}.{source_sha256[:16]}.v{REWRITE_VERSION}.batched.onnx"


def _current(path: Path, source_sha256: str) -> tuple[bytes, onnx.ModelProto] | None:
    """The bytes and model of ``path`` when it is a rewrite of the source with ``source_sha256``
    by this rewrite version (read from its metadata), else None."""
    try:
        data = path.read_bytes()
        model = onnx.load_model_from_string(data)
    except Exception:  # missing, unreadable or not ONNX: not a usable rewrite
        return None
    meta = {p.key: p.value for p in model.metadata_props}
    if meta.get(META_REWRITE) == REWRITE_TAG and meta.get(META_SOURCE_SHA256) == source_sha256:
        return data, model
    return None


def _dir_writable(directory: Path) -> bool:
    """Writable, and not marked read-only: a directory without any write bit is respected even
    when running as root (who could write to it anyway)."""
    try:
        mode = directory.stat().st_mode
    except OSError:
        return False
    return bool(mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH)) and os.access(
        directory, os.W_OK
    )


def _save_atomic(data: bytes, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not _dir_writable(path.parent):
        raise PermissionError(f"directory {path.parent} is read-only")
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as stream:
            stream.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _read_source(src: Path) -> tuple[bytes, onnx.ModelProto]:
    if not src.is_file():
        raise ArtifactNotFoundError(f"ONNX model not found: {src}")
    data = src.read_bytes()
    try:
        return data, onnx.load_model_from_string(data)
    except Exception as exc:  # protobuf DecodeError and friends
        raise ModelFormatError(f"{src} is not a readable ONNX model ({exc})") from exc


def _describe(
    source: Path,
    source_sha256: str,
    path: Path,
    data: bytes,
    layout: LayoutKind,
    model: onnx.ModelProto,
) -> DetectorGraph:
    batched = inspect_scrfd_graph(model)
    return DetectorGraph(
        source=source,
        source_sha256=source_sha256,
        path=path,
        sha256=source_sha256 if path == source else hashlib.sha256(data).hexdigest(),
        layout=layout,
        input_name=batched.input_name,
        input_dims=tuple(d if isinstance(d, int) else None for d in batched.input_shape),
        output_names=batched.output_names,
        output_channels=batched.output_channels,
    )


def load_detector_graph(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str] | None = None,
    *,
    verify: bool = True,
    reuse: bool = True,
    frames: Sequence[np.ndarray] | None = None,
) -> DetectorGraph:
    """Load the SCRFD model ``src`` for the runners: read and hashed once, made batch-dynamic.

    - Already batch-dynamic: ``src`` itself (checked with :func:`verify_batched` when
      ``verify``).
    - Otherwise its rewrite: at ``dst`` if given, else in the cache of derived graphs
      (:func:`rewrite_path`, keyed by the source's sha256 and :data:`REWRITE_VERSION`). Nothing
      is ever written next to ``src``; a current rewrite found there (``<stem>.batched.onnx``,
      as shipped with the shared test models) is used as it is. A rewrite is current when its
      metadata names the source's sha256 and this rewrite version; one is reused when
      ``reuse``, else made again.
    - A new rewrite is proven with :func:`verify_batched` before it is saved (``verify=False``
      skips that; only for tests and tooling).

    Raises :class:`ArtifactNotFoundError` for a missing file, :class:`ModelFormatError` for a
    graph that is not SCRFD, and :class:`EngineError` when the rewrite cannot be saved.
    """
    src = Path(src)
    data, model = _read_source(src)
    layout = inspect_scrfd_graph(model)
    source_sha = file_sha256(src)
    if layout.kind == "batched_dynamic":
        if verify:
            verify_batched(model, model, frames=frames)
        logger.info("%s is already batch-dynamic; using it as it is", src)
        return _describe(src, source_sha, src, data, layout.kind, model)

    target = Path(dst) if dst is not None else rewrite_path(src, source_sha)
    shipped = src.with_name(f"{src.stem}.batched.onnx")  # read, never written
    if reuse:
        for candidate in (target,) if dst is not None else (target, shipped):
            found = _current(candidate, source_sha)
            if found is not None:
                logger.info("using batch-dynamic rewrite of %s at %s", src.name, candidate)
                return _describe(src, source_sha, candidate, found[0], layout.kind, found[1])

    rewritten = rewrite_batch_dynamic(model, source_sha256=source_sha)
    if verify:
        worst = verify_batched(model, rewritten, frames=frames)
        meta = {p.key: p.value for p in rewritten.metadata_props}
        meta[META_VERIFIED_MAX_ABS_DIFF] = f"{worst:.3g}"
        helper.set_model_props(rewritten, meta)
    out = rewritten.SerializeToString()
    try:
        _save_atomic(out, target)
    except OSError as exc:
        raise EngineError(
            f"could not save the batch-dynamic SCRFD model at {target}: {exc}. "
            + (
                "Pass a writable dst."
                if dst is not None
                else "Set DFE_CACHE to a writable directory."
            )
        ) from exc
    logger.info(
        "wrote batch-dynamic rewrite of %s (%s layout) to %s", src.name, layout.kind, target
    )
    return _describe(src, source_sha, target, out, layout.kind, rewritten)


def make_batch_dynamic(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str] | None = None,
    *,
    verify: bool = True,
    reuse: bool = True,
    frames: Sequence[np.ndarray] | None = None,
) -> Path:
    """The path of a batch-dynamic version of the SCRFD model ``src``: the ``path`` of
    :func:`load_detector_graph` (same arguments; rewrites go to the cache, never next to
    ``src``)."""
    return load_detector_graph(src, dst, verify=verify, reuse=reuse, frames=frames).path


# ------------------------------------------------------------------------------ CPU head fusion


def fuse_sibling_convs(model: onnx.ModelProto) -> list[list[str]]:
    """Fuse the convolutions that read the same tensor with the same attributes (``group`` 1,
    constant weight and bias) into one ``Conv`` followed by a ``Split`` on channels; ``model``
    is changed in place. Returns the output names of each fused set (empty: nothing to fuse).

    Each SCRFD stride ends in three 3x3 convolutions over one 64-channel tensor: scores
    (2 channels), boxes (8) and landmarks (20). ONNX Runtime's CPU kernels (NCHWc blocks of 8
    or 16 channels) pad each to whole blocks, so three convolutions compute 64 channels for 30
    used; one fused convolution computes 32. Each output channel is still the same sum in the
    same order, so the outputs are bit-identical; :func:`cpu_detector_model` checks that on the
    machine before using the fused graph. Measured on ``det_500m``, 40 letterboxed 640x384 frames
    of the DFDC clips in batches of 4, one thread, 2-core AMD EPYC: 12.0-13.4 ms per frame
    before, 10.4-11.2 after (three alternating rounds), outputs identical."""
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    sets: dict[tuple[str, str], list[onnx.NodeProto]] = {}
    for node in graph.node:
        if node.op_type != "Conv" or len(node.input) != 3:
            continue
        if node.input[1] not in inits or node.input[2] not in inits:
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if attrs.get("group", 1) != 1:
            continue
        sets.setdefault((node.input[0], repr(sorted(attrs.items()))), []).append(node)
    uses: dict[str, int] = {}
    for node in graph.node:
        for name in node.input:
            uses[name] = uses.get(name, 0) + 1
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 11)
    replaced: dict[int, list[onnx.NodeProto]] = {}
    fused: list[list[str]] = []
    for nodes in sets.values():
        if len(nodes) < 2 or any(uses.get(n.input[i], 0) != 1 for n in nodes for i in (1, 2)):
            continue
        weights = [numpy_helper.to_array(inits[n.input[1]]) for n in nodes]
        if len({w.shape[1:] for w in weights}) != 1:
            continue
        base = f"{nodes[0].name or nodes[0].output[0]}_fused"
        sizes = [int(w.shape[0]) for w in weights]
        graph.initializer.extend(
            [
                numpy_helper.from_array(np.concatenate(weights), f"{base}_W"),
                numpy_helper.from_array(
                    np.concatenate([numpy_helper.to_array(inits[n.input[2]]) for n in nodes]),
                    f"{base}_B",
                ),
            ]
        )
        conv = helper.make_node(
            "Conv", [nodes[0].input[0], f"{base}_W", f"{base}_B"], [base], name=base
        )
        conv.attribute.extend(nodes[0].attribute)
        outputs = [n.output[0] for n in nodes]
        if opset >= 13:
            graph.initializer.append(
                numpy_helper.from_array(np.asarray(sizes, np.int64), f"{base}_split")
            )
            split = helper.make_node(
                "Split", [base, f"{base}_split"], outputs, name=f"{base}_split", axis=1
            )
        else:
            split = helper.make_node(
                "Split", [base], outputs, name=f"{base}_split", axis=1, split=sizes
            )
        replaced[id(nodes[0])] = [conv, split]
        for n in nodes[1:]:
            replaced[id(n)] = []
        fused.append(outputs)
    if fused:
        dropped = {
            n.input[i] for ns in sets.values() for n in ns if id(n) in replaced for i in (1, 2)
        }
        order = [m for n in graph.node for m in replaced.get(id(n), [n])]
        del graph.node[:]
        graph.node.extend(order)
        keep = [i for i in graph.initializer if i.name not in dropped]
        del graph.initializer[:]
        graph.initializer.extend(keep)
    return fused


def cpu_detector_model(path: str | os.PathLike[str]) -> Path | bytes:
    """The SCRFD graph at ``path`` (already batch-dynamic) for an ONNX Runtime **CPU** session:
    with its sibling head convolutions fused (:func:`fuse_sibling_convs`) when that gives
    bit-identical outputs here, checked on one random 2-frame 128x160 batch (or the graph's
    fixed size) against the graph as it is; else ``path`` itself (logged). Raises what
    ``onnx.load`` and ONNX Runtime raise for a broken graph."""
    ort = require("onnxruntime")
    path = Path(path)
    model = _load(path)
    if not fuse_sibling_convs(model):
        return path
    fused = model.SerializeToString()
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.log_severity_level = 3
    outs = []
    for source in (str(path), fused):
        sess = ort.InferenceSession(source, opts, providers=["CPUExecutionProvider"])
        declared = sess.get_inputs()[0].shape  # a fixed-size export takes only its own size
        shape = [d if isinstance(d, int) else n for d, n in zip(declared, (2, 3, 128, 160))]
        x = np.random.default_rng(0).uniform(-1, 1, shape).astype(np.float32)
        outs.append(sess.run(None, {sess.get_inputs()[0].name: x}))
    if all(np.array_equal(a, b) for a, b in zip(*outs, strict=True)):
        return fused
    logger.info("%s: fused head convolutions differ in the last bits here; not used", path.name)
    return path
