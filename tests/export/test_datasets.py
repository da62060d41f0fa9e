"""Training data (``export.datasets``): crops made by the runtime's own stages, the cache, the
split by video and the augmentation. Nothing here needs torch."""

from __future__ import annotations

import numpy as np
import pytest

from core.config import EngineConfig
from core.errors import InvalidInputError
from export.datasets import (
    CropCache,
    FaceCropper,
    LabelledVideo,
    augment_video,
    options_for,
    prepare_crops,
    split_by_video,
    unique_videos,
)
from tests.export._train_data import face_clip_set


def test_face_cropper_gives_the_runtimes_crops(tiny_engine, models_dir, shared_dir):
    """The training crops of a video are exactly those ``Engine.inspect`` scores (same frames,
    boxes and pixels), so a model is trained on what it will be served."""
    video = shared_dir / "videos" / "pair480p_fake.mp4"
    seen = tiny_engine.inspect(video, seq_len=4)
    style = seen.prediction.crop_style
    options = options_for(
        4,
        no_face="full_frame",
        crop_style=style,
        detector=EngineConfig(models_dir=models_dir, download=False),
    )
    item = FaceCropper(options)(video)
    assert item.source == "video" and item.found == 4
    assert item.frame_indices == seen.prediction.frame_indices
    assert item.boxes == seen.prediction.boxes
    np.testing.assert_array_equal(item.crops, np.stack(seen.crops))


def test_face_clips_are_used_as_they_are_and_cached(tmp_path):
    labels = face_clip_set(tmp_path / "clips", per_class=1, frames=3)
    videos = [LabelledVideo(str(tmp_path / "clips" / f"clip{k}.mp4"), "FAKE") for k in (0, 1)]
    options = options_for(3)
    calls = []

    class Counting(FaceCropper):
        def __call__(self, path):
            calls.append(path)
            return super().__call__(path)

    cache = CropCache(tmp_path / "cache", options)
    first = prepare_crops(videos, cache, Counting(options), min_crops=3)
    assert len(calls) == 2 and first.from_cache == 0 and not first.skipped
    assert first.crops[0].source == "clip" and first.crops[0].crops.shape == (3, 112, 112, 3)
    again = prepare_crops(videos, cache, Counting(options), min_crops=3)
    assert len(calls) == 2 and again.from_cache == 2  # no clip read the second time
    np.testing.assert_array_equal(again.crops[1].crops, first.crops[1].crops)
    # other options, other cache entries
    other = CropCache(tmp_path / "cache", options_for(3, crop_style="dlib"))
    assert other.key(videos[0].path) != cache.key(videos[0].path)
    assert labels.is_file()


def test_prepare_crops_lists_what_it_leaves_out(tmp_path):
    (tmp_path / "clips").mkdir()
    face_clip_set(tmp_path / "clips", per_class=1, frames=3)
    text = tmp_path / "notes.mp4"
    text.write_text("not a video")
    videos = [
        LabelledVideo(str(tmp_path / "clips" / "clip0.mp4"), "FAKE"),
        LabelledVideo(str(text), "REAL"),
        LabelledVideo(str(tmp_path / "missing.mp4"), "REAL"),
        LabelledVideo(str(tmp_path / "clips" / "clip1.mp4"), "REAL"),
    ]
    options = options_for(3)
    got = prepare_crops(
        videos, CropCache(tmp_path / "cache", options), FaceCropper(options), min_crops=4
    )
    assert got.videos == []  # 3 crops each, 4 needed
    reasons = {s["video"]: s["reason"] for s in got.skipped}
    assert len(reasons) == 4
    assert "fewer than the 4" in reasons[videos[0].path]
    assert "missing.mp4" in reasons[videos[2].path]


def test_split_by_video_is_per_class_seeded_and_disjoint():
    videos = [LabelledVideo(f"f{i}", "FAKE") for i in range(10)]
    videos += [LabelledVideo(f"r{i}", "REAL") for i in range(5)]
    train, val = split_by_video(videos, 0.2, seed=3)
    assert sorted(v.label for v in val) == ["FAKE", "FAKE", "REAL"]
    assert not {v.path for v in train} & {v.path for v in val}
    assert len(train) + len(val) == len(videos)
    assert split_by_video(videos, 0.2, seed=3) == (train, val)
    assert split_by_video(videos, 0.2, seed=4) != (train, val)
    assert split_by_video(videos, 0.0, seed=3) == (videos, [])
    # a class with two videos still gives one to validation, and keeps one for training
    two = [LabelledVideo("a", "FAKE"), LabelledVideo("b", "FAKE"), LabelledVideo("c", "REAL")]
    train, val = split_by_video(two, 0.1, seed=0)
    assert [v.label for v in val] == ["FAKE"] and len(train) == 2
    with pytest.raises(InvalidInputError):
        split_by_video(videos, 1.0, seed=0)


def test_unique_videos_merges_duplicates_and_refuses_conflicts():
    got = unique_videos([("a", "FAKE"), ("b", "REAL"), ("a", "FAKE")])
    assert got == [LabelledVideo("a", "FAKE"), LabelledVideo("b", "REAL")]
    assert [v.target for v in got] == [0, 1]  # FAKE 0, REAL 1 as the original
    with pytest.raises(InvalidInputError, match="both FAKE and REAL"):
        unique_videos([("a", "FAKE"), ("a", "REAL")])


def test_augment_video_is_the_same_for_every_frame_and_seeded():
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, size=(112, 112, 3), dtype=np.uint8)
    crops = np.stack([frame, frame])
    flips = 0
    for seed in range(8):
        out = augment_video(crops, np.random.default_rng(seed))
        assert out.dtype == np.uint8 and out.shape == crops.shape
        np.testing.assert_array_equal(out[0], out[1])  # one transform per video
        again = augment_video(crops, np.random.default_rng(seed))
        np.testing.assert_array_equal(out, again)
        plain = np.abs(out.astype(int) - crops).mean()
        mirrored = np.abs(out[:, :, ::-1].astype(int) - crops).mean()
        flips += mirrored < plain
        # a flip and a mild colour change: never a shift or rescale of the face
        assert min(plain, mirrored) < 20 < max(plain, mirrored)
    assert 0 < flips < 8
