"""Ray, pyarrow and matplotlib stay optional: nothing imports them until used, and a missing one
is an error naming the extra."""

from __future__ import annotations

import subprocess
import sys

import pytest

from core.errors import MissingDependencyError


def test_distributed_and_eval_modules_import_nothing_optional():
    code = (
        "import sys, engine.distributed, engine.evaluation, engine.commands.score, "
        "engine.commands.eval\n"
        "print(','.join(m for m in ('ray', 'pyarrow', 'matplotlib', 'pandas') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_build_dataset_without_ray_names_the_extra(monkeypatch):
    from engine import distributed

    monkeypatch.setitem(sys.modules, "ray", None)  # makes `import ray` fail
    with pytest.raises(MissingDependencyError, match=r"deepfake-engine\[ray\]") as info:
        distributed.build_dataset(["a.mp4"], "model")
    assert isinstance(info.value, ImportError)


def test_plot_without_matplotlib_names_the_extra(monkeypatch, tmp_path):
    from engine import evaluation

    monkeypatch.setitem(sys.modules, "matplotlib", None)
    metrics = evaluation.evaluate([("a", "FAKE")], [])
    with pytest.raises(MissingDependencyError, match=r"deepfake-engine\[eval\]"):
        evaluation.plot(metrics, tmp_path / "x.png")


def test_unsupported_output_format_lists_supported_values():
    from engine import distributed

    with pytest.raises(ValueError, match=r"\.parquet, \.jsonl"):
        distributed.output_format("scores.csv")
