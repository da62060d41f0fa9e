"""The tiny base class every backend shares: validate, then run."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from engine.core.errors import InvalidInputError


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: np.dtype
    shape: tuple[int | None, ...]  # None: dynamic axis


class GraphBackend(ABC):
    """Runs one exported graph. Subclasses implement :meth:`infer_impl`."""

    name: str = "base"

    def __init__(self, inputs: Sequence[TensorSpec], outputs: Sequence[str]) -> None:
        self.inputs = {t.name: t for t in inputs}
        self.outputs = tuple(outputs)

    def check_inputs(self, feeds: dict[str, np.ndarray]) -> None:
        missing = set(self.inputs) - set(feeds)
        extra = set(feeds) - set(self.inputs)
        if missing or extra:
            raise InvalidInputError(
                f"{self.name}: inputs {sorted(feeds)} do not match the graph's "
                f"{sorted(self.inputs)}"
            )
        for name, spec in self.inputs.items():
            arr = feeds[name]
            if arr.dtype != spec.dtype:
                raise InvalidInputError(
                    f"{self.name}: input {name!r} has dtype {arr.dtype}, expected {spec.dtype}"
                )
            if arr.ndim != len(spec.shape) or any(
                want is not None and got != want for got, want in zip(arr.shape, spec.shape)
            ):
                want = ["?" if d is None else d for d in spec.shape]
                raise InvalidInputError(
                    f"{self.name}: input {name!r} has shape {list(arr.shape)}, expected {want}"
                )
            if arr.shape[0] == 0:
                raise InvalidInputError(f"{self.name}: input {name!r} is empty")

    def infer(
        self, feeds: dict[str, np.ndarray], outputs: Sequence[str] | None = None
    ) -> dict[str, np.ndarray]:
        self.check_inputs(feeds)
        wanted = tuple(outputs) if outputs is not None else self.outputs
        unknown = set(wanted) - set(self.outputs)
        if unknown:
            raise InvalidInputError(
                f"{self.name}: unknown outputs {sorted(unknown)}; the graph has {self.outputs}"
            )
        return self.infer_impl(feeds, wanted)

    def run(
        self, output_names: Sequence[str] | None, feeds: dict[str, np.ndarray]
    ) -> list[np.ndarray]:
        """ONNX Runtime's calling convention (``InferenceSession.run``), so a backend can stand
        wherever a session is expected (:class:`engine.core.classifier.ClassifierRunner`)."""
        names = tuple(output_names) if output_names else self.outputs
        out = self.infer(feeds, names)
        return [out[n] for n in names]

    @abstractmethod
    def infer_impl(
        self, feeds: dict[str, np.ndarray], outputs: Sequence[str]
    ) -> dict[str, np.ndarray]: ...

    def describe(self) -> dict[str, object]:
        return {"backend": self.name}


class BackendFactory(Protocol):
    """Creates the runner of one graph of an exported model, in the factory's precision."""

    name: str
    precision: str

    def __call__(self, graph: str, onnx_path: Path, *, spec: object) -> GraphBackend: ...
