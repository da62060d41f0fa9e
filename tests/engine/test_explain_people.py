"""``dfe explain`` per person: every scored face track gets its crops and heatmaps."""

from __future__ import annotations

import json

import pytest

from engine.api import Engine
from engine.explain import explain, write_explanation
from tests.preprocess import _face_videos as fv


@pytest.mark.slow
def test_explain_writes_every_scored_person(shared_dir, tiny_model, models_dir, tmp_path):
    video = fv.side_by_side(tmp_path / "sbs.mp4", shared_dir, seconds=0.5)
    engine = Engine.load(tiny_model, backend="ort", models_dir=models_dir, faces="all")
    expl = explain(engine, video, seq_len=12)
    assert len(expl.people) == 2 and {p.track for p in expl.people} == {0, 1}
    deciding = max(expl.people, key=lambda p: p.p_fake)
    assert expl.prediction.p_fake == deciding.p_fake
    files = write_explanation(expl, tmp_path / "out")
    assert len(files["people"]) == 2
    for k, person in enumerate(files["people"]):
        assert len(person["crops"]) == len(person["overlays"]) == len(person["frame_indices"])
        for name in person["crops"] + person["overlays"]:
            assert name.startswith(f"p{k}_") and (tmp_path / "out" / name).stat().st_size > 100
    doc = json.loads((tmp_path / "out" / "explain.json").read_text())
    assert doc["record"]["people"] == 2 and len(doc["record"]["tracks"]) == 2
