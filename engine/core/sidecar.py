"""The JSON sidecar that travels with an exported model (``classifier.json``).

It holds everything needed to feed the graph and read its output (input size, channel order,
mean/std, crop and sampling policy, reduction, label map) plus provenance (checkpoint sha256,
library versions) and the parity measured at export. The runtime reads it; the engine bytes
never carry it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.core.config import PRECISIONS, REDUCE_MODES, VARIANTS
from engine.core.errors import ArtifactNotFoundError, InvalidInputError, ModelFormatError
from engine.core.reduce import LABELS
from engine.core.verdict import Calibration

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

__all__ = [
    "CHANNEL_ORDERS",
    "INT8_GRAPH",
    "LABELS",
    "PRECISIONS",
    "SCHEMA",
    "SCHEMA_VERSION",
    "SIDECAR_NAME",
    "InputSpec",
    "ModelSpec",
    "load_sidecar",
    "write_sidecar",
]


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


@dataclass(frozen=True)
class ModelSpec:
    """What the runtime needs from a sidecar."""

    directory: Path
    variant: str  # "original" | "sequence"
    reduce: str  # "mean" | "last"
    input: InputSpec
    labels: dict[int, str]
    classifier_file: Path
    head_file: Path | None
    seq_len: int | None  # the sequence length the checkpoint was trained for, when known
    demo: bool
    raw: dict[str, Any]
    # precision -> ONNX file present in the model directory ("fp32": classifier_file, "int8": the
    # Q/DQ graph once `dfe build --precision int8` has made it)
    onnx_files: dict[str, Path] = field(default_factory=dict)

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
            recorded = self.raw.get("graphs", {}).get(INT8_GRAPH)
            why = (
                "its int8 graph was built from another classifier.onnx (re-exported since)"
                if recorded and (self.directory / recorded.get("file", "")).is_file()
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
        (:func:`engine.core.hashing.file_sha256`).

        Raises :class:`ModelFormatError` naming the file and the fix when a digest differs or
        the sidecar records none (the file was changed or damaged after export), and
        :class:`ArtifactNotFoundError` when the graph is missing."""
        from engine.core.hashing import file_sha256

        key = self.graph_key(precision)
        path = self.classifier_for(precision)
        fix = (
            f"rebuild it with: dfe build {self.directory} --precision int8"
            if key == INT8_GRAPH
            else f"export the checkpoint again: dfe export CHECKPOINT -o {self.directory}"
        )
        out: dict[str, Any] = {"graph": path.name, "graph_sha256": None, "head_sha256": None}
        graphs = self.raw.get("graphs", {})
        for slot, name, file in (
            ("graph_sha256", key, path),
            ("head_sha256", "head", self.head_file),
        ):
            if file is None:
                continue
            expected = graphs.get(name, {}).get("sha256")
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
        from engine.core.hashing import file_sha256

        return file_sha256(self.directory / SIDECAR_NAME)

    @property
    def spec_sha256(self) -> str:
        """sha256 of the sidecar sections that change a score besides the graphs (model
        variant, reduction, input description, labels, preprocessing policy), as canonical
        JSON: a record made with this model keeps it, so a sidecar edited by hand since is
        noticed, while building another precision (which adds a graph to the sidecar) is not
        a change. The calibration has its own: :attr:`calibration_sha256`."""
        import hashlib

        sections = {
            k: self.raw.get(k) for k in ("model", "reduce", "input", "labels", "preprocessing")
        }
        text = json.dumps(sections, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()

    @property
    def calibration_sha256(self) -> str | None:
        """sha256 of the sidecar's calibration section as canonical JSON (None: uncalibrated):
        a record made with this model keeps it, so a model calibrated again since is named."""
        import hashlib

        section = self.raw.get("calibration")
        if not section:
            return None
        text = json.dumps(section, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()

    @property
    def calibration(self) -> Calibration:
        """The model's calibration and operating point (``dfe calibrate``), or the default of
        an uncalibrated model (:class:`engine.core.verdict.Calibration`). Raises
        :class:`ModelFormatError` naming the sidecar for a damaged section."""
        try:
            return Calibration.from_sidecar(self.raw.get("calibration"))
        except ModelFormatError as exc:
            raise ModelFormatError(f"{self.directory / SIDECAR_NAME}: {exc}") from None

    @property
    def crop_style(self) -> str | None:
        """The crop style recorded at export (``scrfd`` or ``dlib``), None in older sidecars."""
        return self.raw.get("preprocessing", {}).get("crop_style")


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


def write_sidecar(path: Path, data: dict[str, Any]) -> None:
    """Write a sidecar (the schema and its version first) atomically: a temporary file next to
    it, renamed over it, so a reader never sees half of one."""
    import os

    data = {"schema": SCHEMA, "schema_version": SCHEMA_VERSION, **data}
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")
    os.replace(tmp, path)


def load_sidecar(model_dir: str | Path) -> ModelSpec:
    """Read ``<model_dir>/classifier.json`` (or a sidecar path) and check its fields."""
    p = Path(model_dir)
    path = p if p.suffix == ".json" else p / SIDECAR_NAME
    if not path.is_file():
        raise ArtifactNotFoundError(
            f"no model sidecar at {path}; export a checkpoint first: "
            f"dfe export CHECKPOINT -o {path.parent}"
        )
    try:
        raw = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelFormatError(f"{path} is not valid JSON ({exc}); re-run dfe export") from exc
    if raw.get("schema") != SCHEMA:
        raise ModelFormatError(
            f"{path} is not a deepfake-engine sidecar (schema {raw.get('schema')!r}, "
            f"expected {SCHEMA!r}); re-run dfe export"
        )
    if raw.get("schema_version") != SCHEMA_VERSION:
        raise ModelFormatError(
            f"{path} has schema_version {raw.get('schema_version')!r}; this engine reads "
            f"version {SCHEMA_VERSION}. Re-export the checkpoint with this version of dfe."
        )
    try:
        model, inp, graphs = raw["model"], raw["input"], raw["graphs"]
        directory = path.parent
        head = graphs.get("head")
        int8 = graphs.get(INT8_GRAPH)
        onnx_files = {"fp32": directory / graphs["classifier"]["file"]}
        if (
            int8
            and (directory / int8["file"]).is_file()
            and int8.get("source", {}).get("sha256") == graphs["classifier"].get("sha256")
        ):  # present, and built from the current fp32 graph
            onnx_files["int8"] = directory / int8["file"]
        spec = ModelSpec(
            directory=directory,
            variant=model["variant"],
            reduce=raw["reduce"],
            input=InputSpec(
                size=int(inp["size"]),
                channel_order=inp["channel_order"],
                scale=float(inp.get("scale", 1 / 255)),
                mean=tuple(float(v) for v in inp["mean"]),
                std=tuple(float(v) for v in inp["std"]),
                resize=inp.get("resize", "pil-bilinear"),
            ),
            labels={int(k): v for k, v in raw["labels"].items()},
            classifier_file=directory / graphs["classifier"]["file"],
            head_file=directory / head["file"] if head else None,
            seq_len=raw.get("checkpoint", {}).get("seq_len"),
            demo=bool(raw.get("demo", False)),
            raw=raw,
            onnx_files=onnx_files,
        )
    except ModelFormatError as exc:
        raise ModelFormatError(f"{path}: {exc}; re-run dfe export") from exc
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelFormatError(
            f"{path} lacks a required field or has a wrong type ({exc!r}); re-run dfe export"
        ) from exc
    if spec.reduce not in REDUCE_MODES:
        raise ModelFormatError(
            f"{path}: reduce {spec.reduce!r}; supported values are {', '.join(REDUCE_MODES)}"
        )
    if spec.variant not in VARIANTS:
        raise ModelFormatError(
            f"{path}: variant {spec.variant!r}; supported values are {', '.join(VARIANTS)}"
        )
    if sorted(spec.labels.values()) != ["FAKE", "REAL"]:
        raise ModelFormatError(f"{path}: labels {spec.labels}; expected FAKE and REAL")
    for f in (spec.classifier_file, spec.head_file):
        if f is not None and not f.is_file():
            raise ArtifactNotFoundError(f"{path} names {f.name}, which is missing from {directory}")
    return spec
