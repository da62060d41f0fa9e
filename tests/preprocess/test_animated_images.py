"""Animated WebP and APNG are videos: decoded by Pillow (FFmpeg before 9.0 decodes no animated
WebP frame), frame timing from the file, transparency composited on black. Still images keep
their clear error. The animations are made with Pillow from a shared clip's frames."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core.errors import InvalidVideoError
from preprocess.video import iter_frames, probe_video, read_video

REPO = Path(__file__).resolve().parents[2]
SHARED = Path(os.environ.get("DFE_SHARED", REPO.parent / "shared"))
SOURCE = SHARED / "videos" / "pair480p_real.mp4"
needs_clip = pytest.mark.skipif(not SOURCE.is_file(), reason=f"no test video {SOURCE}")

DURATIONS = [40, 80, 40, 120, 40, 40, 200, 40, 40, 60]  # ms, uneven on purpose


@pytest.fixture(scope="module")
def source_frames() -> list[np.ndarray]:
    if not SOURCE.is_file():
        pytest.skip(f"no test video {SOURCE}")
    clip = read_video(SOURCE, len(DURATIONS), sampling="uniform")
    # 428x240 RGB: small, even, with the man's face ~50 px
    return [np.asarray(Image.fromarray(f[..., ::-1]).resize((428, 240))) for f in clip.frames]


def save_animation(path: Path, rgb: list[np.ndarray], **options) -> Path:
    images = [Image.fromarray(f) for f in rgb]
    images[0].save(
        path, save_all=True, append_images=images[1:], duration=DURATIONS[: len(rgb)], loop=0,
        **options,
    )  # fmt: skip
    return path


@pytest.fixture(scope="module")
def animations(tmp_path_factory, source_frames) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("animated")
    return {
        "webp": save_animation(d / "clip.webp", source_frames, lossless=True),
        "webp_lossy": save_animation(d / "lossy.webp", source_frames, quality=90),
        "apng": save_animation(d / "clip.png", source_frames),
        "apng_named": save_animation(d / "clip.apng", source_frames, format="PNG"),
    }


@needs_clip
@pytest.mark.parametrize("name", ["webp", "apng", "apng_named"])
@pytest.mark.parametrize(("sampling", "n", "indices"), [
    ("first", 4, [0, 1, 2, 3]),
    ("first", 30, list(range(10))),
    ("uniform", 4, [0, 3, 6, 9]),
    ("uniform", 10, list(range(10))),
])  # fmt: skip
def test_lossless_animations_decode_every_frame_exactly(
    animations, source_frames, name, sampling, n, indices
):
    clip = read_video(animations[name], n, sampling=sampling)
    assert clip.backend == "pillow" and clip.indices == indices
    for i, frame in zip(clip.indices, clip.frames):
        assert frame.shape == (240, 428, 3) and frame.dtype == np.uint8
        assert frame.flags["C_CONTIGUOUS"]
        assert np.array_equal(frame, source_frames[i][..., ::-1])  # BGR
    # timing: presentation times from the frame durations, fps and duration in VideoInfo
    starts = np.cumsum([0, *DURATIONS]) / 1000.0
    assert clip.times == pytest.approx([starts[i] for i in indices])
    info = clip.info
    assert info.frame_count == 10 and info.duration_s == pytest.approx(sum(DURATIONS) / 1000)
    assert info.fps == pytest.approx(10 / (sum(DURATIONS) / 1000))
    assert (info.width, info.height) == (428, 240) and info.rotation == 0
    assert info.codec == ("webp" if name == "webp" else "apng")
    assert (len(clip.frames) < n) == any("gives 10" in w for w in clip.warnings)


@needs_clip
def test_lossy_webp_iter_and_probe(animations, source_frames):
    path = animations["webp_lossy"]
    info = probe_video(path)
    assert info.frame_count == 10 and info.codec == "webp" and info.fps is not None
    frames = list(iter_frames(path))
    assert [i for i, _ in frames] == list(range(10))
    for i, f in frames:
        assert np.abs(f.astype(int) - source_frames[i][..., ::-1]).mean() < 4  # quality 90


def test_transparency_is_composited_on_black(tmp_path):
    rgb = np.zeros((32, 48, 3), np.uint8)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 200, 100, 50
    frames = []
    for alpha in (255, 128, 0):
        frame = np.dstack([rgb, np.full((32, 48), alpha, np.uint8)])
        frames.append(Image.fromarray(frame, "RGBA"))
    for ext, options in (("webp", {"lossless": True}), ("png", {})):
        path = tmp_path / f"alpha.{ext}"
        frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0,
                       **options)  # fmt: skip
        clip = read_video(path, 3)
        got = [tuple(int(v) for v in f[0, 0]) for f in clip.frames]  # BGR
        assert got == [(50, 100, 200), (25, 50, 100), (0, 0, 0)], ext  # round(c * a / 255)
        assert any("composited on black" in w for w in clip.warnings)


def test_apng_default_image_outside_the_animation_is_skipped(tmp_path):
    frames = [Image.new("RGB", (16, 16), (10 * k, 0, 0)) for k in range(4)]
    path = tmp_path / "default.png"
    # the first image is the default (shown by viewers without APNG support), not a frame
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=50,
                   default_image=True)  # fmt: skip
    clip = read_video(path, 10)
    assert clip.info.frame_count == 3
    assert [int(f[0, 0, 2]) for f in clip.frames] == [10, 20, 30]  # red, in BGR's last channel


def test_still_images_keep_their_clear_error(tmp_path):
    image = Image.new("RGB", (16, 16), (1, 2, 3))
    for name, kind in (("a.webp", "WebP"), ("a.png", "PNG"), ("a.jpg", "JPEG")):
        image.save(tmp_path / name)
        with pytest.raises(InvalidVideoError, match=f"is a {kind} image.*not a video"):
            read_video(tmp_path / name, 4)
    # an "animation" of one frame is a still image too
    image.save(tmp_path / "one.webp", save_all=True, append_images=[], duration=100)
    with pytest.raises(InvalidVideoError, match="still image"):
        read_video(tmp_path / "one.webp", 4)


def test_gif_still_goes_through_ffmpeg(tmp_path):
    frames = [Image.new("RGB", (16, 16), (40 * k, 0, 0)) for k in range(3)]
    path = tmp_path / "a.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0)
    clip = read_video(path, 3)
    assert clip.backend == "pyav" and len(clip.frames) == 3


def test_truncated_animations(tmp_path):
    frames = [Image.fromarray(np.full((24, 24, 3), 25 * k, np.uint8)) for k in range(6)]
    for ext, options in (("png", {}), ("webp", {"lossless": True})):
        path = tmp_path / f"cut.{ext}"
        frames[0].save(path, save_all=True, append_images=frames[1:], duration=50, **options)
        data = path.read_bytes()
        path.write_bytes(data[: int(len(data) * 0.7)])
        if ext == "png":  # the frames before the damage, and a warning
            clip = read_video(path, 6)
            assert 0 < len(clip.frames) < 6
            assert any("could not be decoded by Pillow" in w for w in clip.warnings)
        else:  # libwebp refuses the whole file: an error that says it is an animation
            with pytest.raises(InvalidVideoError, match="cannot be read as an animation"):
                read_video(path, 6)
