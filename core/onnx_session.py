"""The one place ONNX Runtime sessions are created: options, thread count, provider checks.

ONNX Runtime quietly drops to CPU when a CUDA/TensorRT provider fails to load (Olive's
``ort_inference.py`` checks for the same reason), so after creating a session we check that the
first provider asked for is the one running, and raise instead of falling back.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from core.deps import require
from core.errors import BackendUnavailableError, InvalidInputError
from core.paths import env

#: The most threads or workers one thread option takes (``EngineConfig``'s thread fields and
#: ``$DFE_ORT_THREADS``): a value far above any machine's cores (a typo such as ``--threads
#: 100000``) is refused up front instead of making ONNX Runtime or FFmpeg start that many.
MAX_THREADS = 256

CPU = ("CPUExecutionProvider",)
Provider = str | tuple[str, dict[str, Any]]


def provider_name(provider: Provider) -> str:
    """The name of a provider given as a name or as ``(name, options)``."""
    return provider[0] if isinstance(provider, tuple) else provider


def default_threads(intra_op_threads: int = 0) -> int:
    """``intra_op_threads`` if set, else ``$DFE_ORT_THREADS``, else 0 (ONNX Runtime's choice).
    Raises :class:`InvalidInputError` when ``$DFE_ORT_THREADS`` is not an integer >= 0."""
    if intra_op_threads:
        return int(intra_op_threads)
    value = (env("DFE_ORT_THREADS") or "").strip()
    if not value:
        return 0
    if not value.isdigit():
        raise InvalidInputError(
            f"DFE_ORT_THREADS={value!r}: expected an integer >= 0 (ONNX Runtime threads per "
            "network call; 0 or unset: the engine's default); unset it or pass --threads"
        )
    if int(value) > MAX_THREADS:
        raise InvalidInputError(
            f"DFE_ORT_THREADS={value}: at most {MAX_THREADS} ONNX Runtime threads per network "
            "call; set it to the cores to use (or unset it)"
        )
    return int(value)


def session_options(intra_op_threads: int = 0) -> Any:
    """Options shared by every session of the engine (classifier, head, detector, checks).

    Spinning is off: the pipeline runs the detector and the classifier at the same time, and
    spinning worker threads of one session steal the cores the other needs (measured on 2
    cores: 1.75 videos/s without spinning, 1.30 with). ``DFE_ORT_SPINNING=1`` turns it back on.
    """
    ort = require("onnxruntime")
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    threads = default_threads(intra_op_threads)
    if threads:
        opts.intra_op_num_threads = threads
    spinning = "1" if env("DFE_ORT_SPINNING") == "1" else "0"
    opts.add_session_config_entry("session.intra_op.allow_spinning", spinning)
    # On x86-64 CPUs without VNNI (AVX2, AVX-512F) ONNX Runtime computes uint8 x int8 products
    # with VPMADDUBSW, whose int16 pair sums saturate: measured on an AVX2 EPYC, a tiny Q/DQ
    # convolution was off by 1.57 where the exact answer differs by 0.015. This option makes it
    # use uint8 x uint8 there when a weight is outside [-64, 63] (onnxruntime PR #12088,
    # "x86/64 U8S8 Gemm Precision Fix"); on CPUs with VNNI it changes nothing.
    opts.add_session_config_entry("session.x64quantprecision", "1")
    return opts


def check_available(providers: Sequence[Provider], *, what: str = "ONNX Runtime") -> None:
    """Raise :class:`BackendUnavailableError` when a provider is not in this onnxruntime build."""
    ort = require("onnxruntime")
    available = list(ort.get_available_providers())
    missing = [provider_name(p) for p in providers if provider_name(p) not in available]
    if missing:
        raise BackendUnavailableError(
            f"{what}: {', '.join(missing)} not available in onnxruntime {ort.__version__} "
            f"(available: {available}); install the `gpu` extra (onnxruntime-gpu) on a machine "
            "with an NVIDIA driver, or use a CPU backend"
        )


def create_session(
    model: str | os.PathLike[str] | bytes,
    providers: Sequence[Provider] = CPU,
    *,
    intra_op_threads: int = 0,
) -> Any:
    """An ``onnxruntime.InferenceSession`` over ``model`` (a path or serialized bytes) whose
    first provider is the one asked for, or :class:`BackendUnavailableError`."""
    ort = require("onnxruntime")
    check_available(providers)
    wanted = provider_name(providers[0])
    name = "the model" if isinstance(model, bytes) else Path(model).name
    source = model if isinstance(model, bytes) else str(model)
    try:
        sess = ort.InferenceSession(
            source, session_options(intra_op_threads), providers=list(providers)
        )
    except Exception as exc:  # ORT raises its own Fail/RuntimeException types
        raise BackendUnavailableError(
            f"ONNX Runtime could not load {name} with {wanted}: {exc}"
        ) from exc
    running = sess.get_providers()
    if not running or running[0] != wanted:
        raise BackendUnavailableError(
            f"asked for {wanted} but ONNX Runtime runs {name} on {running}: the provider "
            "failed to load (missing CUDA/cuDNN/TensorRT libraries?). Refusing to fall back "
            "silently; fix the GPU install or pick --backend ort for CPU."
        )
    return sess
