"""Interlaced video is deinterlaced as a player does it: FFmpeg's bwdif, one frame per frame.

Interlaced clips are made from a shared clip with Debian's ``ffmpeg`` CLI as broadcasters make
them (``tinterlace`` weaves two fields of a 50/60 fps picture into one frame, ``setfield``
flags it, the encoder codes interlaced): PAL 576i and NTSC 480i, top and bottom field first,
H.264 (PAFF/MBAFF) and MPEG-2, a stream interlaced only in part, and a lossless codec whose
frames carry no flag but whose container declares the field order. Expected frames are one
``bwdif=mode=send_frame:parity=auto:deint=interlaced`` (or the declared parity) over the whole
stream, run here with PyAV; frames read with any sampling must equal them at their indices.
Tests needing the CLI skip without it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import av
import numpy as np
import pytest

from core.errors import InvalidInputError
from preprocess.colour import Deinterlacer, field_order_name
from preprocess.video import iter_frames, probe_video, read_video

REPO = Path(__file__).resolve().parents[2]
SHARED = Path(os.environ.get("DFE_SHARED", REPO.parent / "shared"))
SOURCE = SHARED / "videos" / "pair480p_real.mp4"
FFMPEG = shutil.which("ffmpeg")

needs_cli = pytest.mark.skipif(
    FFMPEG is None, reason="Debian's ffmpeg CLI is not installed (apt-get install -y ffmpeg)"
)
needs_clip = pytest.mark.skipif(not SOURCE.is_file(), reason=f"no test video {SOURCE}")
pytestmark = [needs_cli, needs_clip]

PAL = "scale=720:576,fps=50"
NTSC = "scale=720:480,fps=60000/1001"
TFF = "tinterlace=interleave_top,setfield=tff"
BFF = "tinterlace=interleave_bottom,setfield=bff"
H264_TFF = [
    "-c:v",
    "libx264",
    "-preset",
    "ultrafast",
    "-flags",
    "+ildct+ilme",
    "-x264opts",
    "tff=1",
]
H264_BFF = [
    "-c:v",
    "libx264",
    "-preset",
    "ultrafast",
    "-flags",
    "+ildct+ilme",
    "-x264opts",
    "bff=1",
]
MPEG2_TFF = ["-c:v", "mpeg2video", "-q:v", "3", "-flags", "+ildct+ilme", "-top", "1"]
MPEG2_BFF = ["-c:v", "mpeg2video", "-q:v", "3", "-flags", "+ildct+ilme", "-top", "0"]

#: name -> (file name, seconds, video filter, codec options, field order recorded)
KINDS = {
    "pal_h264_tff": ("pal_tff.mp4", 1.0, f"{PAL},{TFF}", H264_TFF, "tff"),
    "pal_h264_bff": ("pal_bff.mp4", 1.0, f"{PAL},{BFF}", H264_BFF, "bff"),
    "ntsc_mpeg2_tff": ("ntsc_tff.ts", 1.0, f"{NTSC},{TFF}", MPEG2_TFF, "tff"),
    "pal_mpeg2_bff": ("pal_bff.mpg", 1.0, f"{PAL},{BFF}", MPEG2_BFF, "bff"),
    "ntsc_h264_bff": ("ntsc_bff.mkv", 1.0, f"{NTSC},{BFF}", H264_BFF, "bff"),
    # lossless, no per-frame flag: the container's field order says it (FFmpeg writes "tb")
    "pal_huffyuv_tff": ("pal_huff.mkv", 0.4, f"{PAL},{TFF}", ["-c:v", "huffyuv"], "tff"),
}


def _run(*args: str | Path) -> None:
    proc = subprocess.run(
        [FFMPEG, "-hide_banner", "-loglevel", "error", "-y", *map(str, args)],
        capture_output=True,
        text=True,
    )
    if proc.returncode:
        pytest.skip(f"ffmpeg could not make the clip: {proc.stderr[-300:]}")


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("interlaced")
    out = {}
    for name, (file, seconds, vf, codec, _) in KINDS.items():
        out[name] = d / file
        _run("-i", SOURCE, "-t", seconds, "-vf", vf, *codec, "-an", out[name])
    # interlaced only in part: a progressive second, then an interlaced one (H.264 in MP4)
    prog, inter = d / "prog.ts", d / "inter.ts"
    _run("-i", SOURCE, "-t", 1, "-vf", "scale=720:576,fps=25", "-c:v", "libx264", "-preset",
         "ultrafast", "-an", prog)  # fmt: skip
    _run("-ss", 1, "-i", SOURCE, "-t", 1, "-vf", f"{PAL},{TFF}", *H264_TFF, "-an", "-f",
         "mpegts", inter)  # fmt: skip
    out["partial"] = d / "partial.mp4"
    _run("-i", f"concat:{prog}|{inter}", "-c", "copy", out["partial"])
    return out


def whole_stream_bwdif(path: Path, spec: str = "mode=send_frame:parity=auto:deint=interlaced"):
    """Every frame of ``path`` through one bwdif graph, as BGR, and the raw decode."""
    with av.open(str(path)) as container:
        frames = list(container.decode(video=0))
    first = frames[0]
    graph = av.filter.Graph()
    src = graph.add(
        "buffer",
        f"video_size={first.width}x{first.height}:pix_fmt={first.format.name}:"
        "time_base=1/90000:pixel_aspect=1/1",
    )
    node, sink = graph.add("bwdif", spec), graph.add("buffersink")
    src.link_to(node)
    node.link_to(sink)
    graph.configure()
    out = []

    def pull():
        while True:
            try:
                out.append(graph.vpull())
            except (av.error.BlockingIOError, av.error.EOFError):
                return

    for f in frames:
        graph.vpush(f)
        pull()
    graph.vpush(None)
    pull()
    assert len(out) == len(frames)  # send_frame: one frame out per frame in
    bgr = [o.to_ndarray(format="bgr24") for o in out]
    raw = [f.to_ndarray(format="bgr24") for f in frames]
    return bgr, raw, [f.interlaced_frame for f in frames]


def combing(image: np.ndarray) -> float:
    """Mean |difference| between neighbouring lines beyond what lines two apart show: woven
    fields of a moving picture make neighbouring lines (other field) differ more."""
    y = image.astype(np.float64).mean(axis=2)
    return float(np.abs(y[1:-1] - (y[:-2] + y[2:]) / 2).mean())


@pytest.mark.parametrize("name", list(KINDS))
@pytest.mark.parametrize(("sampling", "n"), [("first", 8), ("uniform", 6), ("uniform", 13)])
def test_interlaced_frames_are_those_of_one_bwdif_over_the_stream(clips, name, sampling, n):
    path = clips[name]
    field_order = KINDS[name][4]
    spec = (
        f"mode=send_frame:parity={field_order}:deint=all"
        if "huffyuv" in name
        else "mode=send_frame:parity=auto:deint=interlaced"
    )
    expected, raw, _ = whole_stream_bwdif(path, spec)
    clip = read_video(path, n, sampling=sampling)
    off = read_video(path, n, sampling=sampling, deinterlace="off")
    # indices and counts do not change; the pixels are bwdif's, not the woven fields
    assert clip.indices == off.indices and len(clip.frames) == min(n, len(raw))
    assert clip.info.frame_count == off.info.frame_count == len(raw)
    for i, frame, woven in zip(clip.indices, clip.frames, off.frames):
        assert frame.shape == woven.shape == raw[i].shape
        assert np.array_equal(frame, expected[i]), i
        assert np.array_equal(woven, raw[i]), i
    # the record
    assert clip.deinterlaced == len(clip.frames) and clip.interlaced_frames == 0
    assert clip.deinterlace is not None and clip.deinterlace.startswith("bwdif=mode=send_frame")
    assert clip.info.field_order == field_order
    assert any("deinterlaced by FFmpeg's bwdif" in w for w in clip.warnings)
    assert off.deinterlaced == 0 and off.deinterlace is None
    if "huffyuv" not in name:  # frames flagged interlaced by the decoder
        assert off.interlaced_frames == off.frames_seen == len(off.frames)
        assert any("kept so (deinterlace='off')" in w for w in off.warnings)
    # combing is gone on moving frames
    moving = [k for k in range(1, len(clip.frames)) if clip.indices[k] > 2]
    assert np.mean([combing(clip.frames[k]) for k in moving]) < 0.8 * np.mean(
        [combing(off.frames[k]) for k in moving]
    )


def test_iter_frames_deinterlaces_every_frame(clips):
    path = clips["pal_h264_tff"]
    expected, raw, _ = whole_stream_bwdif(path)
    got = list(iter_frames(path))
    assert [i for i, _ in got] == list(range(len(raw)))
    assert all(np.array_equal(f, expected[i]) for i, f in got)
    kept = list(iter_frames(path, deinterlace="off"))
    assert all(np.array_equal(f, raw[i]) for i, f in kept)


@pytest.mark.parametrize(("sampling", "n"), [("first", 30), ("uniform", 9), ("uniform", 50)])
def test_stream_interlaced_only_in_part(clips, sampling, n):
    path = clips["partial"]
    expected, raw, flagged = whole_stream_bwdif(path)
    assert 0 < sum(flagged) < len(flagged)
    clip = read_video(path, n, sampling=sampling)
    for i, frame in zip(clip.indices, clip.frames):
        assert np.array_equal(frame, expected[i]), i
        if not flagged[i]:  # progressive frames: exactly as decoded
            assert np.array_equal(frame, raw[i]), i
    assert clip.deinterlaced == sum(flagged[i] for i in clip.indices)
    assert clip.interlaced_frames == 0
    off = read_video(path, n, sampling=sampling, deinterlace="off")
    assert off.interlaced_frames == sum(flagged[i] for i in clip.indices)


def test_progressive_video_is_unchanged(video_paths):
    for path in video_paths[:3]:
        for sampling, n in (("first", 6), ("uniform", 6)):
            auto = read_video(path, n, sampling=sampling)
            off = read_video(path, n, sampling=sampling, deinterlace="off")
            assert auto.indices == off.indices
            assert all(np.array_equal(a, b) for a, b in zip(auto.frames, off.frames))
            assert auto.deinterlaced == 0 and auto.deinterlace is None
            assert auto.interlaced_frames == 0
            assert not any("interlaced" in w for w in auto.warnings)
        assert probe_video(path).field_order in ("progressive", "unknown")


def test_deinterlace_option_is_checked(clips):
    with pytest.raises(InvalidInputError, match="deinterlace='yes' is not supported"):
        read_video(clips["pal_h264_tff"], 2, deinterlace="yes")
    with pytest.raises(InvalidInputError, match="deinterlace"):
        iter_frames(clips["pal_h264_tff"], deinterlace="bob")


def test_field_order_names():
    # FFmpeg's AVFieldOrder: unknown, progressive, tt, bb, tb, bt (first letter: first field)
    assert [field_order_name(v) for v in range(6)] == [
        "unknown", "progressive", "tff", "bff", "tff", "bff"
    ]  # fmt: skip
    assert Deinterlacer(av, "off").spec(object()) is None
