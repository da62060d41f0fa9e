"""Done-when of the runtime issue: `dfe predict` on ONNX Runtime CPU agrees with a straightforward
PyTorch pipeline (InsightFace's SCRFD frame by frame, the crop convention, torchvision's
transforms, the eager original model) on every shared video, for N = 20 and 60."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch", reason="the independent reference pipeline runs on torch")

from tests.reference.original_model import (
    face_crops,
    insightface_detector,
    read_frames,
    video_probs,
)


@pytest.fixture(scope="module")
def reference_detector(shared_dir):
    return insightface_detector(shared_dir / "models" / "det_500m.onnx")


@pytest.fixture(scope="module")
def reference_crops(video_paths, reference_detector):
    """The reference pipeline's crops of the first 60 frames of every clip (N=20 uses the first
    20 of them: the same frames, detected once)."""
    return {
        path.name: face_crops(read_frames(path, 60), reference_detector) for path in video_paths
    }


@pytest.mark.parametrize("n", [20, 60])
def test_predict_cli_matches_torch_reference_pipeline(
    n, exported_model, original_ckpt, video_paths, shared_dir, reference_crops, tmp_path
):
    from engine.cli import main

    out = tmp_path / "records.jsonl"
    code = main(
        ["predict", str(shared_dir / "videos"), "--model", str(exported_model), "--seq-len", str(n),
         "--backend", "ort", "--models", str(shared_dir / "models"), "--no-download",
         # the test checkpoint's sidecar defaults to dlib (a published name)
         "--crop-style", "scrfd", "--out", str(out), "--no-progress"]
    )  # fmt: skip
    assert code == 0
    records = {Path(r["video"]).name: r for r in map(json.loads, out.read_text().splitlines())}
    assert sorted(records) == sorted(p.name for p in video_paths)
    _, model = original_ckpt
    ref_p_fake, deltas = [], {}
    for path in video_paths:
        crops = reference_crops[path.name][:n]
        p_fake = float(video_probs(model, crops, "mean")[0])
        ref_p_fake.append(p_fake)
        rec = records[path.name]
        assert (
            rec["status"] == "ok" and rec["frames"] == n and rec["frame_indices"] == list(range(n))
        )
        deltas[path.name] = abs(rec["p_fake"] - p_fake)
        # exact mode: InsightFace's boxes on every frame (tests/engine/test_exact_boxes.py), so
        # only float noise is left (measured: max 7.4e-07 at N=20, 3.1e-07 at N=60; it was
        # 1.8e-04 at N=60 with the frame-shaped detector input, one-pixel boxes apart)
        assert deltas[path.name] <= 1e-5, (path.name, rec["p_fake"], p_fake)
        if abs(p_fake - 0.5) > 0.02:
            assert rec["label"] == ("FAKE" if p_fake > 0.5 else "REAL"), path.name
        assert rec["confidence"] == pytest.approx(100 * max(rec["p_fake"], 1 - rec["p_fake"]))
    # the comparison is not blind: the reference's outputs are spread out
    assert np.ptp(ref_p_fake) > 0.1, ref_p_fake
    print(f"predict parity N={n}: max |delta p_fake| {max(deltas.values()):.2e} over {deltas}")
