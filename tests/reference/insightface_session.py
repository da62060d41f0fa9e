"""InsightFace's SCRFD session for the reference detectors of the tests (no torch here: the
detector tests run without it)."""

from __future__ import annotations

from pathlib import Path


def insightface_session(model_path: Path):
    """The ONNX Runtime session InsightFace's SCRFD makes (the model file, the CPU provider),
    on ``$DFE_ORT_THREADS`` threads when that is set: one per pytest-xdist worker
    (tests/conftest.py), where ONNX Runtime's default pool (a spinning thread per core) would
    take the other worker's core."""
    import onnxruntime as ort

    from core.onnx_session import default_threads

    options = ort.SessionOptions()
    threads = default_threads()
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    return ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
