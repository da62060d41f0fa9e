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

from engine.errors import ArtifactNotFoundError, InvalidInputError, ModelFormatError

SCHEMA = "deepfake-engine/classifier"
SCHEMA_VERSION = 1
SIDECAR_NAME = "classifier.json"
# graphs[...] key of the INT8 Q/DQ classifier written by `dfe build --precision int8`
INT8_GRAPH = "classifier_int8"
PRECISIONS = ("fp32", "fp16", "bf16", "int8")
LABELS = {0: "FAKE", 1: "REAL"}


@dataclass(frozen=True)
class ModelSpec:
    """What the runtime needs from a sidecar."""

    directory: Path
    variant: str  # "original" | "sequence"
    reduce: str  # "mean" | "last"
    input_size: int
    channel_order: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
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
        """Precisions this model directory has an ONNX graph for (fp16 is compiled by TensorRT
        from the fp32 graph, so it is not listed here)."""
        return tuple(p for p in PRECISIONS if p in self.onnx_files)

    def classifier_for(self, precision: str) -> Path:
        """The classifier ONNX graph for ``precision`` (fp16, bf16: the fp32 graph that TensorRT
        compiles or PyTorch casts), or an error saying how to make it."""
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

    @property
    def crop_style(self) -> str | None:
        """The crop style recorded at export (``scrfd`` or ``dlib``), None in older sidecars."""
        return self.raw.get("preprocessing", {}).get("crop_style")


def write_sidecar(path: Path, data: dict[str, Any]) -> None:
    data = {"schema": SCHEMA, "schema_version": SCHEMA_VERSION, **data}
    path.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")


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
            input_size=int(inp["size"]),
            channel_order=inp["channel_order"],
            mean=tuple(inp["mean"]),
            std=tuple(inp["std"]),
            labels={int(k): v for k, v in raw["labels"].items()},
            classifier_file=directory / graphs["classifier"]["file"],
            head_file=directory / head["file"] if head else None,
            seq_len=raw.get("checkpoint", {}).get("seq_len"),
            demo=bool(raw.get("demo", False)),
            raw=raw,
            onnx_files=onnx_files,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelFormatError(
            f"{path} lacks a required field or has a wrong type ({exc!r}); re-run dfe export"
        ) from exc
    if spec.reduce not in ("mean", "last"):
        raise ModelFormatError(f"{path}: reduce {spec.reduce!r}; supported values are mean, last")
    if spec.variant not in ("original", "sequence"):
        raise ModelFormatError(
            f"{path}: variant {spec.variant!r}; supported values are original, sequence"
        )
    for f in (spec.classifier_file, spec.head_file):
        if f is not None and not f.is_file():
            raise ArtifactNotFoundError(f"{path} names {f.name}, which is missing from {directory}")
    return spec
