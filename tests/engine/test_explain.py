"""``dfe explain``: the original's heatmap maths, the graph's ``fmap`` output, the files."""

from __future__ import annotations

import json

import numpy as np

from engine.explain import cam_maps, explain, heat_overlay, write_explanation


def test_cam_maps_equals_the_originals_reshape_matmul():
    rng = np.random.default_rng(0)
    fmap, w = rng.normal(size=(3, 2048, 4, 4)), rng.normal(size=(2, 2048))
    got = cam_maps(fmap, w, 1)
    for i in range(3):  # plot_heat_map: fmap[i].reshape(2048, 16).T @ linear1.weight[idx]
        want = (fmap[i].reshape(2048, 16).T @ w[1]).reshape(4, 4)
        np.testing.assert_allclose(got[i], want, rtol=1e-4, atol=1e-3)


def test_heat_overlay_is_a_bgr_tile_even_for_a_flat_map():
    crop = np.full((112, 112, 3), 128, np.uint8)
    assert heat_overlay(crop, np.zeros((4, 4)), size=64).shape == (64, 64, 3)


def test_explain_matches_predict_and_writes_a_contact_sheet(tiny_engine, shared_dir, tmp_path):
    engine = tiny_engine
    video = shared_dir / "videos" / "pair480p_fake.mp4"
    expl = explain(engine, video, seq_len=5)
    direct = engine.predict(video, seq_len=5)
    assert abs(expl.prediction.p_fake - direct.p_fake) < 1e-5
    assert expl.cams.shape == (5, 4, 4) and len(expl.crops) == 5
    files = write_explanation(expl, tmp_path / "out")
    assert len(files["overlays"]) == 5 and len(files["frames"]) == 5
    for name in [files["contact_sheet"], files["scores"], *files["overlays"]]:
        assert (tmp_path / "out" / name).read_bytes()[:4] == b"\x89PNG"
    doc = json.loads((tmp_path / "out" / "explain.json").read_text())
    assert doc["record"]["label"] == direct.label


def test_inspect_keeps_crops_frames_and_extra_outputs(tiny_engine, shared_dir):
    import pytest

    from core.errors import ModelFormatError
    from tests.tiny_model import CHANNELS

    engine = tiny_engine
    video = shared_dir / "videos" / "pair480p_real.mp4"
    stages: list[str] = []
    seen = engine.inspect(
        video, seq_len=4, outputs=("fmap", "features"), keep_frames=True, progress=stages.append
    )
    direct = engine.predict(video, seq_len=4)
    assert seen.prediction.p_fake == pytest.approx(direct.p_fake, abs=1e-6)
    assert seen.prediction.boxes == direct.boxes
    assert stages == ["decoding", "detecting faces", "classifying"]
    assert [c.shape for c in seen.crops] == [(112, 112, 3)] * 4
    assert [f.shape for f in seen.frames] == [(480, 854, 3)] * 4
    assert seen.outputs["fmap"].shape == (4, CHANNELS, 4, 4)
    # the pooled feature map is the features output
    np.testing.assert_allclose(
        seen.outputs["fmap"].mean(axis=(2, 3)), seen.outputs["features"], rtol=1e-4, atol=1e-5
    )
    assert engine.inspect(video, seq_len=2).frames == [None, None]
    with pytest.raises(ModelFormatError, match="has no 'saliency' output"):
        engine.inspect(video, seq_len=2, outputs=("saliency",))
