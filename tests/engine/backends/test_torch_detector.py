"""The PyTorch SCRFD detector (onnx2torch conversion, decoding and NMS in torch) against the
ONNX Runtime detector, on CPU in the normal suite and on CUDA under the ``gpu`` marker."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import numpy as np
import pytest

from core.errors import BackendUnavailableError, InvalidInputError
from tests.engine.backends._assets import detector_frames, iou, missing_clips

IOU_MIN = 0.99
SCORE_TOL = 1e-3
KPS_TOL = 0.5  # pixels

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)]


@pytest.fixture(scope="module")
def det_path(shared_dir) -> Path:
    pytest.importorskip("torch")
    pytest.importorskip("torchvision")
    pytest.importorskip("onnx2torch")
    path = shared_dir / "models" / "det_500m.onnx"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    return path


@pytest.fixture(scope="module")
def reference(det_path):
    from preprocess.scrfd import SCRFDDetector

    return SCRFDDetector.from_file(det_path, batch_size=4)


@pytest.fixture(scope="module")
def frames(shared_dir, reference) -> list[tuple[str, np.ndarray]]:
    missing = missing_clips(shared_dir / "videos")
    if missing:
        pytest.skip(f"test clips {missing} not found in {shared_dir / 'videos'}")
    return detector_frames(shared_dir / "videos", reference)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """A private conversion cache for this module (DFE_CACHE)."""
    d = tmp_path_factory.mktemp("dfe_cache")
    d.chmod(0o700)
    old = os.environ.get("DFE_CACHE")
    os.environ["DFE_CACHE"] = str(d)
    yield d
    if old is None:
        os.environ.pop("DFE_CACHE", None)
    else:
        os.environ["DFE_CACHE"] = old


def _compare(expected, got, labels) -> dict[str, float]:
    """Same faces in the same order: IoU, score and keypoint differences; returns the worst."""
    worst = {"iou": 1.0, "score": 0.0, "kps": 0.0, "faces": 0}
    for label, a, b in zip(labels, expected, got, strict=True):
        assert len(a) == len(b), (label, [f.score for f in a], [f.score for f in b])
        for fa, fb in zip(a, b):
            worst["iou"] = min(worst["iou"], iou(fa.box, fb.box))
            worst["score"] = max(worst["score"], abs(fa.score - fb.score))
            worst["kps"] = max(worst["kps"], float(np.abs(np.subtract(fa.kps, fb.kps)).max()))
            worst["faces"] += 1
    return worst


@pytest.mark.parametrize("device", DEVICES)
def test_torch_detector_matches_onnxruntime_detector(det_path, reference, frames, cache, device):
    from engine.backends.torch_detector import TorchSCRFDDetector

    labels = [label for label, _ in frames]
    images = [f for _, f in frames]
    expected = reference.detect(images)
    # the frame without a face really has none, the mosaic has four
    assert [len(f) for f in expected] == [1, 1, 1, 1, 4, 0, 0]
    for batch in (len(images), 3):  # one batch of every size, and partial batches
        det = TorchSCRFDDetector(det_path, batch_size=batch, device=device)
        got = det.detect(images)
        worst = _compare(expected, got, labels)
        assert worst["iou"] >= IOU_MIN, worst
        assert worst["score"] <= SCORE_TOL, worst
        assert worst["kps"] <= KPS_TOL, worst
        assert all(
            [f.score for f in faces] == sorted((f.score for f in faces), reverse=True)
            for faces in got
        )
        # one line per case, collected by benchmarks/gpu_check.py
        record = {"what": "detector", "device": device, "batch": batch, "frames": len(images)}
        print(f"\nPARITY {json.dumps({**record, **worst})}")
    assert det.detect_one(images[0])[0].box == pytest.approx(got[0][0].box)


@pytest.mark.parametrize("device", DEVICES)
def test_torch_detector_channels_last_and_max_faces(det_path, reference, frames, cache, device):
    from engine.backends.torch_detector import TorchSCRFDDetector

    images = [f for _, f in frames]
    expected = [faces[:2] for faces in reference.detect(images)]
    det = TorchSCRFDDetector(det_path, batch_size=4, device=device, channels_last=True, max_faces=2)
    got = det.detect(images)
    worst = _compare(expected, got, [label for label, _ in frames])
    assert worst["iou"] >= IOU_MIN and worst["score"] <= SCORE_TOL, worst
    assert max(len(f) for f in got) == 2


def test_torch_detector_conversion_is_cached_and_checked(det_path, cache):
    import torch

    from core.hashing import sha256_file
    from engine.backends.torch_detector import CONVERT_TAG, convert_scrfd, converted_path

    _, first = convert_scrfd(det_path)
    target = converted_path(det_path, sha256_file(det_path))
    assert first["cache"] == str(target) and target.is_file()
    assert first["verified_max_abs_diff"] <= 1e-4
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    mtime = target.stat().st_mtime_ns
    _, again = convert_scrfd(det_path)
    assert again["cache"] == str(target) and target.stat().st_mtime_ns == mtime  # reused

    payload = torch.load(target, weights_only=False)
    payload["tag"] = CONVERT_TAG + "-old"
    torch.save(payload, target)
    _, fresh = convert_scrfd(det_path)  # a stale record is converted again
    assert fresh["tag"] == CONVERT_TAG
    assert torch.load(target, weights_only=False)["tag"] == CONVERT_TAG

    target.chmod(0o666)  # writable by others: never unpickled
    mtime = target.stat().st_mtime_ns
    _, fresh = convert_scrfd(det_path)
    assert target.stat().st_mtime_ns != mtime
    assert stat.S_IMODE(target.stat().st_mode) == 0o600


def test_torch_detector_rejects_bad_input(det_path, cache):
    import torch

    from engine.backends.torch_detector import TorchSCRFDDetector

    det = TorchSCRFDDetector(det_path, batch_size=2)
    frame = np.zeros((64, 64, 3), np.uint8)
    with pytest.raises(InvalidInputError, match="detect_one"):
        det.detect(frame)
    with pytest.raises(InvalidInputError, match="frame 1: expected dtype uint8"):
        det.detect([frame, frame.astype(np.float32)])
    with pytest.raises(InvalidInputError, match="HxWx3"):
        det.detect([np.zeros((64, 64), np.uint8)])
    assert det.detect([]) == []
    with pytest.raises(InvalidInputError, match="multiple of 32"):
        TorchSCRFDDetector(det_path, input_size=600)
    with pytest.raises(InvalidInputError, match="supported values are cpu, cuda"):
        TorchSCRFDDetector(det_path, device="meta")
    if not torch.cuda.is_available():
        with pytest.raises(BackendUnavailableError, match="CUDA is not available"):
            TorchSCRFDDetector(det_path, device="cuda")


def test_torch_detector_prepared_inputs_and_square_shape_match_onnxruntime(
    det_path, reference, frames, cache
):
    """The per-video input choice runs other input sizes through detect_prepared; both
    detectors give the same faces there too, and for the square input shape (exact mode's
    default) as for the frame-shaped one (fast mode's)."""
    from engine.backends.torch_detector import TorchSCRFDDetector
    from preprocess.scrfd import SCRFDDetector, letterbox

    det = TorchSCRFDDetector(det_path, device="cpu", batch_size=4, input_shape="frame")
    images = [f for _, f in frames[:3]]
    boxed = [letterbox(f, (960, 544)) for f in images]
    want = reference.detect_prepared([b[0] for b in boxed], [b[1] for b in boxed])
    got = det.detect_prepared([b[0] for b in boxed], [b[1] for b in boxed])
    worst = _compare(want, got, range(len(images)))
    assert worst["iou"] >= IOU_MIN and worst["score"] <= SCORE_TOL
    square = TorchSCRFDDetector(det_path, device="cpu", batch_size=4, input_shape="square")
    assert square.input_for((1080, 1920)) == (640, 640) and det.input_for((1080, 1920)) == (
        640,
        384,
    )
    ref_square = SCRFDDetector.from_file(det_path, batch_size=4, input_shape="square")
    worst = _compare(ref_square.detect(images), square.detect(images), range(len(images)))
    assert worst["iou"] >= IOU_MIN and worst["score"] <= SCORE_TOL
