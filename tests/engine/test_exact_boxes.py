"""Exact mode is exact on every frame (issue 33): the crop box of every frame a record uses is
the one InsightFace's own SCRFD gives for that frame at ``input_size=(640, 640)``, rounded as the
reference pipeline rounds it, for the first 100 frames (what N = 20, 60 and 100 read) and for
frames spread over each whole video, on every shared clip."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

pytest.importorskip("insightface", reason="InsightFace is the reference detector")


def _reference_boxes(path, indices, detector) -> dict[int, list[int] | None]:
    """InsightFace's top face per wanted frame, rounded and clipped as the reference crops
    (tests/reference/original_model.face_crops): None where it finds no face."""
    wanted = set(indices)
    out: dict[int, list[int] | None] = {}
    cap = cv2.VideoCapture(str(path))
    for i in range(max(wanted) + 1):
        if i not in wanted:
            if not cap.grab():  # decoded, not converted to BGR
                break
            continue
        ok, frame = cap.read()
        if not ok:
            break
        dets, _ = detector.detect(frame, input_size=(640, 640))
        if len(dets):
            h, w = frame.shape[:2]
            x1, y1, x2, y2 = (int(np.floor(v + 0.5)) for v in dets[0][:4])
            out[i] = [int(np.clip(x1, 0, w)), int(np.clip(y1, 0, h)),
                      int(np.clip(x2, 0, w)), int(np.clip(y2, 0, h))]  # fmt: skip
        else:
            out[i] = None
    cap.release()
    return out


@pytest.mark.slow
def test_exact_mode_gives_insightface_boxes_on_every_frame_used(
    tiny_engine, video_paths, shared_dir
):
    from tests.reference.original_model import insightface_detector

    reference = insightface_detector(shared_dir / "models" / "det_500m.onnx")
    checked = 0
    for path in video_paths:
        first = tiny_engine.predict(str(path), seq_len=100)
        spread = tiny_engine.predict(str(path), seq_len=20, sampling="uniform")
        assert first.frame_indices == list(range(100))
        want = _reference_boxes(path, [*first.frame_indices, *spread.frame_indices], reference)
        for rec in (first, spread):
            assert rec.detector_input is None or rec.detector_input["default"], rec.detector_input
            for idx, box in zip(rec.frame_indices, rec.boxes, strict=True):
                assert box == want[idx], (path.name, rec.sampling, idx, box, want[idx])
                checked += 1
        if path.name == "dfdc_like_fake.mp4":  # the clip whose frames 38 and 52 moved at N=60
            for n in (20, 60):  # the first frames: the same boxes as N = 100's
                assert tiny_engine.predict(str(path), seq_len=n).boxes == first.boxes[:n]
    assert checked == len(video_paths) * 120
