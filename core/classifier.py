"""The exported classifier's contract: normalised frames of several videos -> per-frame logits.

``classifier.onnx`` takes ``frames`` (N, 3, 112, 112) float32, where N mixes the frames of any
number of videos, and returns per-frame ``logits`` (N, 2) for the ``original`` variant, or
per-frame ``features`` (N, 2048) that the ``sequence`` variant's ``head.onnx`` turns into per-step
logits (videos, steps, 2), videos padded at the end (the LSTM is causal, so steps before the
padding are exact). Both also offer ``fmap`` (N, 2048, 4, 4), the last conv feature map, for
heatmaps. :class:`ClassifierRunner` runs that contract over any runner with ONNX Runtime's
``run(output_names, feeds) -> list of arrays`` (an ``InferenceSession`` or any engine backend),
so the runtime, export parity, INT8 calibration and its accuracy check, explanations and
benchmarks all run the same code.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from core.compute import INLINE, ComputePool
from core.config import DEFAULT_CLASSIFIER_BATCH
from core.errors import InvalidInputError

FRAMES = "frames"
LOGITS = "logits"
FEATURES = "features"
FMAP = "fmap"


class Runner(Protocol):
    """Anything that runs a graph the way ONNX Runtime's ``InferenceSession.run`` does."""

    def run(self, output_names: Sequence[str] | None, feeds: dict[str, np.ndarray]) -> list: ...


@dataclass(frozen=True)
class ClassifierOutput:
    """Per-video results of one :meth:`ClassifierRunner.run` call."""

    logits: list[np.ndarray]  # one (n_i, 2) float32 array per video (per frame or per step)
    extra: dict[str, list[np.ndarray]] = field(default_factory=dict)  # output -> one per video


class ClassifierRunner:
    """Frames of several videos -> per-frame logits of each, in classifier batches.

    ``classifier`` runs ``classifier.onnx``; ``head`` runs ``head.onnx`` (sequence variant,
    else None). Frames of all videos are concatenated and cut into chunks of at most
    ``batch_size``, at least one per worker of ``pool`` (:class:`core.compute.ComputePool`,
    the CPU thread budget), which run at once; outputs are cut back per video. Every frame is
    classified on its own (the LSTM takes one step per frame), so the chunking does not change
    what a frame gets. Thread-safe as long as the runners are (ONNX Runtime sessions are).
    """

    def __init__(
        self,
        classifier: Runner,
        head: Runner | None = None,
        *,
        batch_size: int = DEFAULT_CLASSIFIER_BATCH,
        pool: ComputePool = INLINE,
    ) -> None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise InvalidInputError(f"batch_size must be an integer >= 1, got {batch_size!r}")
        self.classifier = classifier
        self.head = head
        self.batch_size = batch_size
        self.pool = pool

    @property
    def frame_output(self) -> str:
        """The classifier output the verdict is computed from: logits, or features (head)."""
        return LOGITS if self.head is None else FEATURES

    def run(
        self, videos: Sequence[np.ndarray], extra_outputs: Sequence[str] = ()
    ) -> ClassifierOutput:
        """``videos``: one (n_i, 3, H, W) float32 array of normalised frames per video, n_i >= 1.

        Returns each video's (n_i, 2) logits (per frame, or per step of the sequence head) and,
        for each name in ``extra_outputs`` (``fmap``, ``features``), that output per video.
        """
        if not videos:
            return ClassifierOutput([], {name: [] for name in extra_outputs})
        lengths = [len(v) for v in videos]
        if min(lengths) < 1:
            raise InvalidInputError("every video needs at least one frame to classify")
        frames = np.concatenate(videos) if len(videos) > 1 else videos[0]
        names = [self.frame_output, *(n for n in extra_outputs if n != self.frame_output)]
        chunks: dict[str, list[np.ndarray]] = {n: [] for n in names}

        def run_chunk(bounds: tuple[int, int]) -> list[np.ndarray]:
            feed = {FRAMES: np.ascontiguousarray(frames[bounds[0] : bounds[1]])}
            return [np.asarray(out) for out in self.classifier.run(names, feed)]

        for outs in self.pool.map(run_chunk, self.pool.chunks(len(frames), self.batch_size)):
            for name, out in zip(names, outs):
                chunks[name].append(out)
        bounds = np.cumsum([0, *lengths])

        def per_video(name: str) -> list[np.ndarray]:
            out = np.concatenate(chunks[name]) if len(chunks[name]) > 1 else chunks[name][0]
            return [out[bounds[i] : bounds[i + 1]] for i in range(len(videos))]

        main = per_video(self.frame_output)
        extra = {name: per_video(name) for name in extra_outputs}
        if self.head is not None:
            main = self._head(main)
        return ClassifierOutput(main, extra)

    def _head(self, features: list[np.ndarray]) -> list[np.ndarray]:
        lengths = [len(f) for f in features]
        padded = np.zeros((len(features), max(lengths), features[0].shape[1]), np.float32)
        for i, f in enumerate(features):
            padded[i, : len(f)] = f
        (steps,) = self.head.run([LOGITS], {FEATURES: padded})
        return [np.asarray(steps)[i, :n] for i, n in enumerate(lengths)]


def runner_outputs(runner: Any) -> tuple[str, ...]:
    """Output names of a runner (an ORT session or an engine backend)."""
    if hasattr(runner, "outputs") and isinstance(runner.outputs, (tuple, list)):
        return tuple(runner.outputs)
    return tuple(o.name for o in runner.get_outputs())
