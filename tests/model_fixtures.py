"""Session fixtures: checkpoints made by the independent reference implementation on real face
crops, and their export. torch is imported inside the fixtures, so the suite collects without
it; tests using these fixtures are marked ``model`` (see ``conftest.py``) and skipped then."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

# (video, N): the parity videos, of the lengths the issue names, from different clips
PARITY_VIDEOS = [
    ("pair480p_real.mp4", 1),
    ("dfdc_like_fake.mp4", 20),
    ("pair480p_fake.mp4", 60),
    ("dfdc_abqwwspghj_fake.mp4", 100),
]


@dataclass
class RealCrops:
    calib: Any  # torch.Tensor: crops to re-estimate BatchNorm on (not used for parity)
    videos: list[Any]  # one (N, 3, 112, 112) torch.Tensor per parity video


@pytest.fixture(scope="session")
def real_crops(shared_dir) -> RealCrops:
    torch = pytest.importorskip("torch")
    from tests.reference.original_model import face_crops, insightface_detector, read_frames

    det = insightface_detector(shared_dir / "models" / "det_500m.onnx")
    videos = [
        face_crops(read_frames(shared_dir / "videos" / name, n), det) for name, n in PARITY_VIDEOS
    ]
    calib = []
    for path in sorted((shared_dir / "videos").glob("*.mp4")):
        frames = read_frames(path, 160)[100:160:8]  # frames the parity videos do not use
        calib.append(face_crops(frames, det))
    return RealCrops(torch.cat(calib), videos)


def _make(model_cls, crops: Any, seed: int) -> Any:
    import torch

    from tests.reference.original_model import spread_out

    torch.manual_seed(seed)
    model = model_cls()
    spread_out(model, crops)
    return model.eval()


@pytest.fixture(scope="session")
def original_ckpt(real_crops, tmp_path_factory) -> tuple[Path, Any]:
    import torch

    from tests.reference.original_model import OriginalModel

    model = _make(OriginalModel, real_crops.calib, seed=1234)
    path = tmp_path_factory.mktemp("ckpt") / "model_87_acc_20_frames_final_data.pt"
    torch.save(model.state_dict(), path)
    return path, model


@pytest.fixture(scope="session")
def sequence_ckpt(real_crops, tmp_path_factory) -> tuple[Path, Any]:
    import torch

    from tests.reference.original_model import RetrainedSequenceModel

    model = _make(RetrainedSequenceModel, real_crops.calib, seed=99)
    path = tmp_path_factory.mktemp("ckpt_seq") / "retrained_seq.pt"
    torch.save(model.state_dict(), path)
    return path, model


@pytest.fixture(scope="session")
def exported_model(original_ckpt, real_crops, tmp_path_factory) -> Path:
    """The independent test checkpoint exported (reduce=mean) once for the whole session."""
    from export.onnx_export import export_checkpoint

    out = tmp_path_factory.mktemp("model_n20")
    export_checkpoint(original_ckpt[0], out, parity_videos=[v.numpy() for v in real_crops.videos])
    return out
