"""Directories and environment variables: one variable per directory, every variable the code
reads documented (in core.paths and in docs/layout.md, the table the README links to)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from core import paths

REPO = Path(__file__).resolve().parents[2]


def test_every_environment_variable_read_is_documented():
    pattern = re.compile(r"""["'](DFE_[A-Z_]+)["']""")
    found = set()
    for pkg in ("core", "engine", "preprocess", "weights", "network", "export", "benchmarks"):
        for path in (REPO / pkg).rglob("*.py"):
            found |= set(pattern.findall(path.read_text()))
    assert found <= set(paths.ENVIRONMENT), found - set(paths.ENVIRONMENT)
    doc = (REPO / "docs" / "layout.md").read_text()
    missing = [name for name in paths.ENVIRONMENT if f"| `{name}` |" not in doc]
    assert not missing, f"docs/layout.md's table of environment variables lacks {missing}"


def test_rewrites_go_to_the_cache_never_to_the_models_directory(monkeypatch, tmp_path):
    """Derived graphs have their own directory (and variable): the models directory holds the
    user's files, which the engine never writes next to."""
    from preprocess.scrfd_graph import cache_dir
    from weights import models_dir

    monkeypatch.setenv("DFE_MODELS", str(tmp_path / "m"))
    monkeypatch.setenv("DFE_CACHE", str(tmp_path / "c"))
    assert models_dir() == tmp_path / "m"
    assert cache_dir() == paths.cache_dir() == tmp_path / "c"
    assert models_dir(tmp_path / "x") == tmp_path / "x"
    monkeypatch.delenv("DFE_CACHE")
    assert cache_dir() == Path("~/.cache/deepfake-engine/graphs").expanduser()


def test_undocumented_variable_is_refused():
    with pytest.raises(KeyError, match="not a documented"):
        paths.env("DFE_NOPE")


def test_int8_default_calibration_set_outside_a_checkout_says_what_to_pass(monkeypatch):
    from core.errors import ArtifactNotFoundError
    from engine.optimize import calibration

    monkeypatch.delenv("DFE_SHARED", raising=False)
    monkeypatch.setattr(calibration, "in_checkout", lambda: False)
    with pytest.raises(ArtifactNotFoundError, match=r"--calib VIDEO"):
        calibration.default_calibration_videos()
