"""ONNX Runtime sessions of the tests' own references: ONNX Runtime's defaults (and InsightFace's
for its SCRFD), but on ``$DFE_ORT_THREADS`` threads and without spinning. Under pytest-xdist each
worker gets one thread (tests/conftest.py); ONNX Runtime's default pool, a spinning thread per
core, would take the other worker's core. No torch here: the detector tests run without it."""

from __future__ import annotations

from pathlib import Path


def plain_session(model: str | Path | bytes):
    """A CPU session of ``model`` (a path or serialized bytes) with ONNX Runtime's default
    options but the thread count and spinning above: the tests' independent runs of a graph."""
    import onnxruntime as ort

    from core.onnx_session import default_threads

    options = ort.SessionOptions()
    threads = default_threads()
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    source = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


def insightface_session(model_path: Path):
    """The ONNX Runtime session InsightFace's SCRFD makes (the model file, the CPU provider),
    through :func:`plain_session`."""
    return plain_session(model_path)
