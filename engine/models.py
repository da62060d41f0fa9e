"""Find exported models: one model directory, or a directory of models for several N.

Like the original, which picked ``model_<acc>_acc_<N>_frames_<data>.pt`` by the sequence length N,
``--model DIR`` may hold one exported model (``DIR/classifier.json``) or several
(``DIR/*/classifier.json``); then the one trained for the requested N is used. Two models for the
same N are an error naming both (the original picked one by comparing accuracies as strings):
the user picks one with ``--model``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from core.errors import ArtifactNotFoundError, InvalidInputError
from core.sidecar import SIDECAR_NAME, ModelSpec, load_sidecar, model_path_advice


@dataclass(frozen=True)
class ModelCatalog:
    root: Path
    specs: tuple[ModelSpec, ...]

    @property
    def single(self) -> bool:
        return len(self.specs) == 1

    def seq_lens(self) -> list[int]:
        return sorted({s.seq_len for s in self.specs if s.seq_len is not None})

    def pick(self, seq_len: int | None) -> ModelSpec:
        """The model for ``seq_len`` frames. A single model serves any N (the user chose it);
        among several, the one trained for N is required."""
        if self.single:
            return self.specs[0]
        if seq_len is None:
            raise InvalidInputError(
                f"{self.root} holds models for N = {self.seq_lens()}; pass --seq-len to pick one"
            )
        matches = [s for s in self.specs if s.seq_len == seq_len]
        if not matches:
            raise InvalidInputError(
                f"{self.root} has no model trained for {seq_len} frames; available sequence "
                f"lengths: {self.seq_lens()}. Pass one of them with --seq-len, or export a "
                f"checkpoint for N = {seq_len} into a subdirectory."
            )
        if len(matches) > 1:
            raise InvalidInputError(
                f"{self.root} holds {len(matches)} models for N = {seq_len}: "
                + ", ".join(str(s.directory) for s in matches)
                + ". Which one scores must not depend on folder names: pass the one you want "
                "with --model, or move the others out of this folder"
            )
        return matches[0]


def load_catalog(model: str | Path) -> ModelCatalog:
    """The model(s) at ``model``: one model folder (or its ``classifier.json``), or a folder
    of them. Raises :class:`ArtifactNotFoundError` when it holds none, naming the folder meant
    (a file inside a model folder, a typo of a sibling's name) or how to export one."""
    root = Path(model)
    if not root.exists():
        raise ArtifactNotFoundError(
            f"model directory {root} does not exist; {model_path_advice(root)}"
        )
    if (root / SIDECAR_NAME).is_file() or root.suffix == ".json":
        return ModelCatalog(root, (load_sidecar(root),))
    if not root.is_dir():  # a file of the model (classifier.onnx), a checkpoint, ...
        raise ArtifactNotFoundError(model_path_advice(root))
    subdirs = sorted(p.parent for p in root.glob(f"*/{SIDECAR_NAME}"))
    if not subdirs:
        raise ArtifactNotFoundError(
            f"{root} holds no exported model ({SIDECAR_NAME} in it or in a subdirectory); "
            f"export one with: dfe export CHECKPOINT -o {root}"
        )
    return ModelCatalog(root, tuple(load_sidecar(d) for d in subdirs))
