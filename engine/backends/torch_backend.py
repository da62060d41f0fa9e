"""PyTorch: the reference backend (the `export` extra), on CPU, or on CUDA.

It runs the same graphs as the ONNX export (per-frame logits, or features + sequence head), built
from the training checkpoint the model was exported from, in exactly the precision asked for
(CPU: fp32; CUDA: fp32, fp16 or bf16), never another.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from engine.backends.base import GraphBackend, TensorSpec
from engine.core.deps import require
from engine.core.errors import (
    ArtifactNotFoundError,
    BackendUnavailableError,
    InvalidInputError,
    ModelFormatError,
)

log = logging.getLogger(__name__)


def find_checkpoint(spec: Any, explicit: str | Path | None = None) -> Path:
    """The checkpoint a model directory was exported from: ``explicit``, next to the sidecar,
    or where it was at export time; its sha256 must match the sidecar's."""
    from engine.core.hashing import sha256_file

    info = spec.raw.get("checkpoint", {})
    candidates = [Path(explicit)] if explicit else []
    candidates += [spec.directory / info.get("file", ""), Path(info.get("path", ""))]
    for c in candidates:
        if c.is_file():
            if info.get("sha256") and sha256_file(c) != info["sha256"]:
                raise ModelFormatError(
                    f"{c} is not the checkpoint {spec.directory} was exported from (sha256 "
                    f"differs from the sidecar's); pass the right file or re-export"
                )
            return c
    raise ArtifactNotFoundError(
        f"the torch backend needs the training checkpoint {info.get('file')!r} of "
        f"{spec.directory}; put it next to classifier.json or pass checkpoint=PATH"
    )


_DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}


class TorchBackend(GraphBackend):
    """One graph as a PyTorch module on ``device``, computing in ``precision``."""

    def __init__(self, name: str, module: Any, device: str, precision: str, graph: str) -> None:
        self.name = name
        self.module, self.device, self.precision = module, device, precision
        if graph == "head":
            inputs = [TensorSpec("features", np.dtype(np.float32), (None, None, 2048))]
            outputs = ["logits"]
        else:
            inputs = [TensorSpec("frames", np.dtype(np.float32), (None, 3, 112, 112))]
            outputs = (
                ["logits", "features", "fmap"]
                if type(module).__name__ == "FrameClassifier"
                else ["features", "fmap"]
            )
        super().__init__(inputs, outputs)

    def infer_impl(
        self, feeds: dict[str, np.ndarray], outputs: Sequence[str]
    ) -> dict[str, np.ndarray]:
        torch = require("torch")
        (x,) = feeds.values()
        t = torch.from_numpy(x).to(self.device).to(getattr(torch, _DTYPES[self.precision]))
        with torch.inference_mode():
            res = self.module(t)
        res = res if isinstance(res, tuple) else (res,)
        named = {n: r.float().cpu().numpy() for n, r in zip(self.outputs, res)}
        return {n: named[n] for n in outputs}

    def describe(self) -> dict[str, object]:
        return {"backend": self.name, "device": self.device, "precision": self.precision}


class _TorchFactory:
    def __init__(
        self,
        name: str,
        device: str,
        precision: str,
        precisions: tuple[str, ...],
        checkpoint: Any = None,
    ) -> None:
        if precision not in precisions:
            raise InvalidInputError(
                f"backend {name!r} does not run precision {precision}; it runs "
                f"{', '.join(precisions)}"
            )
        torch = require("torch", purpose="the PyTorch backend")
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise BackendUnavailableError(
                f"{name}: CUDA is not available to torch {torch.__version__} (no NVIDIA GPU or "
                "a CPU-only build); use --backend torch for CPU"
            )
        self.name, self.device, self.precision = name, device, precision
        self.checkpoint = checkpoint
        self._model: Any = None

    def _reference(self, spec: Any) -> Any:
        if self._model is None:
            from export.checkpoint import build_model, load_checkpoint

            ckpt = load_checkpoint(find_checkpoint(spec, self.checkpoint), variant=spec.variant)
            self._model = build_model(ckpt)
        return self._model

    def __call__(self, graph: str, onnx_path: Path, *, spec: Any = None) -> TorchBackend:
        from export.model import FeatureExtractor, FrameClassifier, SequenceHead

        model = self._reference(spec)
        if graph == "head":
            module = SequenceHead(model)
        elif spec.variant == "original":
            module = FrameClassifier(model)
        else:
            module = FeatureExtractor(model)
        torch = require("torch")
        dtype = getattr(torch, _DTYPES[self.precision])
        module = module.eval().to(self.device).to(dtype)
        return TorchBackend(self.name, module, self.device, self.precision, graph)


def cpu_factory(*, precision: str = "fp32", checkpoint: Any = None, **_: Any) -> _TorchFactory:
    """PyTorch on CPU, fp32 (the reference)."""
    return _TorchFactory("torch", "cpu", precision, ("fp32",), checkpoint)


def cuda_factory(
    *, precision: str = "fp32", checkpoint: Any = None, device_id: int = 0, **_: Any
) -> _TorchFactory:
    """PyTorch on an NVIDIA GPU: fp32, fp16 or bf16, as asked."""
    return _TorchFactory(
        "torch-cuda", f"cuda:{int(device_id)}", precision, ("fp32", "fp16", "bf16"), checkpoint
    )
