"""``engine.provenance.library_versions``: the one collector of library versions that
exports, training runs, INT8 builds and benchmark machines record."""

from __future__ import annotations

import platform
import sys

import numpy as np

from core import __version__
from engine.provenance import library_versions


def test_library_versions_in_the_order_given_leaving_out_what_has_none(monkeypatch):
    monkeypatch.setitem(sys.modules, "not_installed_here", None)  # its import fails
    out = library_versions(("numpy", "not_installed_here", "os"))  # os has no __version__
    assert out == {"deepfake-engine": __version__, "python": platform.python_version(),
                   "numpy": np.__version__}  # fmt: skip
    assert list(out) == ["deepfake-engine", "python", "numpy"]


def test_library_versions_without_the_engine_or_python():
    assert library_versions(("numpy",), engine=False, python=False) == {"numpy": np.__version__}
    assert list(library_versions((), python=False)) == ["deepfake-engine"]
