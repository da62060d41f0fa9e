"""The build and TensorRT modules import without TensorRT, CUDA, ONNX Runtime or torch."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("torch", "tensorrt", "onnxruntime", "cuda")


def test_build_and_tensorrt_modules_import_nothing_heavy():
    code = (
        "import sys, engine.backends.engine_cache, engine.backends.trt_build, "
        "engine.optimize.quantize, engine.optimize.calibration, engine.optimize.int8_search, "
        "engine.optimize.qdq_debug, engine.backends.trt_backend, "
        "engine.commands.build\n"
        f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
