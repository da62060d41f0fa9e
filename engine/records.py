"""The per-video result and the one record schema every writer derives from.

A record is ``dataclasses.asdict(Prediction)``. JSONL writes it as it is; CSV writes one column
per field (:data:`RECORD_FIELDS`, nested values as JSON text); Arrow/Parquet (``dfe score``) uses
:func:`arrow_schema`, derived from the fields' type hints, with :data:`JSON_COLUMNS` (values
whose shape varies: dicts, lists of boxes, lists of tracks) stored as JSON strings. A field added
to :class:`Prediction` therefore reaches every writer; none can drop it.
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class Prediction:
    """The result for one video (or one sequence of frames or crops).

    Probabilities are softmax outputs in [0, 1]; ``confidence`` is the winning class's
    probability x 100, as the original showed it. Per-frame lists are aligned with
    ``frame_indices`` (0-based presentation-order indices into the video).
    """

    video: str
    status: str  # "ok" or "error"
    error: str | None = None
    # FAKE, REAL, UNCERTAIN or NO_FACE (core.verdict), and why, most important first
    # (reason codes: core.verdict.REASONS); None for an error record
    verdict: str | None = None
    reasons: list[str] = field(default_factory=list)
    label: str | None = None  # "REAL" or "FAKE": the original's argmax, kept for compatibility
    confidence: float | None = None  # 0-100, the winning class's probability, as the original
    p_fake: float | None = None  # the plain softmax of the video's logits
    # p_fake after the model's calibration (temperature scaling; equal to p_fake uncalibrated)
    p_fake_calibrated: float | None = None
    logits: list[float] = field(default_factory=list)  # the video's (reduced) logits
    frames: int = 0  # frames used
    faces: int = 0  # frames in which the scored person's face was found
    frame_p_fake: list[float] = field(default_factory=list)
    frame_indices: list[int] = field(default_factory=list)
    boxes: list[list[int] | None] = field(default_factory=list)  # crop box per frame used
    crop_style: str | None = None  # "scrfd" or "dlib" (None: the caller's own crops)
    # who was scored: "main", "all" or "per-frame" (None: the caller's own crops)
    faces_mode: str | None = None
    # 1: faces detected in every sampled frame (exact); K: every K-th, followed in between
    detect_every: int | None = None
    people: int = 0  # face tracks in the video present in enough frames to be scored
    # each scored person: {"track", "frames", "frame_indices", "boxes", "p_fake", "label",
    # "confidence", "face_coverage", "verdict", "reasons", "p_fake_calibrated", "quality"}; the
    # record's own fields are those of the deciding one
    tracks: list[dict[str, Any]] = field(default_factory=list)
    # fraction of the frames used that had the scored person's face (0: all whole frames)
    face_coverage: float | None = None
    # the deciding person's evidence: face size, sharpness, exposure, colour, interlacing,
    # compression, face frames (preprocess.quality.Quality)
    quality: dict[str, Any] | None = None
    # the calibration and operating point the verdict was read with (status "calibrated" or
    # "uncalibrated", temperature, fake_at, real_below, operating point, fitted on)
    calibration: dict[str, Any] | None = None
    detector_input: dict[str, Any] | None = None  # the detector input chosen, and why
    # the source's colour description and what was converted: {"source": {"primaries",
    # "transfer", "matrix", "range", "bit_depth", "pix_fmt"}, "conversion": "none" | "gamut" |
    # "tone-map" | "transfer" | "kept", "filters", "assumed"}; None when not described (OpenCV)
    colour: dict[str, Any] | None = None
    # what else the decoder did and saw: {"backend", "deinterlace" ("bwdif" or None),
    # "deinterlace_filter", "field_order", "deinterlaced_frames", "interlaced_frames",
    # "frame_sizes" (more than one when the video changes size), "size_changes"}
    decode: dict[str, Any] | None = None
    # --timeline: the whole video sampled at --timeline-fps, per person (engine.timeline):
    # {"fps", "frames", "frame_indices", "times", "people": [{"track", "p_fake", "boxes"}],
    # "segments", "rule", "seconds"}; and the segments judged manipulated, {start, end (s),
    # score, person}
    timeline: dict[str, Any] | None = None
    segments: list[dict[str, Any]] = field(default_factory=list)
    # wall-clock seconds of this video: per stage ("decode", "detect", "track", "crop",
    # "classify"; "timeline", "explain" when they ran; a stage that did not run is absent) and
    # "total", from the start of its first stage to its record (plus "timeline"; stages of
    # several videos overlap in predict_many, so a job's stage sums can exceed its wall time)
    timings: dict[str, float] = field(default_factory=dict)
    seq_len: int | None = None
    sampling: str | None = None
    reduce: str | None = None
    backend: str | None = None
    precision: str | None = None
    model: str | None = None
    warnings: list[str] = field(default_factory=list)
    # how the record was made, so that it can be defended and reproduced: engine version, the
    # model's and the detector's checksums, every score-changing option, the input's identity
    # (engine.provenance); None only for records of older versions
    provenance: dict[str, Any] | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def to_record(self) -> dict[str, Any]:
        """The record (plain JSON-serialisable dict) of this prediction."""
        return asdict(self)


#: Record columns, in order (CSV header, Arrow schema).
RECORD_FIELDS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(Prediction))


def _arrow_kind(annotation: Any) -> str:
    """A short name of the Arrow type of a field: str, int, float, bool, list[<kind>] or json."""
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        rest = [a for a in args if a is not type(None)]
        return _arrow_kind(rest[0]) if len(rest) == 1 else "json"
    if annotation in (str, int, float, bool):
        return annotation.__name__
    if typing.get_origin(annotation) is list and len(args) == 1 and args[0] in (str, int, float):
        return f"list[{args[0].__name__}]"
    return "json"


_KINDS: dict[str, str] = {
    name: _arrow_kind(hint) for name, hint in typing.get_type_hints(Prediction).items()
}
#: Fields stored as JSON strings in Arrow/Parquet (their shape varies between records).
JSON_COLUMNS: tuple[str, ...] = tuple(n for n in RECORD_FIELDS if _KINDS[n] == "json")


def arrow_schema() -> Any:
    """The ``pyarrow.Schema`` of one record (needs pyarrow; JSON columns as strings)."""
    import pyarrow as pa

    scalar = {"str": pa.string(), "int": pa.int64(), "float": pa.float64(), "bool": pa.bool_()}
    types_ = {**scalar, "json": pa.string()}
    for name, t in scalar.items():
        types_[f"list[{name}]"] = pa.list_(t)
    return pa.schema([(n, types_[_KINDS[n]]) for n in RECORD_FIELDS])


def encode_json_columns(record: dict[str, Any]) -> dict[str, Any]:
    """A record in the storage form of Arrow/Parquet: :data:`JSON_COLUMNS` as JSON strings."""
    out = dict(record)
    for key in JSON_COLUMNS:
        out[key] = json.dumps(out.get(key))
    return out


def decode_json_columns(row: dict[str, Any]) -> dict[str, Any]:
    """Inverse of :func:`encode_json_columns`; also turns Arrow/NumPy values into plain Python
    (arrays to lists, NaN to None)."""
    out: dict[str, Any] = {}
    for key, value in row.items():
        if key in JSON_COLUMNS and isinstance(value, str):
            value = json.loads(value)
        elif hasattr(value, "tolist"):  # numpy arrays and scalars
            value = value.tolist()
        elif isinstance(value, float) and math.isnan(value):
            value = None
        out[key] = value
    return out


def csv_row(record: dict[str, Any]) -> dict[str, Any]:
    """One CSV row: every field of :data:`RECORD_FIELDS`, lists and dicts as JSON text."""
    return {
        k: json.dumps(record.get(k)) if isinstance(record.get(k), (list, dict)) else record.get(k)
        for k in RECORD_FIELDS
    }


def from_csv_row(row: dict[str, str]) -> dict[str, Any]:
    """Inverse of :func:`csv_row`: a record from one CSV row of strings, each field back to its
    type (empty text is None; lists and dicts from their JSON text)."""
    out: dict[str, Any] = {}
    for key in RECORD_FIELDS:
        text = row.get(key)
        kind = _KINDS[key]
        if text is None or text == "":
            out[key] = None
        elif kind == "json" or kind.startswith("list"):
            out[key] = json.loads(text)
        elif kind == "int":
            out[key] = int(text)
        elif kind == "float":
            out[key] = float(text)
        elif kind == "bool":
            out[key] = text == "True"
        else:
            out[key] = text
    return out


def error_record(video: str, error: str, **fields: Any) -> dict[str, Any]:
    """The record of a video that could not be scored."""
    return Prediction(video=video, status="error", error=error, **fields).to_record()
