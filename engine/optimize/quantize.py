"""INT8 by explicit quantization: one Q/DQ ONNX graph for ONNX Runtime on CPU and TensorRT.

``build_int8`` calibrates once, searches for the fastest Q/DQ graph within the agreement bound
(:mod:`engine.optimize.int8_search`: activation ranges, then nodes kept in fp32 where the
measured error comes from, :mod:`engine.optimize.qdq_debug`), writes ``classifier.int8.onnx``
next to ``classifier.onnx`` and records it in the sidecar (``graphs["classifier_int8"]``) with
its calibration set, what was tried, the accuracy it costs and its speed-up; or refuses with
the table of what was tried.

The recipe, measured on 2-core x86 CPUs with AVX-512 VNNI (PITFALLS.md, docs/int8-tensorrt.md):

- ``quant_pre_process`` first (``skip_symbolic_shape=True``: symbolic shape inference fails on
  this graph), then ``quantize_static`` in QDQ format;
- activations **uint8**, weights **int8 per channel** (U8S8): ONNX Runtime's fast VNNI kernels.
  Signed activations (S8S8) ran slower than fp32 here;
- every Conv, the LSTM-step MatMul and the Gemm quantized statically. Quantizing the MatMul
  dynamically instead was slower (and TensorRT cannot read dynamic quantization);
- Relu after a quantized tensor is left to the uint8 clamp at zero (ONNX Runtime's default);
  keeping the Relu nodes measured ~17% slower on CPU;
- calibration: 32 face crops per video (frames 100, 104, ..., 224), read in chunks that mix
  every video; the first configuration tried is Percentile (99.999), which on the test model
  (issue 5) had the smallest held-out max |delta p_fake| of MinMax and Entropy (0.024-0.028),
  symmetric activations (0.03-0.04) and 16 crops per video (0.020-0.028). Chunks bound memory:
  ORT keeps every intermediate tensor of what it reads at once (8 GB for 192 crops in one go,
  2.4 GB peak in chunks of 32).

TensorRT accepts only signed, symmetric (zero point 0) INT8 Q/DQ and float biases.
:func:`engine.backends.trt_qdq.tensorrt_qdq` (re-exported here) derives that form from the same
file at build time: a uint8 tensor with zero point 128 becomes int8 with the same scale (exact),
one with zero point 0 (a clamp at 0) gets an explicit Relu and the symmetric scale covering its
range, and int32 bias DequantizeLinear nodes are folded into float constants.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from core.classifier import FEATURES, LOGITS, ClassifierRunner
from core.config import EngineConfig
from core.deps import require
from core.errors import InvalidInputError
from core.hashing import sha256_file
from core.onnx_session import create_session
from core.reduce import score_video
from core.sidecar import (
    INT8_FILE,
    INT8_REPORT_STEM,
    AgreementBound,
    GraphSource,
    HeldOutSet,
    Int8Accuracy,
    Int8Calibration,
    Int8Graph,
    Int8Search,
    ModelSpec,
    TensorRTFormAccuracy,
    load_sidecar,
    update_sidecar,
)
from engine.backends.qdq_rewrite import cpu_qdq_model
from engine.backends.trt_qdq import tensorrt_qdq  # re-exported: tests import it here
from engine.optimize.calibration import (
    CALIBRATION_FRAMES,
    EVALUATION_FRAMES,
    FrameSelection,
    NormalisedCrops,
    default_calibration_videos,
    describe_set,
    video_crops,
)
from engine.optimize.int8_search import (  # re-exported: the CLI and tests import them here
    CALIB_METHODS,  # noqa: F401
    DEFAULT_MAX_MINUTES,
    DEFAULT_METHOD,
    DEFAULT_PERCENTILE,
    FALLBACK_SHARES,
    MIN_SPEEDUP,
    Calibration,
    Int8SearchError,
    QuantConfig,
    SearchResult,
    Trial,
    format_trials,
    pre_process,
    quantize_with,
    relative_speed,
    search,
)
from engine.provenance import library_versions

if TYPE_CHECKING:
    from preprocess.faces import FacePolicy

log = logging.getLogger(__name__)

REPORT_STEM = INT8_REPORT_STEM  # + .json / .md, next to the model
CALIB_BATCH = 8
CALIB_CHUNK = 4  # batches per calibration read (bounds memory)
# The agreement bound of issue 5: |delta p_fake| <= 0.03 for every video, and the same label
# wherever the fp32 p_fake is more than 0.05 from 0.5.
MAX_DELTA_P_FAKE = 0.03
DECISIVE_MARGIN = 0.05
EVAL_SEQ_LENS = (20, 60)
SPEED_BATCH = 32  # held-out crops per timed run in the search
REPORT_CROPS = 48  # held-out crops for the per-node measurements (8 per default video)


@dataclass(frozen=True)
class Int8Result:
    path: Path
    sidecar: Path
    record: Int8Graph  # what went into graphs["classifier_int8"]
    report: tuple[Path, Path] | None = None  # the --report files (JSON, Markdown)
    search: SearchResult | None = None


# ------------------------------------------------------------------------------ quantization


def quantize_classifier(
    src: Path,
    dst: Path,
    calib: np.ndarray,
    *,
    method: str = DEFAULT_METHOD,
    percentile: float = DEFAULT_PERCENTILE,
    symmetric: bool | None = None,
    fp32_nodes: Sequence[str] = (),
) -> dict[str, Any]:
    """Quantize the fp32 graph ``src`` to a U8S8 Q/DQ graph at ``dst``, calibrated on ``calib``
    (normalised crops ``[n, 3, 112, 112]``), in one call: pre-processing, one calibration pass
    and ``quantize_static`` (see :mod:`engine.optimize.int8_search`). ``symmetric`` defaults to
    each method's ONNX Runtime default (percentile: symmetric; minmax, entropy: not). Returns
    the settings used, for the sidecar."""
    config = QuantConfig(
        method,
        percentile,
        method == "percentile" if symmetric is None else symmetric,
        tuple(fp32_nodes),
    )
    with tempfile.TemporaryDirectory(dir=dst.parent, prefix=".quant-") as tmp:
        pre = pre_process(src, Path(tmp) / "preprocessed.onnx")
        calibration = Calibration.collect(pre, calib, batch=CALIB_BATCH, chunk=CALIB_CHUNK)
        settings = quantize_with(pre, dst, calibration, config)
    settings["seconds_calibrate"] = round(calibration.seconds, 2)
    return settings


def qdq_summary(model: Any) -> dict[str, Any]:
    """What the Q/DQ graph holds: node counts, activation and weight types, per-channel weights."""
    onnx = require("onnx")
    from onnx import TensorProto, numpy_helper

    if not isinstance(model, onnx.ModelProto):
        model = onnx.load(str(model))
    inits = {i.name: i for i in model.graph.initializer}
    names = {TensorProto.UINT8: "uint8", TensorProto.INT8: "int8", TensorProto.INT32: "int32"}
    q_types: set[str] = set()
    weight_types: set[str] = set()
    per_channel = per_tensor = 0
    counts = {"QuantizeLinear": 0, "DequantizeLinear": 0}
    for node in model.graph.node:
        if node.op_type in counts:
            counts[node.op_type] += 1
        if node.op_type == "QuantizeLinear" and len(node.input) > 2 and node.input[2] in inits:
            q_types.add(names.get(inits[node.input[2]].data_type, "other"))
        if node.op_type == "DequantizeLinear" and node.input[0] in inits:
            data = inits[node.input[0]]
            if data.data_type == TensorProto.INT32:
                continue  # a bias
            weight_types.add(names.get(data.data_type, "other"))
            scale = numpy_helper.to_array(inits[node.input[1]])
            if scale.size > 1:
                per_channel += 1
            else:
                per_tensor += 1
    return {
        "quantize_linear": counts["QuantizeLinear"],
        "dequantize_linear": counts["DequantizeLinear"],
        "activation_types": sorted(q_types),
        "weight_types": sorted(weight_types),
        "per_channel_weights": per_channel,
        "per_tensor_weights": per_tensor,
    }


# ------------------------------------------------------------------------------ accuracy


@dataclass(frozen=True)
class HeldOutOutputs:
    """What one classifier graph gives on the held-out crops."""

    p_fake: dict[int, np.ndarray]  # N -> p_fake of each video's first N crops
    lengths: dict[int, list[int]]  # N -> crops actually used per video (short videos: fewer)
    frame_p_fake: np.ndarray | None  # per-frame p_fake of every crop (original variant)


def held_out_outputs(
    runner: ClassifierRunner,
    held_out: Sequence[NormalisedCrops],
    *,
    spec: ModelSpec,
    seq_lens: Sequence[int] = EVAL_SEQ_LENS,
) -> HeldOutOutputs:
    """Run the classifier (the runtime's :class:`ClassifierRunner`) once over each video's
    crops and reduce the first N of them for every N, as the runtime does (the sequence head
    is causal, so the first N steps of the whole sequence are those of the first N frames)."""
    logits = runner.run([c.crops for c in held_out]).logits
    p_fake: dict[int, np.ndarray] = {}
    lengths: dict[int, list[int]] = {}
    for n in seq_lens:
        p_fake[n] = np.array([score_video(z[:n], spec.reduce, spec.labels).p_fake for z in logits])
        lengths[n] = [len(z[:n]) for z in logits]
    frames = (
        np.concatenate([score_video(z, spec.reduce, spec.labels).frame_p_fake for z in logits])
        if runner.head is None
        else None
    )
    return HeldOutOutputs(p_fake, lengths, frames)


def compare_outputs(
    ref: HeldOutOutputs, got: HeldOutOutputs, held_out: Sequence[NormalisedCrops], *, reduce: str
) -> dict[str, Any]:
    """The accuracy cost of ``got`` against the fp32 ``ref``: issue 5's agreement bound."""
    rows = []
    for n, p_ref in ref.p_fake.items():
        for c, used, a, b in zip(held_out, ref.lengths[n], p_ref, got.p_fake[n]):
            rows.append(
                {
                    "video": Path(c.video).name,
                    "n": used,
                    "p_fake_fp32": round(float(a), 6),
                    "p_fake_int8": round(float(b), 6),
                }
            )
    deltas = [abs(r["p_fake_int8"] - r["p_fake_fp32"]) for r in rows]
    agree = [(r["p_fake_int8"] > 0.5) == (r["p_fake_fp32"] > 0.5) for r in rows]
    decisive = [a for a, r in zip(agree, rows) if abs(r["p_fake_fp32"] - 0.5) > DECISIVE_MARGIN]
    frame_delta = (
        float(np.max(np.abs(got.frame_p_fake - ref.frame_p_fake)))
        if ref.frame_p_fake is not None and got.frame_p_fake is not None
        else None
    )
    max_delta = max(deltas)
    return {
        "reference": "fp32 classifier.onnx, ONNX Runtime CPU",
        "seq_lens": list(ref.p_fake),
        "reduce": reduce,
        "max_abs_delta_p_fake": round(max_delta, 6),
        "max_abs_delta_p_fake_frame": round(frame_delta, 6) if frame_delta is not None else None,
        "label_agreement": round(sum(agree) / len(agree), 6),
        "label_agreement_decisive": round(sum(decisive) / len(decisive), 6) if decisive else None,
        "bound": {"max_abs_delta_p_fake": MAX_DELTA_P_FAKE, "decisive_margin": DECISIVE_MARGIN},
        "within_bound": bool(max_delta <= MAX_DELTA_P_FAKE and all(decisive)),
        "videos": rows,
    }


# ------------------------------------------------------------------------------ the build


@dataclass(frozen=True)
class CropSets:
    """The crops an INT8 build calibrates on and checks against (:func:`gather_crops`)."""

    calib: list[NormalisedCrops]  # the calibration crops of each video
    held: list[NormalisedCrops]  # the held-out crops of each video (faceless frames kept)
    seconds: float  # wall time spent making them
    overlap: list[str]  # videos whose held-out frames are also calibration frames

    def interleaved_held(self) -> np.ndarray:
        """Every held-out crop, in round-robin order over the videos (every video in any
        prefix: what the speed and per-node measurements take the first crops of)."""
        return _interleave([c.crops for c in self.held])


def gather_crops(
    spec: ModelSpec,
    config: EngineConfig,
    policy: FacePolicy,
    videos: Sequence[Path],
    held_videos: Sequence[Path],
    calib_frames: FrameSelection,
    eval_frames: FrameSelection,
) -> CropSets:
    """Step 1 of :func:`build_int8`: the calibration crops (``calib_frames`` of ``videos``)
    and the held-out ones (``eval_frames`` of ``held_videos``, faceless frames kept as the
    runtime scores them), made by the runtime's face chain as ``config`` and ``policy``
    describe it (the detector opened from ``config``, who is scored, the detector input, fast
    mode, decode options). Warns when held-out frames overlap the calibration frames."""
    from engine.api import open_detector
    from preprocess.crop import Preprocessor
    from preprocess.face_extraction import DecodeOptions

    preprocessor = Preprocessor(spec.input)
    det = open_detector(config)
    t0 = time.perf_counter()
    chain = {  # the runtime's face chain: who is scored, the detector input, fast mode, decode
        "policy": policy,
        "preprocessor": preprocessor,
        "faces": config.faces,
        "size_probe": config.size_probe,
        "detect_every": config.detect_every,
        "decode": DecodeOptions.from_config(config),
    }
    calib = video_crops(videos, det, calib_frames, **chain)
    held = video_crops(held_videos, det, eval_frames, keep_faceless=True, **chain)
    seconds = time.perf_counter() - t0
    overlap = [
        Path(c.video).name
        for c in calib
        for h in held
        if c.video == h.video and set(c.frame_indices) & set(h.frame_indices)
    ]
    if overlap:
        log.warning("held-out frames overlap the calibration frames of %s", overlap)
    return CropSets(calib, held, seconds, overlap)


def calibrate(classifier: Path, crops: CropSets, tmp: Path) -> tuple[Path, Calibration]:
    """Step 2 of :func:`build_int8`: the fp32 graph pre-processed for quantization (written
    to ``tmp``) and one ONNX Runtime calibration pass over every calibration crop (videos
    interleaved, read in chunks), from which each configuration tried takes its ranges."""
    pre = pre_process(classifier, tmp / "preprocessed.onnx")
    calibration = Calibration.collect(
        pre, _interleave([c.crops for c in crops.calib]), batch=CALIB_BATCH, chunk=CALIB_CHUNK
    )
    return pre, calibration


class Int8Trials:
    """Step 3 of :func:`build_int8`: what the search (:func:`engine.optimize.int8_search.
    search`) calls. Each configuration is quantized (ONNX Runtime static Q/DQ, from the one
    calibration) into ``tmp``, loaded as the CPU runtime loads it, measured against the fp32
    graph on the held-out crops (:func:`compare_outputs`) and timed against it in the same loop
    (:func:`~engine.optimize.int8_search.relative_speed`); per-node contributions to the error
    are measured on demand, once per graph. Making one runs the fp32 graph on the held-out
    crops (``ref``)."""

    def __init__(
        self,
        spec: ModelSpec,
        pre: Path,
        calibration: Calibration,
        held: Sequence[NormalisedCrops],
        tmp: Path,
        *,
        batch_size: int,
        speed_crops: np.ndarray,
        report_crops: np.ndarray,
        speed_rounds: int,
        bar: Any,
    ) -> None:
        self.spec = spec
        self.pre = pre  # the pre-processed fp32 graph every configuration is quantized from
        self.calibration = calibration
        self.held = held
        self.tmp = tmp  # where the trial graphs are written
        self.batch_size = batch_size
        self.speed_crops = speed_crops  # held-out crops timed per run
        self.report_crops = report_crops  # held-out crops of the per-node measurements
        self.speed_rounds = speed_rounds
        self.bar = bar  # the build's progress bar (tqdm)
        self.head = create_session(spec.head_file) if spec.head_file is not None else None
        self.fp32_session = create_session(spec.classifier_file)
        self.ref = self.outputs(self.fp32_session)
        self._contributions: dict[Path, dict[str, Any]] = {}

    def outputs(self, classifier: Any) -> HeldOutOutputs:
        """The held-out outputs of a classifier session (with the model's head, if any)."""
        runner = ClassifierRunner(classifier, self.head, batch_size=self.batch_size)
        return held_out_outputs(runner, self.held, spec=self.spec)

    def cost(self, classifier: Any) -> dict[str, Any]:
        """What a classifier session costs against fp32 on the held-out crops."""
        return compare_outputs(
            self.ref, self.outputs(classifier), self.held, reduce=self.spec.reduce
        )

    def try_config(self, cfg: QuantConfig) -> Trial:
        """Quantize ``cfg`` and measure its accuracy and speed: one row of the search."""
        self.bar.set_description(f"int8: {cfg.label()[:40]}")
        t = time.perf_counter()
        path = self.tmp / f"trial{len(list(self.tmp.glob('trial*.onnx')))}.onnx"
        settings = quantize_with(self.pre, path, self.calibration, cfg)
        session = create_session(cpu_qdq_model(path)[0])  # as the CPU runtime loads it
        cost = self.cost(session)
        speed = relative_speed(
            self.fp32_session,
            session,
            self.speed_crops,
            rounds=self.speed_rounds,
            output=FEATURES if self.head is not None else LOGITS,
        )
        del session
        trial = Trial(cfg, cost, speed, settings, path, time.perf_counter() - t)
        log.info(
            "int8 trial %s: max |delta p_fake| %.4f, %.2fx fp32",
            cfg.label(),
            cost["max_abs_delta_p_fake"],
            speed["speedup"],
        )
        return trial

    def measured_contributions(self, trial: Trial) -> dict[str, Any]:
        """Each quantized node's contribution to the error of ``trial``'s graph
        (:func:`engine.optimize.qdq_debug.node_contributions`), measured once per graph."""
        from engine.optimize.qdq_debug import node_contributions

        if self.head is not None:
            raise InvalidInputError(
                f"{self.spec.directory}: per-node contributions (--report, and the search's "
                "fp32 fallback when no whole-graph configuration meets the bound) measure the "
                "per-frame p_fake of the original variant's logits; this sequence-variant "
                "model's classifier ends at the features (its head runs over the video). "
                "Build it without --report, or keep its fp32 graph"
            )
        self.bar.set_description("int8: contributions per node")
        assert trial.path is not None
        if trial.path not in self._contributions:
            self._contributions[trial.path] = node_contributions(
                self.pre, trial.path, self.report_crops, labels=self.spec.labels
            )
        return self._contributions[trial.path]

    def contributions_of(self, trial: Trial) -> list[dict[str, Any]]:
        """The per-node rows of :meth:`measured_contributions` (what the search ranks)."""
        return self.measured_contributions(trial)["nodes"]

    def tensorrt_form_cost(self, trial: Trial) -> dict[str, Any]:
        """What the TensorRT form of ``trial``'s graph (:func:`tensorrt_qdq`: signed symmetric
        activations, float biases) costs against fp32, run by ONNX Runtime on CPU."""
        onnx = require("onnx")
        assert trial.path is not None
        session = create_session(tensorrt_qdq(onnx.load(str(trial.path))).SerializeToString())
        return self.cost(session)


def choose(
    spec: ModelSpec, result: SearchResult, report_files: tuple[Path, Path] | None, force: bool
) -> Trial:
    """Step 4 of :func:`build_int8`: the configuration the search chose; without one,
    :class:`Int8SearchError` with the table of what was tried, or with ``force`` the most
    accurate configuration tried."""
    chosen = result.chosen
    if chosen is None:
        if not force:
            raise Int8SearchError(_refusal(spec, result, report_files), result)
        chosen = min(result.trials, key=lambda t: t.accuracy["max_abs_delta_p_fake"])
    assert chosen.path is not None
    return chosen


def int8_record(
    dst: Path,
    spec: ModelSpec,
    *,
    chosen: Trial,
    first: QuantConfig,
    summary: dict[str, Any],
    crops: CropSets,
    calib_frames: FrameSelection,
    eval_frames: FrameSelection,
    calibration_seconds: float,
    policy: FacePolicy,
    config: EngineConfig,
    result: SearchResult,
    min_speedup: float,
    speed_rounds: int,
    speed_crops: int,
    seconds: float,
    report_files: tuple[Path, Path] | None,
    trt_cost: dict[str, Any],
) -> Int8Graph:
    """Step 5 of :func:`build_int8`: the sidecar record of the INT8 graph written at ``dst``
    (``graphs.classifier_int8``): its file and sha256, the fp32 graph it was made from, how it
    was quantized (``chosen``'s settings and the Q/DQ ``summary``), the calibration set and how
    its crops were made, the accuracy cost on the held-out crops, the search (``speed_crops``
    crops timed ``speed_rounds`` times; ``seconds`` the whole build), the TensorRT form's cost
    and the library versions."""
    cost = chosen.accuracy
    classifier = spec.graphs.classifier
    return Int8Graph(
        file=dst.name,
        sha256=sha256_file(dst),
        precision="int8",
        source=GraphSource(graph="classifier", sha256=classifier.sha256),
        inputs=classifier.inputs,
        outputs=classifier.outputs,
        quantization={**chosen.settings, "graph": summary},
        calibration=Int8Calibration(
            **describe_set(crops.calib, calib_frames),
            method=chosen.config.method,
            first_method=first.method,
            ranges=chosen.config.ranges,
            crop_style=policy.crop_style,
            policy=policy.describe(),
            faces=config.faces,
            size_probe=config.size_probe,
            detect_every=config.detect_every,
            detector=Path(config.detector).name,
            seconds_crops=round(crops.seconds, 2),
            seconds_calibrate=round(calibration_seconds, 2),
        ),
        accuracy=Int8Accuracy(
            reference=cost["reference"],
            seq_lens=tuple(cost["seq_lens"]),
            reduce=cost["reduce"],
            max_abs_delta_p_fake=cost["max_abs_delta_p_fake"],
            max_abs_delta_p_fake_frame=cost["max_abs_delta_p_fake_frame"],
            label_agreement=cost["label_agreement"],
            label_agreement_decisive=cost["label_agreement_decisive"],
            bound=AgreementBound(**cost["bound"]),
            within_bound=cost["within_bound"],
            videos=tuple(cost["videos"]),
            held_out=HeldOutSet(
                **describe_set(crops.held, eval_frames),
                faceless_frames=f"no_face={policy.no_face}",
            ),
            held_out_note="frames disjoint from the calibration frames"
            if not crops.overlap
            else f"overlaps calibration frames in {crops.overlap}",
        ),
        search=Int8Search(
            chosen=chosen.config.to_record(),
            fp32_nodes=tuple(chosen.config.fp32_nodes),
            speed=chosen.speed,
            speed_note="classifier only, ONNX Runtime CPU, fp32 and int8 timed interleaved "
            f"in the same loop (median of {speed_rounds} runs of {speed_crops} held-out "
            "crops), the int8 graph as the CPU runtime loads it (grouped convolutions merged, "
            "engine.backends.qdq_rewrite); speedup: ratio of CPU time per run, speedup_wall: of "
            "wall time; load "
            f"average {[round(v, 2) for v in _loadavg()]} at the end of the build",
            min_speedup=min_speedup,
            trials=tuple(result.table()),
            stopped=result.stopped,
            seconds=round(seconds, 1),
            report=tuple(p.name for p in report_files) if report_files else None,
        ),
        tensorrt_form_accuracy=TensorRTFormAccuracy(
            what="tensorrt_qdq() of this file (int8 symmetric activations, float biases), "
            "run by ONNX Runtime on CPU as a proxy for TensorRT INT8; not measured on TensorRT",
            max_abs_delta_p_fake=trt_cost["max_abs_delta_p_fake"],
            label_agreement_decisive=trt_cost["label_agreement_decisive"],
            within_bound=trt_cost["within_bound"],
        ),
        built_with=library_versions(("onnx", "onnxruntime", "numpy"), python=False),
    )


def build_int8(
    model_dir: str | Path,
    calib_videos: Sequence[str | Path] | None = None,
    *,
    eval_videos: Sequence[str | Path] | None = None,
    calib_frames: FrameSelection = CALIBRATION_FRAMES,
    eval_frames: FrameSelection = EVALUATION_FRAMES,
    method: str = DEFAULT_METHOD,
    percentile: float = DEFAULT_PERCENTILE,
    symmetric: bool | None = None,
    config: EngineConfig | None = None,
    force: bool = False,
    report: bool = False,
    min_speedup: float = MIN_SPEEDUP,
    max_minutes: float = DEFAULT_MAX_MINUTES,
    max_trials: int | None = None,
    report_crops: int = REPORT_CROPS,
    speed_rounds: int = 7,
    progress: bool = False,
    variants: Sequence[QuantConfig] | None = None,
    fallback_shares: Sequence[float] = FALLBACK_SHARES,
) -> Int8Result:
    """Calibrate once, search for the fastest Q/DQ graph within the agreement bound
    (:func:`engine.optimize.int8_search.search`), then write it and record it in the sidecar.

    Every configuration is measured on held-out frames (``eval_frames`` of ``eval_videos``,
    default the calibration videos) against the fp32 graph, and timed against it in the same
    loop. When no configuration is within the bound and at least ``min_speedup`` x fp32,
    nothing is written and :class:`Int8SearchError` carries the table of what was tried, unless
    ``force`` (then the most accurate graph tried is written, recorded as outside the bound).
    ``report`` also measures where the error comes from (:mod:`engine.optimize.qdq_debug`) and
    writes ``classifier.int8.report.json`` / ``.md`` next to the model (also on a refusal).
    ``max_minutes`` bounds the search (no new configuration is started after it), ``progress``
    shows a progress bar on stderr; ``max_trials``, ``variants`` and ``fallback_shares`` shorten
    the search (see :func:`~engine.optimize.int8_search.search`).

    Crops are made by the runtime's face chain (:class:`preprocess.face_extraction.
    FaceExtractor`) as ``config`` (an :class:`EngineConfig`: detector, who is scored (``faces``,
    ``main`` by default), the per-video detector input, face rule, crop style, margin, decode
    options) describes them, on ONNX Runtime CPU; the face policy and who was scored are
    recorded, and the engine warns when it scores with another policy.

    The steps: :func:`gather_crops`, :func:`calibrate`, the search over :class:`Int8Trials`
    (plus the error report), :func:`choose`, the TensorRT form's cost, then the graph moved
    into place and :func:`int8_record` written into the sidecar (:func:`update_sidecar`)."""
    from tqdm import tqdm

    from engine.pipeline import policy_for

    first = QuantConfig(
        method,
        percentile,
        method == "percentile" if symmetric is None else symmetric,
        note="requested" if method != DEFAULT_METHOD else "the default",
    )
    config = (config or EngineConfig()).replace(backend="ort", precision="fp32")
    spec = load_sidecar(model_dir)
    policy = policy_for(config, spec)
    directory = spec.directory
    videos = [Path(v) for v in calib_videos] if calib_videos else default_calibration_videos()
    held_videos = [Path(v) for v in eval_videos] if eval_videos else videos
    t_start = time.perf_counter()
    bar = tqdm(total=3, desc="int8: crops", unit="step", disable=not progress, leave=False)
    crops = gather_crops(spec, config, policy, videos, held_videos, calib_frames, eval_frames)
    bar.update(1)
    dst = directory / INT8_FILE
    mixed = crops.interleaved_held()
    speed_crops = mixed[:SPEED_BATCH]
    with tempfile.TemporaryDirectory(dir=directory, prefix=".int8-") as tmp_dir:
        tmp = Path(tmp_dir)
        bar.set_description("int8: calibration")
        pre, calibration = calibrate(spec.classifier_file, crops, tmp)
        bar.update(1)
        trials = Int8Trials(
            spec,
            pre,
            calibration,
            crops.held,
            tmp,
            batch_size=config.batch_size,
            speed_crops=speed_crops,
            report_crops=mixed[: max(1, report_crops)],
            speed_rounds=speed_rounds,
            bar=bar,
        )

        def on_trial(_trial: Trial) -> None:
            bar.total = max(bar.total, bar.n + 2)
            bar.update(1)

        result = search(
            first=first,
            try_config=trials.try_config,
            contributions=trials.contributions_of,
            min_speedup=min_speedup,
            max_seconds=max_minutes * 60,
            max_trials=max_trials,
            on_trial=on_trial,
            variants=variants,
            fallback_shares=fallback_shares,
        )
        report_files = None
        if report:
            bar.set_description("int8: error report")
            report_files = _write_error_report(
                directory, spec, pre, result, trials.report_crops, trials.measured_contributions
            )
        bar.close()
        chosen = choose(spec, result, report_files, force)
        trt_cost = trials.tensorrt_form_cost(chosen)
        summary = qdq_summary(chosen.path)
        chosen.path.replace(dst)
    record = int8_record(
        dst,
        spec,
        chosen=chosen,
        first=first,
        summary=summary,
        crops=crops,
        calib_frames=calib_frames,
        eval_frames=eval_frames,
        calibration_seconds=calibration.seconds,
        policy=policy,
        config=config,
        result=result,
        min_speedup=min_speedup,
        speed_rounds=speed_rounds,
        speed_crops=len(speed_crops),
        seconds=time.perf_counter() - t_start,
        report_files=report_files,
        trt_cost=trt_cost,
    )
    sidecar = update_sidecar(directory, int8=record)  # re-read: keeps what else changed meanwhile
    log.info(
        "wrote %s: max |delta p_fake| %.4f on held-out frames, %.2fx fp32",
        dst,
        chosen.accuracy["max_abs_delta_p_fake"],
        chosen.speedup,
    )
    return Int8Result(dst, sidecar, record, report_files, result)


def _loadavg() -> tuple[float, ...]:
    import os

    try:
        return os.getloadavg()
    except OSError:
        return ()


def _refusal(spec: ModelSpec, result: SearchResult, report_files: Any) -> str:
    best = min(result.trials, key=lambda t: t.accuracy["max_abs_delta_p_fake"])
    fastest_ok = [t for t in result.trials if t.within_bound]
    why = (
        f"the graphs within the bound were at most {max(t.speedup for t in fastest_ok):.2f}x "
        f"fp32 (needed: {result.min_speedup}x)"
        if fastest_ok
        else f"none was within the bound; the most accurate ({best.config.label()}) had max "
        f"|delta p_fake| {best.accuracy['max_abs_delta_p_fake']:.4f}"
    )
    where = (
        f"The error report is in {report_files[1]}."
        if report_files
        else "`dfe build --precision int8 --report` shows where the error comes from."
    )
    return (
        f"no INT8 graph of {spec.directory} is within the agreement bound (max |delta p_fake| "
        f"<= {MAX_DELTA_P_FAKE} per video at N = {list(EVAL_SEQ_LENS)} on held-out frames, "
        f"decisive labels equal) and at least {result.min_speedup}x as fast as fp32: {why}. "
        f"What was tried ({result.stopped}):\n"
        f"{format_trials(result.table(), MAX_DELTA_P_FAKE)}\n"
        f"Nothing was written. {where} Other --calib videos of the kind you score may help; "
        "--force keeps the most accurate graph anyway (recorded as outside the bound)."
    )


def _write_error_report(
    directory: Path,
    spec: ModelSpec,
    pre: Path,
    result: SearchResult,
    crops: np.ndarray,
    measured_contributions: Any,
) -> tuple[Path, Path]:
    """Per-node error of the most accurate whole-graph configuration tried (no node in fp32:
    where the error comes from), with the table of what was tried."""
    from engine.optimize.qdq_debug import report_rows, tensor_errors, write_report

    whole = [t for t in result.trials if not t.config.fp32_nodes]
    trial = min(whole, key=lambda t: t.accuracy["max_abs_delta_p_fake"])
    assert trial.path is not None
    contrib = measured_contributions(trial)
    errors = tensor_errors(pre, trial.path, crops[:16])
    rows = report_rows(pre, errors, contrib)
    report = {
        "model": str(spec.directory),
        "graph": f"{trial.config.label()} (the most accurate whole-graph configuration tried)",
        "crops_relative_error": int(min(16, len(crops))),
        "contributions": {k: v for k, v in contrib.items() if k != "nodes"},
        "nodes": rows,
        "trials": result.table(),
        "chosen": result.chosen.config.label() if result.chosen else None,
        "stopped": result.stopped,
        "bound": {"max_abs_delta_p_fake": MAX_DELTA_P_FAKE, "min_speedup": result.min_speedup},
    }
    return write_report(directory, REPORT_STEM, report)


def _interleave(per_video: Sequence[np.ndarray]) -> np.ndarray:
    """Crops in round-robin order over the videos, so every calibration chunk (and the first,
    which sets the histograms' bins) sees every video."""
    order = sorted(
        ((i, v) for v, crops in enumerate(per_video) for i in range(len(crops))),
    )
    return np.stack([per_video[v][i] for i, v in order])
