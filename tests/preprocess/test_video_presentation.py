"""Frames as a player presents them: MP4/MOV edit lists, corrupt packets, joined transport streams.

Edit-list cuts are made from a shared clip with Debian's ``ffmpeg`` CLI (the common way to make a
sub-clip: ``ffmpeg -ss T -i in.mp4 -c copy -t D out.mp4``); their expected frame counts and
durations come from ``ffprobe -count_frames``. Tests needing the CLI skip without it. Corrupt
and joined files are made with PyAV.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import av
import numpy as np
import pytest

from preprocess.sampling import sample_indices
from preprocess.video import VideoClip, iter_frames, probe_video, read_video
from tests.preprocess._synth import encode_video, read_index

REPO = Path(__file__).resolve().parents[2]
SHARED = Path(os.environ.get("DFE_SHARED", REPO.parent / "shared"))
SOURCE_CLIP = SHARED / "videos" / "pair480p_real.mp4"
FFMPEG = shutil.which("ffmpeg")
FFPROBE = shutil.which("ffprobe")

needs_cli = pytest.mark.skipif(
    FFMPEG is None or FFPROBE is None,
    reason="Debian's ffmpeg CLI is not installed (apt-get install -y ffmpeg)",
)
needs_clip = pytest.mark.skipif(
    not SOURCE_CLIP.is_file(), reason=f"no test video {SOURCE_CLIP} (set DFE_SHARED)"
)


def _ffmpeg(*args: str | Path) -> None:
    subprocess.run(
        [FFMPEG, "-hide_banner", "-loglevel", "error", "-y", *map(str, args)],
        check=True,
        capture_output=True,
    )


def _ffprobe_counts(path: Path) -> tuple[int, float | None]:
    """(frames ffprobe decodes, the stream duration it reports, if any)."""
    out = subprocess.run(
        [
            FFPROBE,
            "-v",
            "error",
            "-count_frames",
            "-select_streams",
            "v:0",
            "-show_entries",
            "stream=nb_read_frames,duration",
            "-of",
            "json",
            str(path),
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    stream = json.loads(out.stdout)["streams"][0]
    duration = stream.get("duration")
    return int(stream["nb_read_frames"]), None if duration is None else float(duration)


def _same(a: list[np.ndarray], b: list[np.ndarray]) -> bool:
    return len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


def _check_against_full_decode(path: Path, clip: VideoClip) -> None:
    full = [frame for _, frame in iter_frames(path)]
    assert _same(clip.frames, [full[i] for i in clip.indices])


# --------------------------------------------------------------------------- edit lists


@pytest.fixture(scope="module")
def cut_source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The issue's re-make: 4 s of a shared clip, 426x240 H.264, GOP 48, 3 B-frames."""
    if FFMPEG is None or FFPROBE is None or not SOURCE_CLIP.is_file():
        pytest.skip("needs Debian's ffmpeg CLI and the shared test clips")
    path = tmp_path_factory.mktemp("cuts") / "src.mp4"
    _ffmpeg(
        "-i", SOURCE_CLIP, "-t", "4", "-vf", "scale=426:240", "-c:v", "libx264", "-crf", "20",
        "-g", "48", "-keyint_min", "48", "-sc_threshold", "0", "-bf", "3", "-an", path,
    )  # fmt: skip
    return path


# (name, seconds to start at, seconds to keep or None). The cut is ("mp4", 1.0, 2);
# MOV also writes an edit list; Matroska has none (every frame from the keyframe is shown).
CUTS = [
    ("issue.mp4", "1.0", "2"),
    ("late.mp4", "1.37", "2"),
    ("near_end.mp4", "2.9", None),
    ("cut.mov", "0.5", "1.5"),
    ("cut.mkv", "1.3", "1.5"),
]


@needs_cli
@needs_clip
@pytest.mark.parametrize(("name", "start", "keep"), CUTS, ids=[c[0] for c in CUTS])
def test_stream_copy_cut_counts_and_samples_the_frames_a_player_shows(
    cut_source: Path, name: str, start: str, keep: str | None
) -> None:
    path = cut_source.parent / name
    _ffmpeg("-ss", start, "-i", cut_source, "-c", "copy", *(["-t", keep] if keep else []), path)
    shown, duration = _ffprobe_counts(path)
    if name == "issue.mp4":
        assert shown == 50  # what the issue measured with ffprobe, the CLI and a plain decode
    with av.open(str(path)) as container:  # the edit list hides packets (precondition)
        packets = sum(1 for p in container.demux(video=0) if p.size)
    if name.endswith((".mp4", ".mov")):
        assert packets > shown, "ffmpeg wrote no edit list: the test would prove nothing"

    info = probe_video(path)
    assert info.frame_count == shown and info.frame_count_source == "index"
    if duration is not None:  # ffprobe gives Matroska streams none
        assert info.duration_s == pytest.approx(duration, abs=1e-3)
    assert len(list(iter_frames(path))) == shown

    for n in (20, 7):
        clip = read_video(path, n, sampling="uniform")
        assert clip.indices == sample_indices(shown, n, "uniform") and len(clip.frames) == n
        assert clip.warnings == () and clip.info.frame_count == shown
        _check_against_full_decode(path, clip)
    first = read_video(path, 10)
    assert first.indices == list(range(10))
    _check_against_full_decode(path, first)


@needs_cli
@needs_clip
def test_edit_list_cut_is_read_by_seeking(cut_source: Path) -> None:
    """The seek path stays: a cut with several GOPs is not decoded whole for 3 frames."""
    path = cut_source.parent / "long_cut.mp4"
    short_gop = cut_source.parent / "short_gop.mp4"
    _ffmpeg(
        "-i", cut_source, "-c:v", "libx264", "-g", "12", "-keyint_min", "12", "-bf", "2",
        "-sc_threshold", "0", short_gop,
    )  # fmt: skip
    _ffmpeg("-ss", "0.7", "-i", short_gop, "-c", "copy", path)
    shown, _ = _ffprobe_counts(path)
    clip = read_video(path, 3, sampling="uniform")
    assert clip.indices == sample_indices(shown, 3, "uniform")
    assert clip.frames_decoded < shown // 2
    _check_against_full_decode(path, clip)


# --------------------------------------------------------------------------- corrupt packets


@needs_clip
def test_corrupt_bytes_mid_file_uniform_returns_all_frames_asked_for(tmp_path: Path) -> None:
    """mmaction2 #362: frames that fail to decode are not counted, so uniform still gives N."""
    frames = read_video(SOURCE_CLIP, 72).frames
    path = tmp_path / "clean.mp4"
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=24)
        stream.width, stream.height = 426, 240
        stream.codec_context.gop_size = 24
        for bgr in frames:
            frame = av.VideoFrame.from_ndarray(bgr, format="bgr24").reformat(426, 240, "yuv420p")
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    data = bytearray(path.read_bytes())
    rng = np.random.default_rng(1)
    for fraction in (0.40, 0.55, 0.70):
        at = int(len(data) * fraction)
        data[at : at + 3000] = rng.integers(0, 256, 3000, dtype=np.uint8).tobytes()
    bad = tmp_path / "corrupt.mp4"
    bad.write_bytes(bytes(data))

    # Frame-threaded decoding of damaged data is not reproducible; the reader decodes such a
    # video on one thread once frames fail, so a one-thread full decode is the reference.
    full = [frame for _, frame in iter_frames(bad, threads=1)]
    listed = probe_video(bad).frame_count
    assert listed is not None and len(full) < listed, "no frame failed: the test proves nothing"

    for n in (20, 50):
        clip = read_video(bad, n, sampling="uniform")
        assert len(clip.frames) == n
        assert clip.info.frame_count == len(full) and clip.info.frame_count_source == "decode"
        assert clip.indices == sample_indices(len(full), n, "uniform")
        assert _same(clip.frames, [full[i] for i in clip.indices])
        assert any("could not be decoded" in w for w in clip.warnings), clip.warnings
        assert any("decoding failed" in w for w in clip.warnings), clip.warnings
    first = read_video(bad, 72)
    assert first.indices == list(range(len(full))) and _same(first.frames, full)


# --------------------------------------------------------------------------- joined streams


def _corrupt_flags(path: Path) -> int:
    with av.open(str(path)) as container:
        return sum(p.is_corrupt for p in container.demux(video=0) if p.size)


@pytest.mark.parametrize(
    ("codec", "gap"), [("libx264", False), ("mpeg2video", False), ("libx264", True)]
)
def test_joined_transport_streams_are_not_corrupt(tmp_path: Path, codec: str, gap: bool) -> None:
    """``cat a.ts b.ts``: the timestamps restart (or jump) at the join; FFmpeg flags the packet
    in flight there corrupt, but nothing is missing, and frames come segment by segment."""
    a = encode_video(tmp_path / "a.ts", codec=codec, frames=30, gop=12, max_b_frames=2)
    b = encode_video(
        tmp_path / "b.ts",
        codec=codec,
        frames=30,
        gop=12,
        max_b_frames=2,
        start=100,
        container_options={"output_ts_offset": "30"} if gap else None,
    )
    joined = tmp_path / "joined.ts"
    joined.write_bytes(a.read_bytes() + b.read_bytes() + a.read_bytes())
    assert _corrupt_flags(joined) >= 1, "FFmpeg flagged no packet: the test proves nothing"
    shown = [*range(30), *range(100, 130), *range(30)]

    info = probe_video(joined)
    assert info.frame_count == 90
    full = [read_index(frame) for _, frame in iter_frames(joined)]
    assert full == shown
    for n in (20, 90):
        clip = read_video(joined, n, sampling="uniform")
        assert clip.indices == sample_indices(90, n, "uniform")
        assert [read_index(f) for f in clip.frames] == [shown[i] for i in clip.indices]
        assert clip.warnings == ()
    if not gap:  # three 1.2 s segments at 25 fps, not the span of overlapping timestamps
        assert info.duration_s == pytest.approx(3.6, abs=0.05)


def test_truncated_transport_stream_is_still_reported(tmp_path: Path) -> None:
    whole = encode_video(tmp_path / "whole.ts", codec="libx264", frames=60, gop=12)
    data = whole.read_bytes()
    end = int(len(data) * 0.6) // 188 * 188 + 100  # inside a 188-byte TS packet
    cut = tmp_path / "cut.ts"
    cut.write_bytes(data[:end])
    joined_then_cut = tmp_path / "joined_cut.ts"
    joined_then_cut.write_bytes(data + data[:end])
    for path in (cut, joined_then_cut):
        clip = read_video(path, 20, sampling="uniform")
        assert any("truncated" in w for w in clip.warnings), (path.name, clip.warnings)
