"""The runtime imports without the heavy stack; the CLI help works without torch."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("torch", "torchvision", "tensorrt", "onnxruntime", "insightface")


def test_import_engine_and_preprocess_pulls_in_no_heavy_library():
    code = (
        "import sys, engine, preprocess, engine.cli, engine.sidecar, engine.reduce, "
        "preprocess.crop, weights\n"
        f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_missing_dependency_names_the_extra(monkeypatch):
    import pytest

    from engine._deps import require
    from engine.errors import MissingDependencyError

    monkeypatch.setitem(sys.modules, "tensorrt", None)  # makes `import tensorrt` fail
    with pytest.raises(MissingDependencyError, match=r"deepfake-engine\[gpu\]") as info:
        require("tensorrt")
    assert isinstance(info.value, ImportError)
