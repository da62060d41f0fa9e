"""The search for the fastest INT8 Q/DQ graph that stays within the agreement bound.

Calibration runs once: ONNX Runtime's :class:`HistogramCalibrater` collects a signed histogram
(2048 bins) of every tensor ONNX Runtime would quantize, over the calibration crops. Every
configuration tried is then derived from those histograms without running the model again:

- ``percentile`` (one threshold ``t`` from the percentile of ``|x|``, ONNX Runtime's default
  for Percentile, or each tail cut on its own; both clamped to the observed range, so a ReLU
  output gets ``[0, t]``), ``minmax`` and ``entropy`` (ONNX
  Runtime's KL search on the histogram re-binned to its default 128 bins) ranges, computed with
  ONNX Runtime's own :class:`HistogramCollector`;
- the ranges go to ``quantize_static`` as a calibration cache (``calibration_cache_path``), so
  building one graph takes seconds, not a calibration pass;
- per-node fp32 fallback is ``quantize_static(nodes_to_exclude=...)``.

Each configuration is measured on the held-out crops (issue 5's bound: max |delta p_fake| per
video at N = 20 and 60, decisive labels equal) and timed against the fp32 graph in the same loop
(interleaved runs, medians), so a speed-up is always relative to fp32 measured at the same time
on the same, possibly busy, machine. :func:`search` keeps the fastest graph within the bound.

Why these steps, measured on the checkpoints of issue 16 (docs/int8-tensorrt.md): on a random-init
ResNeXt the error is spread through the whole network (no single layer or stage carries more
than a small share of it), so the search first tries other calibration ranges for the whole
graph, then keeps the nodes with the largest measured contribution (see
:mod:`engine.optimize.qdq_debug`) in fp32, in growing groups, until the bound is met or the
graph would no longer be faster than ``min_speedup`` x fp32.
"""

from __future__ import annotations

import contextlib
import inspect
import io
import logging
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from core.deps import require
from core.errors import InvalidInputError, MissingDependencyError, ParityError

log = logging.getLogger(__name__)

CALIB_METHODS = ("percentile", "minmax", "entropy", "mse")
# "mse": per tensor, the candidate range with the smallest expected squared quantization error
# (clipping + rounding) on its histogram, as TensorRT's / Model Optimizer's MSE calibrators pick
MSE_CANDIDATES = (
    ("percentile", 99.99),
    ("percentile", 99.999),
    ("percentile", 99.9999),
    ("minmax", 100.0),
    ("entropy", 100.0),
)
DEFAULT_METHOD = "percentile"
DEFAULT_PERCENTILE = 99.999
# Signed histograms: 4096 bins over [-t, t], so |x| folds into ONNX Runtime's 2048 Percentile bins.
HIST_BINS = 4096
ENTROPY_BINS = 128  # ONNX Runtime's Entropy default (num_bins = num_quantized_bins = 128)
MIN_SPEEDUP = 1.2  # issue 16: refuse when nothing faster than this meets the bound
DEFAULT_MAX_MINUTES = 15.0
# Fallback steps: keep in fp32 the nodes whose isolated contributions make up these shares of
# the total contribution (sum of squares), largest first.
FALLBACK_SHARES = (0.25, 0.5, 0.75, 0.9, 0.95, 0.99)


@dataclass(frozen=True)
class QuantConfig:
    """One Q/DQ configuration: activation ranges and the nodes left in fp32.

    Activations are uint8 per tensor and weights int8 per output channel (U8S8) in every
    configuration: the kernels ONNX Runtime runs fast on VNNI CPUs (signed activations ran
    slower than fp32 there, PITFALLS.md).
    """

    method: str = DEFAULT_METHOD  # percentile | minmax | entropy | mse (per tensor)
    percentile: float = DEFAULT_PERCENTILE  # percentile only
    # percentile only: one threshold from the percentile of |x| (ONNX Runtime's default), or
    # each tail cut on its own; both clamped to the observed range. Entropy's thresholds are
    # symmetric by construction, minmax's are the observed range.
    symmetric: bool = True
    fp32_nodes: tuple[str, ...] = ()  # nodes kept in fp32 (quantize_static nodes_to_exclude)
    note: str = ""  # why this configuration was tried

    def __post_init__(self) -> None:
        if self.method not in CALIB_METHODS:
            raise InvalidInputError(
                f"calibration method {self.method!r}; supported values are "
                f"{', '.join(CALIB_METHODS)}"
            )
        if not 0 < self.percentile <= 100:
            raise InvalidInputError(f"percentile must be in (0, 100], got {self.percentile}")

    @property
    def ranges(self) -> str:
        if self.method == "mse":
            return "per tensor: the least-MSE of percentile/minmax/entropy"
        if self.method == "percentile":
            tails = "|x|" if self.symmetric else "each tail"
            return f"percentile {self.percentile:g} ({tails})"
        return self.method

    def label(self) -> str:
        """A short description for tables: ranges, and how many nodes stay in fp32."""
        fb = f" + {len(self.fp32_nodes)} nodes fp32" if self.fp32_nodes else ""
        return f"{self.ranges}{fb}"

    def to_record(self) -> dict[str, Any]:
        rec = asdict(self)
        rec["fp32_nodes"] = list(self.fp32_nodes)
        if self.method != "percentile":
            rec.pop("percentile")
        return rec


# ------------------------------------------------------------------------------ calibration


def _reader(crops: np.ndarray, batch: int, chunk: int) -> Any:
    """Equal batches of ``batch`` crops, read ``chunk`` batches at a time (ORT's strided
    calibration keeps every intermediate tensor of what it reads at once, ~40 MB per crop for
    this model). Crops are padded by wrapping around to whole chunks (ORT needs whole strides)."""
    from onnxruntime.quantization import CalibrationDataReader

    per_chunk = batch * chunk
    total = -(-len(crops) // per_chunk) * per_chunk
    padded = np.take(crops, np.arange(total) % len(crops), axis=0)
    batches = [padded[i : i + batch] for i in range(0, total, batch)]

    class _Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.set_range(0, len(batches))

        def __len__(self) -> int:
            return len(batches)

        def set_range(self, start_index: int, end_index: int) -> None:
            self._it = iter(batches[start_index:end_index])

        def get_next(self) -> dict[str, np.ndarray] | None:
            batch_ = next(self._it, None)
            return None if batch_ is None else {"frames": batch_}

    return _Reader()


def _calibration_session(calibrater: Any) -> Any:
    """The session ONNX Runtime's calibrater makes for its augmented graph (no graph
    optimization, its providers), with the engine's thread count (``$DFE_ORT_THREADS``) and
    without spinning threads (:func:`core.onnx_session.session_options`): ONNX Runtime's own
    takes a spinning thread on every core, whatever the engine was told."""
    import onnxruntime as ort

    from core.onnx_session import session_options

    options = session_options()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(
        calibrater.augmented_model_path,
        sess_options=options,
        providers=calibrater.execution_providers,
    )


@dataclass
class Calibration:
    """Signed histograms of every tensor to quantize, collected once over the calibration crops
    (ONNX Runtime's ``HistogramCollector`` format: ``(hist, edges, min, max, threshold)``)."""

    histograms: dict[str, tuple[Any, ...]]
    crops: int
    seconds: float

    @classmethod
    def collect(
        cls,
        model_path: Path,
        crops: np.ndarray,
        *,
        batch: int = 8,
        chunk: int = 4,
        progress: Callable[[int], None] | None = None,
    ) -> Calibration:
        """Run the fp32 graph (already through ``quant_pre_process``) over ``crops``
        ``[n, 3, H, W]`` and histogram every tensor ONNX Runtime's static quantizer calibrates."""
        require("onnxruntime", purpose="INT8 calibration")
        from onnxruntime.quantization.calibrate import HistogramCalibrater

        t = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="dfe-calib-") as tmp:
            calibrater = HistogramCalibrater(
                model_path,
                [],  # every float tensor of the quantizable ops
                augmented_model_path=str(Path(tmp) / "augmented.onnx"),
                method="entropy",  # signed histograms (collect_value)
                num_bins=HIST_BINS,
            )
            calibrater.augment_graph()
            calibrater.infer_session = _calibration_session(calibrater)
            reader = _reader(crops, batch, chunk)
            for start in range(0, len(reader), chunk):
                reader.set_range(start, start + chunk)
                with contextlib.redirect_stdout(io.StringIO()):  # ORT prints progress
                    calibrater.collect_data(reader)
                if progress is not None:
                    progress(min(chunk, len(reader) - start) * batch)
            histograms = dict(calibrater.collector.histogram_dict)
            del calibrater
        return cls(histograms, len(crops), time.perf_counter() - t)

    def ranges(self, config: QuantConfig) -> dict[str, tuple[np.float32, np.float32]]:
        """``tensor -> (rmin, rmax)`` for ``config``'s method, from the histograms."""
        from onnxruntime.quantization.calibrate import HistogramCollector

        def f32(v: Any) -> np.float32:
            return np.float32(np.asarray(v).reshape(()))

        out: dict[str, tuple[np.float32, np.float32]] = {}
        if config.method == "mse":
            candidates = [
                self.ranges(QuantConfig(m, p if m == "percentile" else DEFAULT_PERCENTILE, True))
                for m, p in MSE_CANDIDATES
            ]
            for k, hist in self.histograms.items():
                errors = [_expected_error(hist, c[k]) for c in candidates]
                out[k] = candidates[int(np.argmin(errors))][k]
            return out
        if config.method == "minmax":
            return {k: (f32(v[2]), f32(v[3])) for k, v in self.histograms.items()}
        if config.method == "percentile" and config.symmetric:
            for k, (hist, edges, lo, hi, *_rest) in self.histograms.items():
                t = _symmetric_percentile(hist, edges, config.percentile)
                widest = float(max(abs(float(lo)), abs(float(hi))))
                t = min(t, widest) if t > 0 else widest
                # clamped to the observed range, as ONNX Runtime's Percentile does: a ReLU
                # output keeps [0, t] (zero point 0), so the ReLU can be folded into the clamp
                out[k] = (np.float32(max(-t, float(lo))), np.float32(min(t, float(hi))))
            return out
        collector = HistogramCollector(
            method=config.method,
            symmetric=False,
            num_bins=HIST_BINS,
            num_quantized_bins=ENTROPY_BINS,
            percentile=config.percentile,
            scenario="same",
        )
        if config.method == "entropy":
            collector.histogram_dict = {
                k: _rebin(v, ENTROPY_BINS) for k, v in self.histograms.items()
            }
        else:
            collector.histogram_dict = self.histograms
        with contextlib.redirect_stdout(io.StringIO()):
            result = collector.compute_collection_result()
        for k, v in result.items():
            out[k] = (f32(v[0]), f32(v[1]))
        return out

    def write_cache(self, config: QuantConfig, path: Path) -> Path:
        """Write ``config``'s ranges as ONNX Runtime's calibration cache (``save_tensors_data``)."""
        from onnxruntime.quantization.calibrate import (
            CalibrationMethod,
            TensorData,
            TensorsData,
            save_tensors_data,
        )

        data = {
            k: TensorData(lowest=np.asarray(a, np.float32), highest=np.asarray(b, np.float32))
            for k, (a, b) in self.ranges(config).items()
        }
        save_tensors_data(TensorsData(CalibrationMethod.MinMax, data), path)
        return path


def _symmetric_percentile(hist: np.ndarray, edges: np.ndarray, percentile: float) -> float:
    """The ``percentile`` of ``|x|`` from a histogram symmetric around 0 (ORT's signed
    histograms span ``[-threshold, threshold]``): fold it, then take the percentile as ONNX
    Runtime's symmetric Percentile does (``searchsorted`` on the cdf, that bin's lower edge)."""
    hist = np.asarray(hist, dtype=np.float64)
    edges = np.asarray(edges, dtype=np.float64)
    mid = len(hist) // 2
    if len(hist) % 2 or not np.isclose(edges[mid], 0.0, atol=abs(edges[-1]) * 1e-6 + 1e-30):
        # not centred on 0: fall back to the bin edges' absolute values
        centres = np.abs((edges[:-1] + edges[1:]) / 2)
        order = np.argsort(centres)
        cdf = np.cumsum(hist[order]) / max(hist.sum(), 1.0)
        idx = min(int(np.searchsorted(cdf, percentile / 100.0)), len(order) - 1)
        return float(centres[order][idx])
    folded = hist[mid:] + hist[:mid][::-1]
    cdf = np.cumsum(folded) / max(folded.sum(), 1.0)
    idx = min(int(np.searchsorted(cdf, percentile / 100.0)), len(folded))
    return float(edges[mid + idx])


def _expected_error(histogram: tuple[Any, ...], rng: tuple[Any, Any], levels: int = 256) -> float:
    """Expected squared error of uint8 quantization of the histogram's values to ``rng``:
    clipping error of the values outside, ``step**2 / 12`` rounding error of those inside
    (bin centres stand for their values)."""
    hist, edges = np.asarray(histogram[0], np.float64), np.asarray(histogram[1], np.float64)
    lo, hi = min(float(rng[0]), 0.0), max(float(rng[1]), 0.0)
    p = hist / max(hist.sum(), 1.0)
    x = (edges[:-1] + edges[1:]) / 2
    clipped = np.clip(x, lo, hi)
    step = (hi - lo) / (levels - 1) if hi > lo else 0.0
    inside = (x >= lo) & (x <= hi)
    return float((p * (x - clipped) ** 2).sum() + p[inside].sum() * step * step / 12)


def _rebin(histogram: tuple[Any, ...], bins: int) -> tuple[Any, ...]:
    hist, edges, lo, hi, threshold = histogram
    factor = max(len(hist) // bins, 1)
    n = (len(hist) // factor) * factor
    start = (len(hist) - n) // 2  # keep the bins centred on 0
    merged = hist[start : start + n].reshape(-1, factor).sum(axis=1)
    new_edges = edges[start : start + n + 1 : factor]
    return (merged, new_edges.astype(edges.dtype), lo, hi, threshold)


# ------------------------------------------------------------------------------ quantization


def pre_process(src: Path, dst: Path) -> Path:
    """ONNX Runtime's ``quant_pre_process`` (``skip_symbolic_shape=True``: symbolic shape
    inference fails on this graph, PITFALLS.md); nodes without a name are then named
    ``<op>_<index>``, since fp32 fallback and the error report find nodes by name."""
    onnx = require("onnx")
    require("onnxruntime", purpose="INT8 quantization")
    from onnxruntime.quantization.shape_inference import quant_pre_process

    quant_pre_process(str(src), str(dst), skip_symbolic_shape=True)
    model = onnx.load(str(dst))
    names = [n.name for n in model.graph.node]
    if any(not name for name in names) or len(set(names)) != len(names):
        seen: set[str] = set()
        for i, node in enumerate(model.graph.node):
            if not node.name or node.name in seen:
                node.name = f"{node.op_type}_{i}"
            seen.add(node.name)
        onnx.save(model, str(dst))
    return dst


def quantize_with(
    pre_processed: Path, dst: Path, calibration: Calibration, config: QuantConfig
) -> dict[str, Any]:
    """Write the U8S8 Q/DQ graph of ``config`` at ``dst`` (``quantize_static`` in QDQ format,
    ranges from ``calibration`` through a calibration cache). Returns the settings, for the
    sidecar."""
    require("onnxruntime", purpose="INT8 quantization")
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    if "calibration_cache_path" not in inspect.signature(quantize_static).parameters:
        import onnxruntime

        raise MissingDependencyError(
            f"onnxruntime {onnxruntime.__version__} cannot take precomputed calibration ranges "
            "(quantize_static has no calibration_cache_path); upgrade it: pip install -U "
            "'onnxruntime>=1.32' (the `cpu` extra)"
        )
    t = time.perf_counter()
    with tempfile.TemporaryDirectory(dir=dst.parent, prefix=".ranges-") as tmp:
        cache = calibration.write_cache(config, Path(tmp) / "ranges.json")
        with contextlib.redirect_stdout(io.StringIO()):
            quantize_static(
                str(pre_processed),
                str(dst),
                None,
                quant_format=QuantFormat.QDQ,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                per_channel=True,
                calibrate_method=CalibrationMethod.MinMax,  # the cache's ranges, as they are
                nodes_to_exclude=list(config.fp32_nodes),
                calibration_cache_path=str(cache),
                # the logits stay fp32: a uint8 Q/DQ on linear1's output rounded every frame's
                # logits to one of 256 steps over the calibrated range (frame p_fake took a
                # handful of values; |delta p_fake| 0.06 at N=4 on the demo model)
                extra_options={"OpTypesToExcludeOutputQuantization": ["Gemm"]},
            )
    return {
        "format": "QDQ (QuantizeLinear/DequantizeLinear)",
        "activations": "uint8, per tensor, asymmetric (zero point 0 after ReLU)",
        "ranges": config.ranges,
        "weights": "int8, per channel, symmetric",
        "bias": "int32",
        "ops": "every Conv, MatMul and Gemm (static; linear1's output, the logits, in fp32)"
        + (f", except {len(config.fp32_nodes)} kept in fp32" if config.fp32_nodes else ""),
        "method": config.method,
        **({"percentile": config.percentile} if config.method == "percentile" else {}),
        "fp32_nodes": list(config.fp32_nodes),
        "tool": "onnxruntime.quantization.quantize_static after quant_pre_process"
        "(skip_symbolic_shape=True), ranges from one HistogramCalibrater pass",
        "seconds_quantize": round(time.perf_counter() - t, 2),
    }


# ------------------------------------------------------------------------------ speed


def relative_speed(
    fp32_session: Any,
    int8_session: Any,
    crops: np.ndarray,
    *,
    rounds: int = 5,
    output: str = "logits",
) -> dict[str, float]:
    """Frames/s of both sessions on the same batch, runs interleaved (fp32, int8, int8, fp32,
    ...) after one warm-up each, medians. ``speedup`` is the ratio of the median CPU time per
    run (this process's, all threads), which other jobs on a busy machine disturb far less than
    wall time (preempted threads wait, they do not count); ``speedup_wall`` is the wall-time
    ratio of the same runs. On an idle machine the two agree. ``output`` is the classifier
    output asked for: ``logits``, or ``features`` for the sequence variant (whose classifier
    graph ends at the pooled features; its head stays fp32)."""
    feeds = {"frames": np.ascontiguousarray(crops)}
    for s in (fp32_session, int8_session):
        s.run([output], feeds)
    wall: dict[str, list[float]] = {"fp32": [], "int8": []}
    cpu: dict[str, list[float]] = {"fp32": [], "int8": []}
    for i in range(rounds):
        pair = [("fp32", fp32_session), ("int8", int8_session)]
        for name, s in pair if i % 2 == 0 else pair[::-1]:
            t, c = time.perf_counter(), time.process_time()
            s.run([output], feeds)
            wall[name].append(time.perf_counter() - t)
            cpu[name].append(time.process_time() - c)
    n = len(crops)
    w = {k: float(np.median(v)) for k, v in wall.items()}
    c = {k: max(float(np.median(v)), 1e-9) for k, v in cpu.items()}
    return {
        "fp32_frames_per_s": round(n / w["fp32"], 1),
        "int8_frames_per_s": round(n / w["int8"], 1),
        "fp32_frames_per_cpu_s": round(n / c["fp32"], 1),
        "int8_frames_per_cpu_s": round(n / c["int8"], 1),
        "speedup": round(c["fp32"] / c["int8"], 3),
        "speedup_wall": round(w["fp32"] / w["int8"], 3),
        "batch": n,
        "rounds": rounds,
    }


# ------------------------------------------------------------------------------ the search


@dataclass
class Trial:
    """One configuration tried: its accuracy on the held-out crops and its speed."""

    config: QuantConfig
    accuracy: dict[str, Any]  # compare_outputs(): max_abs_delta_p_fake, within_bound, ...
    speed: dict[str, float]
    settings: dict[str, Any]
    path: Path | None = None  # the graph, while the search runs (a temporary file)
    seconds: float = 0.0

    @property
    def within_bound(self) -> bool:
        return bool(self.accuracy["within_bound"])

    @property
    def speedup(self) -> float:
        return float(self.speed["speedup"])

    def row(self) -> dict[str, Any]:
        """The row of the table of what was tried."""
        return {
            "configuration": self.config.label(),
            "why": self.config.note,
            "fp32_nodes": len(self.config.fp32_nodes),
            "max_abs_delta_p_fake": self.accuracy["max_abs_delta_p_fake"],
            "max_abs_delta_p_fake_frame": self.accuracy.get("max_abs_delta_p_fake_frame"),
            "label_agreement_decisive": self.accuracy.get("label_agreement_decisive"),
            "within_bound": self.within_bound,
            "speedup": self.speedup,
            "speedup_wall": self.speed.get("speedup_wall"),
            "int8_frames_per_s": self.speed["int8_frames_per_s"],
            "fp32_frames_per_s": self.speed["fp32_frames_per_s"],
            "seconds": round(self.seconds, 1),
        }


@dataclass
class SearchResult:
    trials: list[Trial]
    chosen: Trial | None  # the fastest within the bound and at least min_speedup, else None
    min_speedup: float
    stopped: str  # why the search stopped
    contributions: list[dict[str, Any]] = field(default_factory=list)

    def table(self) -> list[dict[str, Any]]:
        return [t.row() for t in self.trials]


def format_trials(rows: Sequence[dict[str, Any]], bound: float) -> str:
    """The table of what was tried, as fixed-width text (for errors and the CLI): max |delta
    p_fake| per video and per frame, speed-up over fp32 (CPU time; wall time in brackets)."""
    lines = [
        f"{'#':>2}  {'configuration':50s} {'max|dp| video':>13s} {'frame':>7s} "
        f"{'speed-up (wall)':>16s}  within {bound}"
    ]
    for i, r in enumerate(rows, 1):
        frame = r.get("max_abs_delta_p_fake_frame")
        wall = r.get("speedup_wall")
        lines.append(
            f"{i:>2}  {r['configuration'][:50]:50s} {r['max_abs_delta_p_fake']:>13.4f} "
            f"{'' if frame is None else f'{frame:.3f}':>7s} {r['speedup']:>7.2f}x "
            f"{'' if wall is None else f'({wall:.2f}x)':>8s}  "
            f"{'yes' if r['within_bound'] else 'no'}"
        )
    return "\n".join(lines)


class Int8SearchError(ParityError):
    """No INT8 graph met the agreement bound while being at least ``min_speedup`` x fp32;
    ``result`` holds every configuration tried (configuration, max |delta p_fake|, speed)."""

    def __init__(self, message: str, result: SearchResult) -> None:
        super().__init__(message)
        self.result = result


def fallback_groups(
    contributions: Sequence[dict[str, Any]], shares: Iterable[float] = FALLBACK_SHARES
) -> list[tuple[float, tuple[str, ...]]]:
    """Node groups to keep in fp32: the nodes with the largest isolated contribution (the
    ``contribution`` of :func:`engine.optimize.qdq_debug.node_contributions`, summed as squares),
    until each share of the total is covered; distinct groups only, smallest first."""
    ranked = sorted(contributions, key=lambda r: -float(r["contribution"]))
    total = sum(float(r["contribution"]) ** 2 for r in ranked)
    groups: list[tuple[float, tuple[str, ...]]] = []
    if total <= 0:
        return groups
    for share in shares:
        acc, names = 0.0, []
        for r in ranked:
            if acc >= share * total:
                break
            acc += float(r["contribution"]) ** 2
            names.append(r["node"])
        group = tuple(names)
        if group and (not groups or group != groups[-1][1]):
            groups.append((acc / total, group))
    return groups


def calibration_variants(first: QuantConfig) -> list[QuantConfig]:
    """Other activation ranges for the whole graph, after ``first``: the methods ONNX Runtime
    ships, the percentile with each tail cut on its own, and the percentile a decade either
    side."""
    options = [
        QuantConfig("percentile", 99.999, False, note="each tail cut on its own"),
        QuantConfig("minmax", symmetric=False, note="no clipping"),
        QuantConfig("entropy", symmetric=False, note="KL-optimal clipping"),
        QuantConfig("percentile", 99.99, True, note="more clipping"),
        QuantConfig("percentile", 99.9999, True, note="less clipping"),
        QuantConfig("mse", note="per tensor: the range with the least quantization error"),
        QuantConfig("percentile", 99.999, True, note="ONNX Runtime's Percentile default"),
    ]
    return [replace(c) for c in options if c.ranges != first.ranges]


def search(
    *,
    first: QuantConfig,
    try_config: Callable[[QuantConfig], Trial],
    contributions: Callable[[Trial], list[dict[str, Any]]],
    min_speedup: float = MIN_SPEEDUP,
    max_seconds: float = DEFAULT_MAX_MINUTES * 60,
    max_trials: int | None = None,
    on_trial: Callable[[Trial], None] | None = None,
    variants: Sequence[QuantConfig] | None = None,
    fallback_shares: Sequence[float] = FALLBACK_SHARES,
) -> SearchResult:
    """Accuracy-driven search (what Intel's Neural Compressor calls accuracy-driven tuning):

    1. ``first`` on the whole graph; if it meets the bound it is kept (the whole graph in INT8
       is the fastest configuration);
    2. otherwise every other calibration range on the whole graph (:func:`calibration_variants`);
       the first within the bound is kept;
    3. otherwise, from the most accurate of those, the nodes with the largest measured
       contribution (``contributions(trial)``) are kept in fp32 in growing groups
       (:func:`fallback_groups`), stopping at the first group within the bound or once the graph
       is no faster than ``min_speedup`` x fp32 (more fp32 can only be slower).

    ``variants`` replaces step 2's list and ``fallback_shares`` step 3's groups (tests use
    shorter plans). ``try_config`` builds and measures one configuration. The search stops
    starting new trials after ``max_seconds`` or ``max_trials``. The chosen trial is the
    fastest within the bound with a speed-up of at least ``min_speedup``; ``chosen`` is None
    when there is none."""
    t0 = time.perf_counter()
    trials: list[Trial] = []
    stopped = "search finished"

    def budget_left() -> bool:
        nonlocal stopped
        if max_trials is not None and len(trials) >= max_trials:
            stopped = f"stopped after {len(trials)} trials (max_trials)"
            return False
        if time.perf_counter() - t0 > max_seconds:
            stopped = f"stopped after {max_seconds / 60:.1f} min (time budget)"
            return False
        return True

    def run(config: QuantConfig) -> Trial:
        trial = try_config(config)
        trials.append(trial)
        if on_trial is not None:
            on_trial(trial)
        return trial

    def good(t: Trial) -> bool:
        return t.within_bound and t.speedup >= min_speedup

    found = run(first)
    contribs: list[dict[str, Any]] = []
    if not good(found):
        plan = calibration_variants(first) if variants is None else list(variants)
        for config in plan:
            if not budget_left():
                break
            if good(run(config)):
                stopped = "a whole-graph configuration met the bound"
                break
        else:
            best = min(trials, key=lambda t: t.accuracy["max_abs_delta_p_fake"])
            if budget_left():
                contribs = contributions(best)
                for share, group in fallback_groups(contribs, fallback_shares):
                    if not budget_left():
                        break
                    config = replace(
                        best.config,
                        fp32_nodes=group,
                        note=f"fp32: largest contributions ({share:.0%} of the total)",
                    )
                    trial = run(config)
                    if trial.within_bound:
                        stopped = "the bound was met with nodes kept in fp32"
                        break
                    if trial.speedup < min_speedup:
                        stopped = (
                            f"keeping more nodes in fp32 made it slower than {min_speedup}x "
                            "fp32 before the bound was met"
                        )
                        break
    else:
        stopped = "the first configuration met the bound"
    candidates = [t for t in trials if good(t)]
    chosen = max(candidates, key=lambda t: t.speedup) if candidates else None
    return SearchResult(trials, chosen, min_speedup, stopped, contribs)
