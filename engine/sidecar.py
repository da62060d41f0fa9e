"""The JSON sidecar that travels with an exported model (``classifier.json``).

It holds everything needed to feed the graph and read its output (input size, channel order,
mean/std, crop and sampling policy, reduction, label map) plus provenance (checkpoint sha256,
library versions) and the parity measured at export. The runtime reads it; the engine bytes
never carry it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.errors import ArtifactNotFoundError, ModelFormatError

SCHEMA = "deepfake-engine/classifier"
SCHEMA_VERSION = 1
SIDECAR_NAME = "classifier.json"
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
