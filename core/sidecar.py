"""The JSON sidecar that travels with an exported model (``classifier.json``).

It holds everything needed to feed the graph and read its output (input size, channel order,
mean/std, crop and sampling policy, reduction, label map) plus provenance (checkpoint sha256,
library versions) and the parity measured at export. The runtime reads it; the engine bytes
never carry it.

Every section is a frozen dataclass (:class:`Sidecar` and the classes it holds), parsed and
checked once by :func:`load_sidecar`: a missing required field or a value of the wrong type
raises :class:`ModelFormatError` naming the file and the field (``graphs.classifier.sha256``).
Fields older sidecars may lack are optional (None, or empty). Writers build these objects and
write their :meth:`~Sidecar.to_json`: ``dfe export`` the whole file (:func:`write_sidecar`),
``dfe calibrate`` and ``dfe build --precision int8`` one section of it
(:func:`update_sidecar`). Measured reports whose rows are free-form (the export parity, the
INT8 quantization settings, speed and trials) stay JSON mappings inside their typed section.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.config import PRECISIONS, REDUCE_MODES, VARIANTS
from core.errors import ArtifactNotFoundError, InvalidInputError, ModelFormatError
from core.reduce import LABELS
from core.verdict import Calibration

SCHEMA = "deepfake-engine/classifier"
SCHEMA_VERSION = 1
SIDECAR_NAME = "classifier.json"
# graphs[...] key of the INT8 Q/DQ classifier written by `dfe build --precision int8`
INT8_GRAPH = "classifier_int8"
#: The INT8 graph's file and its error report (``.json``/``.md``) next to the model.
INT8_FILE = "classifier.int8.onnx"
INT8_REPORT_STEM = "classifier.int8.report"
#: What is made from a model folder's graphs after export (the INT8 graph and its reports,
#: TensorRT engines in ``engines/``): a new export into the folder removes them, since they
#: no longer belong to its graphs.
DERIVED_FILES = (INT8_FILE, f"{INT8_REPORT_STEM}.json", f"{INT8_REPORT_STEM}.md", "engines")
CHANNEL_ORDERS = ("BGR", "RGB")
RESIZE_METHODS = ("pil-bilinear",)
#: The top-level sections a record's ``spec_sha256`` covers (:attr:`ModelSpec.spec_sha256`).
SCORING_SECTIONS = ("model", "reduce", "input", "labels", "preprocessing")
_EXPORT_FIX = "re-run dfe export"

__all__ = [
    "CHANNEL_ORDERS",
    "INT8_GRAPH",
    "LABELS",
    "PRECISIONS",
    "SCHEMA",
    "SCHEMA_VERSION",
    "SIDECAR_NAME",
    "AgreementBound",
    "CheckpointInfo",
    "ClassifierGraph",
    "CropSet",
    "ExplainInfo",
    "FrameRange",
    "GraphRecord",
    "GraphSource",
    "Graphs",
    "HeldOutSet",
    "InputSpec",
    "Int8Accuracy",
    "Int8Calibration",
    "Int8Graph",
    "Int8Search",
    "ModelInfo",
    "ModelSpec",
    "PreprocessingInfo",
    "Sidecar",
    "TensorRTFormAccuracy",
    "TrainingInfo",
    "load_sidecar",
    "update_sidecar",
    "write_sidecar",
]


# ------------------------------------------------------------------------------ JSON <-> typed


#: The metadata of a field left out of the JSON when it is None (written only sometimes).
_OMIT_NONE = {"omit_none": True}


def _to_json(value: Any) -> Any:
    """``value`` as JSON data: sections through their ``to_json``, tuples as lists."""
    if isinstance(value, _Section):
        return value.to_json()
    if isinstance(value, (tuple, list)):
        return [_to_json(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _to_json(v) for k, v in value.items()}
    return value


def _kind(tp: Any) -> str:
    """What a field of type ``tp`` holds, in words (for errors)."""
    if tp in (int, float):
        return "a number" if tp is float else "an integer"
    if tp is str:
        return "a string"
    if tp is bool:
        return "true or false"
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_kind(a) for a in typing.get_args(tp))
    if tp is type(None):
        return "null"
    if origin is tuple:
        return "a list"
    return "an object"


def _parse_value(tp: Any, value: Any, where: str) -> Any:
    """``value`` (JSON data at field ``where``) checked against the type ``tp``; raises
    ``_FieldError`` naming the field."""
    if tp is Any:
        return value
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        if len(options) == 1:  # X | None: X's error names the field inside
            return _parse_value(options[0], value, where)
        for arg in options:
            try:
                return _parse_value(arg, value, where)
            except _FieldError:
                continue
        raise _FieldError(where, value, tp)
    if isinstance(tp, type) and issubclass(tp, _Section):
        return tp._parse(value, where)
    if origin is tuple:
        if not isinstance(value, list):
            raise _FieldError(where, value, tp)
        (item, _) = typing.get_args(tp)  # tuple[X, ...]
        return tuple(_parse_value(item, v, f"{where}[{i}]") for i, v in enumerate(value))
    if origin in (Mapping, dict) or tp in (Mapping, dict):
        if not isinstance(value, dict):
            raise _FieldError(where, value, tp)
        args = typing.get_args(tp)
        inner = args[1] if args else Any
        if inner is Any:  # a free-form report: JSON as it is
            return value
        return {k: _parse_value(inner, v, f"{where}.{k}") for k, v in value.items()}
    if tp not in _SCALARS:
        raise TypeError(f"no JSON reading for the field type {tp!r}")
    if not isinstance(value, _SCALARS[tp]) or (tp is not bool and isinstance(value, bool)):
        raise _FieldError(where, value, tp)
    return value


# the JSON values a scalar field takes (a number may be written as an integer; true and false
# are Python ints, and are refused where a number is expected)
_SCALARS: dict[Any, type | tuple[type, ...]] = {
    bool: bool,
    int: int,
    float: (int, float),
    str: str,
}


class _FieldError(Exception):
    """A sidecar field that is missing (``value`` is ``_MISSING``) or of the wrong type."""

    def __init__(self, where: str, value: Any, tp: Any = None) -> None:
        self.where, self.value, self.tp = where, value, tp
        super().__init__(self.describe())

    def describe(self) -> str:
        if self.value is _MISSING:
            return f"lacks the required field {self.where}"
        shown = json.dumps(self.value)
        shown = shown if len(shown) <= 60 else shown[:57] + "..."
        return f"field {self.where} is {shown}, expected {_kind(self.tp)}"


_MISSING = object()


@functools.cache
def _type_hints(cls: type) -> dict[str, Any]:
    """The field types of a section class (resolved once)."""
    return typing.get_type_hints(cls)


@dataclass(frozen=True, kw_only=True)
class _Section:
    """A JSON object of the sidecar as a frozen dataclass: :meth:`to_json` writes its fields in
    declaration order (``_OMIT_NONE`` fields only when set); reading checks every field's type
    and that the fields without a default are there."""

    def to_json(self) -> dict[str, Any]:
        """This section as JSON data, as the sidecar holds it."""
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is None and f.metadata.get("omit_none"):
                continue
            out[f.name] = _to_json(value)
        return out

    @classmethod
    def _parse(cls, data: Any, where: str) -> Any:
        """The section ``where`` of a sidecar (JSON data) as an instance of ``cls``."""
        if not isinstance(data, dict):
            raise _FieldError(where, data, cls)
        hints = _type_hints(cls)
        kwargs = {}
        for f in dataclasses.fields(cls):
            sub = f"{where}.{f.name}" if where else f.name
            if f.name not in data:
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                    raise _FieldError(sub, _MISSING)
                continue
            kwargs[f.name] = _parse_value(hints[f.name], data[f.name], sub)
        return cls(**kwargs)


# ------------------------------------------------------------------------------ the sections


@dataclass(frozen=True)
class InputSpec:
    """How frames become the classifier's input (the sidecar's ``input`` section).

    A face crop (HxWx3 uint8, in the decoder's BGR order) is resized to ``size`` x ``size`` by
    ``resize``, put in ``channel_order`` (``BGR``: as decoded, the original's choice), scaled by
    ``scale`` and normalised per channel with ``mean``/``std`` in that channel order.
    """

    size: int = 112
    channel_order: str = "BGR"
    scale: float = 1 / 255
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)  # ImageNet RGB statistics
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    resize: str = "pil-bilinear"

    def __post_init__(self) -> None:
        if self.channel_order not in CHANNEL_ORDERS:
            raise ModelFormatError(
                f"input channel_order {self.channel_order!r}; supported values are "
                f"{', '.join(CHANNEL_ORDERS)}"
            )
        if self.resize not in RESIZE_METHODS:
            raise ModelFormatError(
                f"input resize {self.resize!r}; supported values are {', '.join(RESIZE_METHODS)}"
            )
        if self.size < 1 or len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ModelFormatError(f"invalid input description {self}")

    def as_dict(self) -> dict[str, Any]:
        """The sidecar's ``input`` section for this spec."""
        return {
            "size": self.size,
            "layout": "NCHW",
            "dtype": "float32",
            "channel_order": self.channel_order,
            "scale": self.scale,
            "mean": list(self.mean),
            "std": list(self.std),
            "resize": self.resize,
        }

    @classmethod
    def from_json(cls, data: Any) -> InputSpec:
        """The ``input`` section (JSON data) as an :class:`InputSpec`: ``size``,
        ``channel_order``, ``mean`` and ``std`` required, ``scale`` (1/255) and ``resize``
        optional. Raises :class:`ModelFormatError` for a missing field, a wrong type or an
        unsupported value (the caller adds the file's name)."""
        try:
            inp = _Input._parse(data, "input")
        except _FieldError as exc:
            raise ModelFormatError(exc.describe()) from None
        return cls(
            size=inp.size,
            channel_order=inp.channel_order,
            scale=float(inp.scale),
            mean=tuple(float(v) for v in inp.mean),  # type: ignore[arg-type]
            std=tuple(float(v) for v in inp.std),  # type: ignore[arg-type]
            resize=inp.resize,
        )


@dataclass(frozen=True, kw_only=True)
class _Input(_Section):
    """The JSON form of :class:`InputSpec`, for reading only (its checks are InputSpec's)."""

    size: int
    channel_order: str
    scale: float = 1 / 255
    mean: tuple[float, ...]
    std: tuple[float, ...]
    resize: str = "pil-bilinear"
    layout: str | None = None
    dtype: str | None = None


@dataclass(frozen=True, kw_only=True)
class ModelInfo(_Section):
    """The ``model`` section: the architecture, and the checkpoint's ``variant`` (``original``:
    per-frame logits, reduced over frames; ``sequence``: an LSTM head over each video), how the
    variant was told (``variant_source``: ``keys`` or ``flag``), whether the LSTM has biases
    and whether it runs batch-first (the sequence variant)."""

    architecture: str | None = None
    variant: str
    variant_source: str | None = None
    lstm_bias: bool | None = None
    lstm_batch_first: bool | None = None


@dataclass(frozen=True, kw_only=True)
class PreprocessingInfo(_Section):
    """The ``preprocessing`` section: frame sampling (``first``), crop (``tight``), the crop
    style the checkpoint needs (``scrfd`` or ``dlib``; None in older sidecars) and where it came
    from (``crop_style_source``), how crop boxes are rounded and what a faceless frame gives
    (``no_face``: ``full_frame``)."""

    sampling: str | None = None
    crop: str | None = None
    crop_style: str | None = None
    crop_style_source: str | None = None
    crop_rounding: str | None = None
    no_face: str | None = None


@dataclass(frozen=True, kw_only=True)
class TrainingInfo(_Section):
    """``checkpoint.training``: the ``dfe train`` record a checkpoint came with (its path, the
    epoch kept, which set its accuracy was measured on, the crop style and sampling trained)."""

    record: str | None = None
    epoch: int | None = None
    accuracy_source: str | None = None
    crop_style: str | None = None
    sampling: str | None = None


@dataclass(frozen=True, kw_only=True)
class CheckpointInfo(_Section):
    """The ``checkpoint`` section: the training checkpoint exported (file name, absolute path
    at export, sha256, size in bytes, key layout), the sequence length N it was trained for,
    its accuracy in percent and data-set name (from its file name or its training record), and
    its ``training`` record (None: not made by ``dfe train``). Every field may be None."""

    file: str | None = None
    path: str | None = None
    sha256: str | None = None
    size_bytes: int | None = None
    layout: str | None = None
    seq_len: int | None = None
    accuracy: float | None = None
    data: str | None = None
    training: TrainingInfo | None = None


@dataclass(frozen=True, kw_only=True)
class ExplainInfo(_Section):
    """``graphs.classifier.explain``: the graph ``output`` ``dfe explain`` reads (``fmap``,
    frames x 2048 x 4 x 4), the ``weights`` file (``linear1.npy``, float32 (2, 2048)) that
    weights it into heatmaps and its sha256."""

    output: str | None = None
    weights: str | None = None
    weights_sha256: str | None = None
    semantics: str | None = None


#: A tensor's shape in the sidecar: named dynamic axes (``"frames"``) and fixed sizes.
Shapes = Mapping[str, tuple[int | str, ...]]


@dataclass(frozen=True, kw_only=True)
class GraphRecord(_Section):
    """One ONNX graph of the model folder (``graphs.head``): its ``file`` (relative to the
    folder), sha256, input and output names with their shapes, and what its outputs mean."""

    file: str
    sha256: str | None = None
    inputs: Shapes = field(default_factory=dict)
    outputs: Shapes = field(default_factory=dict)
    semantics: str | None = None


@dataclass(frozen=True, kw_only=True)
class ClassifierGraph(_Section):
    """``graphs.classifier``: the fp32 classifier graph (see :class:`GraphRecord`) and what
    ``dfe explain`` needs of it (``explain``; None in sidecars older than ``dfe explain``)."""

    file: str
    sha256: str | None = None
    inputs: Shapes = field(default_factory=dict)
    outputs: Shapes = field(default_factory=dict)
    explain: ExplainInfo | None = None
    semantics: str | None = None


@dataclass(frozen=True, kw_only=True)
class GraphSource(_Section):
    """``graphs.classifier_int8.source``: the graph the INT8 one was made from and its sha256
    then (when it differs from the classifier's now, the INT8 graph is out of date)."""

    graph: str | None = None
    sha256: str | None = None


@dataclass(frozen=True, kw_only=True)
class FrameRange(_Section):
    """Which frames of each video: ``start``, ``start + step``, ... (at most ``count``)."""

    start: int
    step: int
    count: int


@dataclass(frozen=True, kw_only=True)
class CropSet(_Section):
    """A set of face crops a graph was calibrated or checked on: the videos (file names), the
    frames chosen of each, the frames used per video (short videos: fewer) and the crops in
    all."""

    videos: tuple[str, ...] = ()
    frames: FrameRange | None = None
    frames_per_video: Mapping[str, int] = field(default_factory=dict)
    crops: int | None = None


@dataclass(frozen=True, kw_only=True)
class Int8Calibration(CropSet):
    """``graphs.classifier_int8.calibration``: the calibration crops (:class:`CropSet`), the
    range ``method`` chosen and the one tried first, the ranges in words, how the crops were
    made (crop style, the face policy as :meth:`preprocess.faces.FacePolicy.describe` gives it,
    who was scored (``faces``), the detector input (``size_probe``, ``detect_every``), the
    detector file) and the seconds spent on crops and on calibration. Fields added since the
    first INT8 builds may be None."""

    method: str | None = None
    first_method: str | None = None
    ranges: str | None = None
    crop_style: str | None = None
    policy: Mapping[str, Any] | None = None
    faces: str | None = None
    size_probe: bool | None = None
    detect_every: int | None = None
    detector: str | None = None
    seconds_crops: float | None = None
    seconds_calibrate: float | None = None


@dataclass(frozen=True, kw_only=True)
class HeldOutSet(CropSet):
    """``graphs.classifier_int8.accuracy.held_out``: the held-out crops (:class:`CropSet`) and
    what a faceless frame gave (``no_face=...``)."""

    faceless_frames: str | None = None


@dataclass(frozen=True, kw_only=True)
class AgreementBound(_Section):
    """The agreement bound an INT8 graph is held to: max |delta p_fake| per video, and equal
    labels wherever the fp32 p_fake is more than ``decisive_margin`` from 0.5."""

    max_abs_delta_p_fake: float
    decisive_margin: float | None = None


@dataclass(frozen=True, kw_only=True)
class Int8Accuracy(_Section):
    """``graphs.classifier_int8.accuracy``: the INT8 graph against the fp32 one on held-out
    frames, at every N of ``seq_lens`` with the model's reduction: max |delta p_fake| per video
    and per frame (None: the sequence variant), label agreement (all, and where the fp32 label
    is decisive; None: no decisive video), the bound and whether it holds (None in a record
    that does not say), one row per video and N (``video``, ``n``, ``p_fake_fp32``,
    ``p_fake_int8``), and the held-out set."""

    reference: str | None = None
    seq_lens: tuple[int, ...] = ()
    reduce: str | None = None
    max_abs_delta_p_fake: float | None = None
    max_abs_delta_p_fake_frame: float | None = None
    label_agreement: float | None = None
    label_agreement_decisive: float | None = None
    bound: AgreementBound | None = None
    within_bound: bool | None = None
    videos: tuple[Mapping[str, Any], ...] = ()
    held_out: HeldOutSet | None = None
    held_out_note: str | None = None


@dataclass(frozen=True, kw_only=True)
class Int8Search(_Section):
    """``graphs.classifier_int8.search``: the configuration chosen (its record: method,
    percentile, symmetric, fp32_nodes, note), the nodes it keeps in fp32, its speed against
    fp32 (``speedup``: ratio of CPU time, ``speedup_wall``, frames/s of each) and how it was
    timed, the speed-up required, every configuration tried (one row each), why the search
    stopped, its seconds and the error report's file names (None: no ``--report``)."""

    chosen: Mapping[str, Any] = field(default_factory=dict)
    fp32_nodes: tuple[str, ...] = ()
    speed: Mapping[str, Any] = field(default_factory=dict)
    speed_note: str | None = None
    min_speedup: float | None = None
    trials: tuple[Mapping[str, Any], ...] = ()
    stopped: str | None = None
    seconds: float | None = None
    report: tuple[str, ...] | None = field(default=None, metadata=_OMIT_NONE)


@dataclass(frozen=True, kw_only=True)
class TensorRTFormAccuracy(_Section):
    """``graphs.classifier_int8.tensorrt_form_accuracy``: the TensorRT form of the INT8 graph
    (signed symmetric activations, float biases) run on ONNX Runtime CPU against fp32: what
    was measured, max |delta p_fake|, decisive label agreement and whether the bound holds."""

    what: str | None = None
    max_abs_delta_p_fake: float | None = None
    label_agreement_decisive: float | None = None
    within_bound: bool | None = None


@dataclass(frozen=True, kw_only=True)
class Int8Graph(_Section):
    """``graphs.classifier_int8``: the INT8 Q/DQ classifier ``dfe build --precision int8``
    made: its file and sha256, the graph it was made from (``source``), inputs and outputs (the
    fp32 graph's), how it was quantized (the settings and a summary of its Q/DQ nodes, as
    :func:`engine.optimize.quantize.qdq_summary` gives it), the calibration set, the accuracy
    it costs, the search that chose it, its TensorRT form's accuracy and the library versions
    it was built with."""

    file: str
    sha256: str | None = None
    precision: str = "int8"
    source: GraphSource | None = None
    inputs: Shapes = field(default_factory=dict)
    outputs: Shapes = field(default_factory=dict)
    quantization: Mapping[str, Any] = field(default_factory=dict)
    calibration: Int8Calibration | None = None
    accuracy: Int8Accuracy | None = None
    search: Int8Search | None = None
    tensorrt_form_accuracy: TensorRTFormAccuracy | None = None
    built_with: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class Graphs(_Section):
    """The ``graphs`` section: the fp32 classifier, the sequence variant's LSTM head and the
    INT8 classifier once built (None when absent)."""

    classifier: ClassifierGraph
    head: GraphRecord | None = field(default=None, metadata=_OMIT_NONE)
    classifier_int8: Int8Graph | None = field(default=None, metadata=_OMIT_NONE)

    def get(self, key: str) -> ClassifierGraph | GraphRecord | Int8Graph | None:
        """The graph recorded under ``key`` (``classifier``, ``head``, ``classifier_int8``)."""
        return {"classifier": self.classifier, "head": self.head, INT8_GRAPH: self.classifier_int8}[
            key
        ]


@dataclass(frozen=True, kw_only=True)
class Sidecar:
    """A whole sidecar file: what the runtime reads (``model``, ``reduce``, ``input``,
    ``preprocessing``, ``labels``, ``checkpoint``, ``graphs``, ``calibration``, ``demo``),
    how the graphs were exported (ONNX ``opset``, the ``exporter``, library ``versions``, the
    ``parity`` report of :func:`export.onnx_export.check_parity`, ``export_seconds``) and the
    top-level keys this engine does not read (``extra``, e.g. ``dfe demo``'s note), kept so
    :meth:`to_json` writes them back. ``calibration`` is None for an uncalibrated model;
    ``demo`` is True for the untrained model of ``dfe demo``."""

    model: ModelInfo
    reduce: str
    input: InputSpec
    preprocessing: PreprocessingInfo = field(default_factory=PreprocessingInfo)
    labels: Mapping[int, str]
    checkpoint: CheckpointInfo = field(default_factory=CheckpointInfo)
    graphs: Graphs
    opset: int | None = None
    exporter: str | None = None
    versions: Mapping[str, str] = field(default_factory=dict)
    parity: Mapping[str, Any] | None = None
    export_seconds: float | None = None
    calibration: Calibration | None = None
    demo: bool = False
    extra: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.reduce not in REDUCE_MODES:
            raise ModelFormatError(
                f"reduce {self.reduce!r}; supported values are {', '.join(REDUCE_MODES)}"
            )
        if self.model.variant not in VARIANTS:
            raise ModelFormatError(
                f"model.variant {self.model.variant!r}; supported values are {', '.join(VARIANTS)}"
            )
        if sorted(self.labels.values()) != ["FAKE", "REAL"]:
            raise ModelFormatError(f"labels {dict(self.labels)}; expected FAKE and REAL")

    def to_json(self) -> dict[str, Any]:
        """The file's content (without ``schema`` and ``schema_version``, which
        :func:`write_sidecar` puts first): the sections in the order ``dfe export`` writes
        them; ``opset`` .. ``export_seconds`` and ``calibration`` only when set, ``demo`` only
        when True, then ``extra``."""
        out: dict[str, Any] = {
            "model": self.model.to_json(),
            "reduce": self.reduce,
            "input": self.input.as_dict(),
            "preprocessing": self.preprocessing.to_json(),
            "labels": {str(k): v for k, v in self.labels.items()},
            "checkpoint": self.checkpoint.to_json(),
            "graphs": self.graphs.to_json(),
        }
        for name in ("opset", "exporter", "versions", "parity", "export_seconds"):
            value = getattr(self, name)
            if value is not None:
                out[name] = _to_json(value)
        if self.calibration is not None:
            out["calibration"] = self.calibration.to_sidecar()
        if self.demo:
            out["demo"] = True
        return {**out, **self.extra}

    @classmethod
    def from_json(cls, data: Any, *, source: str | Path = "the sidecar") -> Sidecar:
        """A sidecar's JSON content (the file's, ``schema`` keys included or not) as a
        :class:`Sidecar`. Raises :class:`ModelFormatError` naming ``source`` and the field for
        a missing required field (``model.variant``, ``reduce``, ``input``, ``labels``,
        ``graphs.classifier.file``), a value of the wrong type or an unsupported value. A
        damaged ``calibration`` section raises too; :func:`load_sidecar` defers that error to
        :attr:`ModelSpec.calibration`, so that ``dfe calibrate`` can replace the section."""
        return cls._from_json(data, source=source)[0]

    @classmethod
    def _from_json(
        cls, data: Any, *, source: str | Path, strict_calibration: bool = True
    ) -> tuple[Sidecar, str | None]:
        """:meth:`from_json`, and with ``strict_calibration`` False the calibration section's
        error (the section then read as None) instead of raising it."""
        if not isinstance(data, dict):
            raise ModelFormatError(f"{source} does not hold a JSON object; {_EXPORT_FIX}")
        fix = _EXPORT_FIX
        try:
            graphs_data = data.get("graphs")
            if isinstance(graphs_data, dict) and INT8_GRAPH in graphs_data:
                folder = Path(source).parent if isinstance(source, Path) else "MODEL_DIR"
                fix = f"rebuild the INT8 graph: dfe build {folder} --precision int8 --rebuild"
                Int8Graph._parse(graphs_data[INT8_GRAPH], f"graphs.{INT8_GRAPH}")
                fix = _EXPORT_FIX
            parts = _Top._parse(data, "")
        except _FieldError as exc:
            raise ModelFormatError(f"{source} {exc.describe()}; {fix}") from None
        try:
            inp = InputSpec.from_json(data["input"])
        except ModelFormatError as exc:
            raise ModelFormatError(f"{source}: {exc}; {_EXPORT_FIX}") from None
        labels: dict[int, str] = {}
        for k, v in parts.labels.items():
            try:
                labels[int(k)] = v
            except ValueError:
                raise ModelFormatError(
                    f"{source}: field labels has the key {k!r}, expected a class index "
                    f"(0, 1); {_EXPORT_FIX}"
                ) from None
        calibration, calibration_error = None, None
        if data.get("calibration"):
            try:
                calibration = Calibration.from_sidecar(data["calibration"])
            except ModelFormatError as exc:
                if strict_calibration:
                    raise ModelFormatError(f"{source}: {exc}") from None
                calibration_error = f"{source}: {exc}"
        known = {f.name for f in dataclasses.fields(cls) if f.name != "extra"}
        known |= {"schema", "schema_version"}
        try:
            sidecar = cls(
                model=parts.model,
                reduce=parts.reduce,
                input=inp,
                preprocessing=parts.preprocessing or PreprocessingInfo(),
                labels=labels,
                checkpoint=parts.checkpoint or CheckpointInfo(),
                graphs=parts.graphs,
                opset=parts.opset,
                exporter=parts.exporter,
                versions=parts.versions or {},
                parity=parts.parity,
                export_seconds=parts.export_seconds,
                calibration=calibration,
                demo=bool(parts.demo),
                extra={k: v for k, v in data.items() if k not in known},
            )
        except ModelFormatError as exc:
            raise ModelFormatError(f"{source}: {exc}; {_EXPORT_FIX}") from None
        return sidecar, calibration_error


@dataclass(frozen=True, kw_only=True)
class _Top(_Section):
    """The top level of the file, as read (the fields :class:`Sidecar` checks by type); the
    ``input`` section is :class:`InputSpec`'s to read, ``calibration`` :class:`Calibration`'s."""

    model: ModelInfo
    reduce: str
    input: Any
    preprocessing: PreprocessingInfo | None = None
    labels: Mapping[str, str]
    checkpoint: CheckpointInfo | None = None
    graphs: Graphs
    opset: int | None = None
    exporter: str | None = None
    versions: Mapping[str, str] | None = None
    parity: Mapping[str, Any] | None = None
    export_seconds: float | None = None
    demo: bool | None = None


@dataclass(frozen=True)
class ModelSpec:
    """What the runtime needs from a model folder: its ``directory``, its typed
    :class:`Sidecar` and what :func:`load_sidecar` resolved from it: the graph files
    (``classifier_file``, the sequence variant's ``head_file``, ``onnx_files``: precision ->
    ONNX file present, ``int8`` only while built from the current fp32 graph), the digests a
    record keeps (``spec_sha256``, ``calibration_sha256``) and the error of a damaged
    calibration section (``calibration_error``, raised by :attr:`calibration`). The sidecar's
    sections are read as attributes (``spec.checkpoint.sha256``,
    ``spec.graphs.classifier_int8.accuracy``)."""

    directory: Path
    sidecar: Sidecar
    classifier_file: Path
    head_file: Path | None
    # precision -> ONNX file present in the model directory ("fp32": classifier_file, "int8": the
    # Q/DQ graph once `dfe build --precision int8` has made it)
    onnx_files: dict[str, Path] = field(default_factory=dict)
    # sha256 of the sections that change a score besides the graphs (SCORING_SECTIONS: model
    # variant, reduction, input description, labels, preprocessing policy) as canonical JSON of
    # the file's text: a record made with this model keeps it, so a sidecar edited by hand since
    # is noticed, while building another precision (which adds a graph) is not a change
    spec_sha256: str = ""
    # sha256 of the calibration section as canonical JSON (None: uncalibrated): a record keeps
    # it, so a model calibrated again since is named
    calibration_sha256: str | None = None
    # why the calibration section is damaged (None: it is not), raised by `calibration`
    calibration_error: str | None = None

    @property
    def variant(self) -> str:
        """``original`` or ``sequence`` (``model.variant``)."""
        return self.sidecar.model.variant

    @property
    def reduce(self) -> str:
        """How per-frame outputs become a video's: ``mean`` or ``last``."""
        return self.sidecar.reduce

    @property
    def input(self) -> InputSpec:
        """How crops become the classifier's input."""
        return self.sidecar.input

    @property
    def labels(self) -> Mapping[int, str]:
        """Class index -> ``FAKE`` / ``REAL``."""
        return self.sidecar.labels

    @property
    def seq_len(self) -> int | None:
        """The sequence length the checkpoint was trained for, when known."""
        return self.sidecar.checkpoint.seq_len

    @property
    def demo(self) -> bool:
        """True for the untrained model of ``dfe demo`` (its scores mean nothing)."""
        return self.sidecar.demo

    @property
    def model(self) -> ModelInfo:
        """The sidecar's ``model`` section."""
        return self.sidecar.model

    @property
    def checkpoint(self) -> CheckpointInfo:
        """The checkpoint the graphs were exported from."""
        return self.sidecar.checkpoint

    @property
    def graphs(self) -> Graphs:
        """The graphs the sidecar records (fp32 classifier, head, INT8 classifier)."""
        return self.sidecar.graphs

    @property
    def preprocessing(self) -> PreprocessingInfo:
        """The sidecar's ``preprocessing`` section."""
        return self.sidecar.preprocessing

    @property
    def crop_style(self) -> str | None:
        """The crop style recorded at export (``scrfd`` or ``dlib``), None in older sidecars."""
        return self.sidecar.preprocessing.crop_style

    @property
    def precisions(self) -> tuple[str, ...]:
        """Precisions this model directory has an ONNX graph for (fp16/bf16 run the fp32 graph
        in reduced precision, so they are not listed here)."""
        return tuple(p for p in PRECISIONS if p in self.onnx_files)

    def classifier_for(self, precision: str) -> Path:
        """The classifier ONNX graph for ``precision`` (fp16/bf16: the fp32 graph, which
        TensorRT compiles or torch casts), or an error saying how to make it."""
        if precision not in PRECISIONS:
            raise InvalidInputError(
                f"precision={precision!r} is not supported; supported values are "
                f"{', '.join(PRECISIONS)}"
            )
        files = {"fp32": self.classifier_file, **self.onnx_files}
        path = files.get("fp32" if precision in ("fp16", "bf16") else precision)
        if path is None:
            recorded = self.graphs.classifier_int8
            why = (
                "its int8 graph was built from another classifier.onnx (re-exported since)"
                if recorded and (self.directory / recorded.file).is_file()
                else f"it has no {precision} classifier graph"
            )
            raise ArtifactNotFoundError(
                f"{self.directory}: {why}; make it with: "
                f"dfe build {self.directory} --precision {precision}"
            )
        return path

    def graph_key(self, precision: str) -> str:
        """The sidecar's ``graphs`` entry of the classifier graph ``precision`` runs (fp16 and
        bf16 run the fp32 graph)."""
        return INT8_GRAPH if precision == "int8" else "classifier"

    def verify_graphs(self, precision: str) -> dict[str, Any]:
        """Check that the graph files ``precision`` runs (the classifier graph, and the head of
        the sequence variant) are the ones the sidecar records: their sha256 against the
        sidecar's. Returns what a record's provenance names: ``{"graph", "graph_sha256",
        "head_sha256"}``. Hashes a file once per file identity
        (:func:`core.hashing.file_sha256`).

        Raises :class:`ModelFormatError` naming the file and the fix when a digest differs or
        the sidecar records none (the file was changed or damaged after export), and
        :class:`ArtifactNotFoundError` when the graph is missing."""
        from core.hashing import file_sha256

        key = self.graph_key(precision)
        path = self.classifier_for(precision)
        fix = (
            f"rebuild it with: dfe build {self.directory} --precision int8"
            if key == INT8_GRAPH
            else f"export the checkpoint again: dfe export CHECKPOINT -o {self.directory}"
        )
        out: dict[str, Any] = {"graph": path.name, "graph_sha256": None, "head_sha256": None}
        for slot, name, file in (
            ("graph_sha256", key, path),
            ("head_sha256", "head", self.head_file),
        ):
            if file is None:
                continue
            record = self.graphs.get(name)
            expected = record.sha256 if record is not None else None
            actual = file_sha256(file)
            if expected != actual:
                recorded = f"records {expected}" if expected else "records no sha256 for it"
                raise ModelFormatError(
                    f"{file} is not the graph its sidecar {self.directory / SIDECAR_NAME} "
                    f"describes (sha256 {actual}; the sidecar {recorded}): it was changed or "
                    f"damaged after it was made, and its scores could not be trusted. Replace "
                    f"the model folder, or {fix}"
                )
            out[slot] = actual
        return out

    @property
    def sidecar_sha256(self) -> str:
        """sha256 of the sidecar file as it is now."""
        from core.hashing import file_sha256

        return file_sha256(self.directory / SIDECAR_NAME)

    @property
    def calibration(self) -> Calibration:
        """The model's calibration and operating point (``dfe calibrate``), or the default of
        an uncalibrated model (:class:`core.verdict.Calibration`). Raises
        :class:`ModelFormatError` naming the sidecar for a damaged section (read at load; the
        error is raised here, on use, so that ``dfe calibrate`` can still replace it)."""
        if self.calibration_error is not None:
            raise ModelFormatError(self.calibration_error)
        return self.sidecar.calibration or Calibration()


def _canonical_sha256(data: Any) -> str:
    """sha256 of ``data`` as canonical JSON (sorted keys, no spaces)."""
    text = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def remove_derived_files(directory: Path) -> list[Path]:
    """Remove :data:`DERIVED_FILES` from a model folder (what was made from graphs that are
    being replaced); returns what was removed."""
    import shutil

    removed = []
    for name in DERIVED_FILES:
        path = Path(directory) / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
        else:
            continue
        removed.append(path)
    return removed


def write_sidecar(path: Path, data: Sidecar | Mapping[str, Any]) -> None:
    """Write a sidecar (the schema and its version first) atomically: a temporary file next to
    it, renamed over it, so a reader never sees half of one. ``data`` is a :class:`Sidecar` or
    its JSON content (``schema`` keys, if any, are replaced)."""
    import os

    content = data.to_json() if isinstance(data, Sidecar) else dict(data)
    content = {
        "schema": SCHEMA,
        "schema_version": SCHEMA_VERSION,
        **{k: v for k, v in content.items() if k not in ("schema", "schema_version")},
    }
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(content, indent=2, sort_keys=False) + "\n")
    os.replace(tmp, path)


def update_sidecar(
    model_dir: str | Path,
    *,
    calibration: Calibration | None = None,
    int8: Int8Graph | None = None,
) -> Path:
    """Replace sections of a model folder's sidecar, keeping the rest of the file as it is:
    ``calibration`` (``dfe calibrate``), ``graphs.classifier_int8`` (``dfe build --precision
    int8``). The file is read again just before (whatever else changed meanwhile is kept) and
    patched section by section, not rebuilt from the typed objects, so keys this engine does
    not read survive. Checks the result as :func:`load_sidecar` does before writing it; returns
    the sidecar's path."""
    path = _sidecar_path(model_dir)
    data = _read_json(path)
    if calibration is not None:
        data["calibration"] = calibration.to_sidecar()
    if int8 is not None:
        data.setdefault("graphs", {})[INT8_GRAPH] = int8.to_json()
    _check_schema(path, data)
    Sidecar._from_json(data, source=path, strict_calibration=calibration is not None)
    write_sidecar(path, data)
    return path


def _sidecar_path(model_dir: str | Path) -> Path:
    """``<model_dir>/classifier.json``, or ``model_dir`` itself when it names a ``.json``; an
    :class:`ArtifactNotFoundError` saying how to make it when it is missing (or which folder
    was meant: :func:`model_path_advice`)."""
    p = Path(model_dir)
    path = p if p.suffix == ".json" else p / SIDECAR_NAME
    if not path.is_file():
        advice = (
            f"export a checkpoint first: dfe export CHECKPOINT -o {path.parent}"
            if p.suffix == ".json"
            else model_path_advice(p)
        )
        raise ArtifactNotFoundError(f"no model sidecar at {path}; {advice}")
    return path


def holds_model(folder: Path) -> bool:
    """Whether ``folder`` holds an exported model (its :data:`SIDECAR_NAME`) or a folder of
    them (``*/classifier.json``)."""
    try:
        return (folder / SIDECAR_NAME).is_file() or any(folder.glob(f"*/{SIDECAR_NAME}"))
    except OSError:  # unreadable: not one to suggest
        return False


def model_path_advice(path: str | Path) -> str:
    """What to tell a user whose model path names no model folder: for a file inside a model
    folder (its ``classifier.onnx``), to give that folder; for a path that does not exist, the
    existing sibling folder holding a model whose name is closest (a typo, by
    :func:`difflib.get_close_matches`); otherwise how to export one into it."""
    import difflib

    p = Path(path)
    if p.is_file() and (p.parent / SIDECAR_NAME).is_file():
        return f"{p} is a file of an exported model: give the model folder {p.parent}"
    if p.is_file():
        return (
            f"{p} is a file, not an exported model folder; give the folder that holds "
            f"{SIDECAR_NAME} (a checkpoint is exported into one with: dfe export CHECKPOINT -o "
            "DIR)"
        )
    if not p.exists() and p.parent.is_dir():
        try:
            siblings = [d for d in p.parent.iterdir() if d.is_dir() and holds_model(d)]
        except OSError:
            siblings = []
        names = {d.name: d for d in siblings}
        close = difflib.get_close_matches(p.name, list(names), n=1)
        if close:
            return f"did you mean {names[close[0]]}? (it holds an exported model)"
    return f"export one with: dfe export CHECKPOINT -o {p}"


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelFormatError(f"{path} is not valid JSON ({exc}); re-run dfe export") from exc
    if not isinstance(data, dict):
        raise ModelFormatError(f"{path} does not hold a JSON object; re-run dfe export")
    return data


def _check_schema(path: Path, data: Mapping[str, Any]) -> None:
    if data.get("schema") != SCHEMA:
        raise ModelFormatError(
            f"{path} is not a deepfake-engine sidecar (schema {data.get('schema')!r}, "
            f"expected {SCHEMA!r}); re-run dfe export"
        )
    if data.get("schema_version") != SCHEMA_VERSION:
        raise ModelFormatError(
            f"{path} has schema_version {data.get('schema_version')!r}; this engine reads "
            f"version {SCHEMA_VERSION}. Re-export the checkpoint with this version of dfe."
        )


def load_sidecar(model_dir: str | Path) -> ModelSpec:
    """Read ``<model_dir>/classifier.json`` (or a sidecar path), check every field once
    (:meth:`Sidecar.from_json`) and resolve its graph files. Raises
    :class:`ArtifactNotFoundError` when the sidecar or a graph it names is missing and
    :class:`ModelFormatError` naming the file and the field for a damaged sidecar."""
    path = _sidecar_path(model_dir)
    data = _read_json(path)
    _check_schema(path, data)
    sidecar, calibration_error = Sidecar._from_json(data, source=path, strict_calibration=False)
    directory = path.parent
    graphs = sidecar.graphs
    classifier_file = directory / graphs.classifier.file
    head_file = directory / graphs.head.file if graphs.head else None
    onnx_files = {"fp32": classifier_file}
    int8 = graphs.classifier_int8
    if (
        int8 is not None
        and (directory / int8.file).is_file()
        and int8.source is not None
        and int8.source.sha256 == graphs.classifier.sha256
    ):  # present, and built from the current fp32 graph
        onnx_files["int8"] = directory / int8.file
    for f in (classifier_file, head_file):
        if f is not None and not f.is_file():
            raise ArtifactNotFoundError(f"{path} names {f.name}, which is missing from {directory}")
    return ModelSpec(
        directory=directory,
        sidecar=sidecar,
        classifier_file=classifier_file,
        head_file=head_file,
        onnx_files=onnx_files,
        # of the sections as the file holds them (see the fields' comments)
        spec_sha256=_canonical_sha256({k: data.get(k) for k in SCORING_SECTIONS}),
        calibration_sha256=(
            _canonical_sha256(data["calibration"]) if data.get("calibration") else None
        ),
        calibration_error=calibration_error,
    )
