"""Every video a player plays, through the whole engine (the tiny model, det_500m): a video that
changes size mid-stream, interlaced video, animated WebP and APNG. The records say what the
decoder met: sizes, deinterlacing, field order; faces are in each frame's own pixels and one
person stays one track. Clips are made from a shared clip with Debian's ``ffmpeg`` CLI (skipped
without it) or Pillow."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from engine.api import Engine
from preprocess.video import read_video

FFMPEG = shutil.which("ffmpeg")
needs_cli = pytest.mark.skipif(
    FFMPEG is None, reason="Debian's ffmpeg CLI is not installed (apt-get install -y ffmpeg)"
)


def _run(*args: str | Path) -> None:
    proc = subprocess.run(
        [FFMPEG, "-hide_banner", "-loglevel", "error", "-y", *map(str, args)],
        capture_output=True,
        text=True,
    )
    if proc.returncode:
        pytest.skip(f"ffmpeg could not make the clip: {proc.stderr[-300:]}")


@pytest.fixture(scope="module")
def source(shared_dir) -> Path:
    return shared_dir / "videos" / "pair480p_real.mp4"


@pytest.fixture(scope="module")
def size_change(source, tmp_path_factory) -> Path:
    """The issue's clip, without its one-second jump: 1 s at 1280x720, then the next second
    at 640x360 (the man keeps his place on screen)."""
    if FFMPEG is None:
        pytest.skip("Debian's ffmpeg CLI is not installed")
    d = tmp_path_factory.mktemp("size")
    a, b, out = d / "a.ts", d / "b.ts", d / "resolution_change.mp4"
    _run("-i", source, "-t", 1, "-vf", "scale=1280:720", "-c:v", "libx264", "-preset",
         "ultrafast", "-an", "-f", "mpegts", a)  # fmt: skip
    _run("-ss", 1, "-i", source, "-t", 1, "-vf", "scale=640:360", "-c:v", "libx264", "-preset",
         "ultrafast", "-an", "-f", "mpegts", b)  # fmt: skip
    _run("-i", f"concat:{a}|{b}", "-c", "copy", out)
    return out


@pytest.fixture(scope="module")
def interlaced(source, tmp_path_factory) -> Path:
    """The issue's 576i clip (top field first, H.264 interlaced), one second."""
    if FFMPEG is None:
        pytest.skip("Debian's ffmpeg CLI is not installed")
    out = tmp_path_factory.mktemp("576i") / "interlaced.mp4"
    _run("-i", source, "-t", 1, "-vf", "scale=720:576,fps=50,tinterlace=interleave_top,"
         "setfield=tff", "-c:v", "libx264", "-preset", "ultrafast", "-flags", "+ildct+ilme",
         "-x264opts", "tff=1", "-an", out)  # fmt: skip
    return out


def _inside(box, size) -> bool:
    w, h = size
    x1, y1, x2, y2 = box
    return 0 <= x1 < x2 <= w and 0 <= y1 < y2 <= h


@needs_cli
@pytest.mark.parametrize(("sampling", "n"), [("first", 20), ("first", 30), ("uniform", 8),
                                             ("uniform", 20)])  # fmt: skip
def test_size_change_is_scored_and_recorded(tiny_engine, size_change, sampling, n):
    clip = read_video(size_change, n, sampling=sampling)
    pred = tiny_engine.predict(size_change, seq_len=n, sampling=sampling)
    assert pred.ok, pred.error
    rec = pred.decode
    sizes = list(dict.fromkeys(clip.frame_sizes))
    assert rec["frame_sizes"] == [list(s) for s in sizes]
    assert rec["size_changes"] == [[i, w, h] for i, (w, h) in clip.size_changes]
    changed = len(sizes) > 1
    assert changed == (sampling == "uniform" or n > 24)
    assert changed == any(w.startswith("the video changes size") for w in pred.warnings)
    # boxes in each frame's own pixels, inside that frame
    size_of = dict(zip(clip.indices, clip.frame_sizes))
    assert pred.faces == pred.frames == min(n, 48)
    for idx, box in zip(pred.frame_indices, pred.boxes):
        assert box is not None and _inside(box, size_of[idx]), (idx, box)
    # one person, one track across the change
    assert pred.people == 1 and len(pred.tracks) == 1
    assert pred.tracks[0]["frames"] == len(clip.frames)
    if changed:
        assert [p["frame_size"] for p in pred.detector_input["frame_sizes"]] == rec["frame_sizes"]


@needs_cli
def test_size_change_fast_mode_and_every_person(tiny_model, models_dir, size_change):
    engine = Engine.load(
        tiny_model, backend="ort", models_dir=models_dir, download=False, detect_every=3,
        faces="all",
    )  # fmt: skip
    clip = read_video(size_change, 20, sampling="uniform")
    pred = engine.predict(size_change, seq_len=20, sampling="uniform")
    assert pred.ok and pred.people == 1 and pred.faces == 20
    size_of = dict(zip(clip.indices, clip.frame_sizes))
    for idx, box in zip(pred.frame_indices, pred.boxes):
        assert _inside(box, size_of[idx])


@needs_cli
def test_interlaced_is_deinterlaced_and_the_verdict_knows(tiny_model, models_dir, interlaced):
    auto = Engine.load(tiny_model, backend="ort", models_dir=models_dir, download=False)
    pred = auto.predict(interlaced, seq_len=8)
    assert pred.ok and pred.frames == 8
    assert pred.decode["deinterlace"] == "bwdif"
    assert pred.decode["deinterlace_filter"].startswith("bwdif=mode=send_frame")
    assert pred.decode["field_order"] == "tff"
    assert pred.decode["deinterlaced_frames"] == 8 and pred.decode["interlaced_frames"] == 0
    # deinterlaced: half of each frame's lines interpolated, still not what the model knows
    assert pred.quality["interlaced"] == 1.0 and pred.quality["deinterlaced"] is True
    assert "INTERLACED_SOURCE" in pred.reasons and pred.verdict == "UNCERTAIN"
    assert pred.provenance["settings"]["deinterlace"] == "auto"
    off = Engine.load(
        tiny_model, backend="ort", models_dir=models_dir, download=False, deinterlace="off"
    )
    kept = off.predict(interlaced, seq_len=8)
    assert kept.ok and kept.frame_indices == pred.frame_indices
    assert kept.decode["deinterlace"] is None and kept.decode["interlaced_frames"] == 8
    assert kept.quality["interlaced"] == 1.0 and kept.quality["deinterlaced"] is False
    assert "INTERLACED_SOURCE" in kept.reasons
    assert kept.provenance["settings"]["deinterlace"] == "off"
    assert kept.p_fake != pred.p_fake  # the model saw other pixels


def test_progressive_record_says_nothing_was_deinterlaced(tiny_engine, shared_dir):
    pred = tiny_engine.predict(shared_dir / "videos" / "pair480p_real.mp4", seq_len=4)
    assert pred.decode["deinterlace"] is None and pred.decode["deinterlaced_frames"] == 0
    assert pred.decode["frame_sizes"] == [[854, 480]] and pred.decode["backend"] == "pyav"
    assert pred.quality["interlaced"] == 0 and "INTERLACED_SOURCE" not in pred.reasons
    assert not any("interlaced" in w or "changes size" in w for w in pred.warnings)


@pytest.mark.parametrize("ext", ["webp", "png"])
def test_animated_image_is_scored(tiny_engine, source, tmp_path, ext):
    clip = read_video(source, 24)  # every other frame of the first second: 12 frames
    images = [Image.fromarray(f[..., ::-1]).resize((428, 240)) for f in clip.frames[::2]]
    path = tmp_path / f"clip.{ext}"
    images[0].save(path, save_all=True, append_images=images[1:], duration=83, loop=0,
                   **({"lossless": True} if ext == "webp" else {}))  # fmt: skip
    for sampling in ("first", "uniform"):
        pred = tiny_engine.predict(path, seq_len=6, sampling=sampling)
        assert pred.ok, pred.error
        assert pred.frames == pred.faces == 6 and pred.people == 1
        assert pred.frame_indices == ([0, 1, 2, 3, 4, 5] if sampling == "first"
                                      else [0, 2, 4, 7, 9, 11])  # fmt: skip
        for box in pred.boxes:
            assert box is None or _inside(box, (428, 240))
    assert np.isfinite(pred.p_fake)


@pytest.fixture(scope="module")
def many_sizes(source, tmp_path_factory) -> Path:
    """Six sizes back to back: a 640x360 first frame, 1280x720, a portrait frame with the
    picture letterboxed in it, 426x240, a 4:3 crop, 1920x1080."""
    if FFMPEG is None:
        pytest.skip("Debian's ffmpeg CLI is not installed")
    d = tmp_path_factory.mktemp("many")
    segments = [(1, "scale=640:360"), (11, "scale=1280:720"),
                (8, "scale=360:-2,pad=360:640:0:(oh-ih)/2"), (8, "scale=426:240"),
                (8, "crop=640:480,scale=480:360"), (6, "scale=1920:1080")]  # fmt: skip
    parts, start = [], 0
    for k, (frames, vf) in enumerate(segments):
        part = d / f"{k}.ts"
        _run("-ss", f"{start / 24:.5f}", "-i", source, "-frames:v", frames, "-vf", vf, "-c:v",
             "libx264", "-preset", "ultrafast", "-an", "-f", "mpegts", part)  # fmt: skip
        parts.append(str(part))
        start += frames
    out = d / "many.mp4"
    _run("-i", "concat:" + "|".join(parts), "-c", "copy", out)
    return out


@needs_cli
@pytest.mark.parametrize(("sampling", "n"), [("first", 14), ("uniform", 12), ("uniform", 20)])
def test_many_size_changes_every_mode(tiny_engine, many_sizes, sampling, n):
    clip = read_video(many_sizes, n, sampling=sampling)
    pred = tiny_engine.predict(many_sizes, seq_len=n, sampling=sampling)
    assert pred.ok, pred.error
    assert pred.decode["frame_sizes"] == [list(s) for s in dict.fromkeys(clip.frame_sizes)]
    assert len(pred.decode["size_changes"]) == len(clip.size_changes) > 1
    assert [p["frame_size"] for p in pred.detector_input["frame_sizes"]] == pred.decode[
        "frame_sizes"
    ]
    size_of = dict(zip(clip.indices, clip.frame_sizes))
    assert pred.faces >= len(clip.frames) // 2
    for track in pred.tracks:
        for idx, box in zip(track["frame_indices"], track["boxes"]):
            assert box is None or _inside(box, size_of[idx]), (idx, box)
