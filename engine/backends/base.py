"""What every backend shares: the runner base class (validate, then run), the factory
protocol, and the detector made of the SCRFD maths over a runner.

A backend gives a runner for any graph (Polygraphy's loader/runner split): the graph is loaded
once below the backends (the classifier's files; the detector's by
:func:`preprocess.scrfd_graph.load_detector_graph`), a factory turns it into a
:class:`GraphBackend`, and the detector is :class:`preprocess.scrfd.SCRFDDetector` over that
runner (:func:`scrfd_over`).
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

from core.compute import INLINE, ComputePool
from core.errors import InvalidInputError

if TYPE_CHECKING:
    from preprocess.faces import Detector
    from preprocess.scrfd import DetectorConfig, SCRFDDetector
    from preprocess.scrfd_graph import DetectorGraph


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
        wherever a session is expected (:class:`core.classifier.ClassifierRunner`)."""
        names = tuple(output_names) if output_names else self.outputs
        out = self.infer(feeds, names)
        return [out[n] for n in names]

    @abstractmethod
    def infer_impl(
        self, feeds: dict[str, np.ndarray], outputs: Sequence[str]
    ) -> dict[str, np.ndarray]: ...

    def describe(self) -> dict[str, object]:
        return {"backend": self.name}


@dataclass(frozen=True)
class DetectorOptions:
    """What :func:`engine.api.open_detector` asks a backend's detector for: the SCRFD options
    (``config``), the CPU threads of one detector call (``intra_op_threads``, ONNX Runtime; 0:
    its default), the pool that runs the batches of one call at once, and the exported model
    whose ``engines/`` folder caches a TensorRT engine (``model_dir``; None: the engine cache)."""

    config: DetectorConfig
    intra_op_threads: int = 0
    pool: ComputePool = INLINE
    model_dir: Path | None = None


class BackendFactory(Protocol):
    """Creates the runners of one backend: those of an exported model's graphs, in the
    factory's precision, and the face detector on the same device."""

    name: str
    precision: str

    def __call__(self, graph: str, onnx_path: Path, *, spec: object) -> GraphBackend:
        """The runner of model graph ``graph`` (``classifier``, ``head``) at ``onnx_path``."""
        ...

    def detector(self, graph: DetectorGraph, options: DetectorOptions) -> Detector:
        """The face detector of the loaded SCRFD ``graph`` on this backend's device."""
        ...


def scrfd_over(
    runner: GraphBackend, graph: DetectorGraph, options: DetectorOptions
) -> SCRFDDetector:
    """The SCRFD detector over ``runner`` (a runner of ``graph``): the input sizes it takes
    are the runner's (a TensorRT engine's profile fixes one), where it runs is its describe()."""
    from preprocess.scrfd import SCRFDDetector

    where = runner.describe()
    providers = where.get("providers") or [str(where.get("backend", runner.name))]
    return SCRFDDetector(
        graph,
        runner,
        **dataclasses.asdict(options.config),
        input_dims=runner.inputs[graph.input_name].shape,
        providers=[str(p) for p in providers],  # type: ignore[union-attr]
        pool=options.pool,
    )
