"""Video reading and frame sampling: real clips, a container/codec matrix, bad inputs.

Synthetic clips are encoded with PyAV into a temporary folder; each frame shows its own index
(see ``_synth.py``), so a test can tell which frame it got whatever the codec did to the pixels.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from core.errors import (
    ArtifactNotFoundError,
    EngineError,
    InvalidInputError,
    InvalidVideoError,
    MissingDependencyError,
)
from preprocess.sampling import SAMPLING_MODES, sample_indices
from preprocess.video import (
    VideoClip,
    common,
    h264,
    iter_frames,
    probe_video,
    pyav_backend,
    pyav_session,
    read_video,
)
from tests.preprocess._synth import encode_audio, encode_video, pattern, read_index

REPO = Path(__file__).resolve().parents[2]
SHARED = Path(os.environ.get("DFE_SHARED", REPO.parent / "shared"))
REAL_CLIPS = sorted((SHARED / "videos").glob("*.mp4")) if (SHARED / "videos").is_dir() else []
real_clip = pytest.mark.parametrize(
    "path",
    REAL_CLIPS
    or [pytest.param(None, marks=pytest.mark.skip(reason=f"no test videos under {SHARED}"))],
    ids=lambda p: p.stem if p else "missing",
)


def _same(a: list[np.ndarray], b: list[np.ndarray]) -> bool:
    return len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


def _check_frames(clip: VideoClip) -> None:
    for frame in clip.frames:
        assert frame.dtype == np.uint8 and frame.ndim == 3 and frame.shape[2] == 3
        assert frame.flags["C_CONTIGUOUS"]
        assert frame.shape[:2] == (clip.info.height, clip.info.width)


# --------------------------------------------------------------------------- sampling rule


def test_sample_indices_first() -> None:
    assert sample_indices(300, 20, "first") == list(range(20))
    assert sample_indices(5, 20, "first") == list(range(5))
    assert sample_indices(0, 20, "first") == []


def test_sample_indices_uniform_is_linspace_rounded_half_up() -> None:
    for count in (1, 2, 3, 7, 20, 21, 100, 243, 300, 1001):
        for n in (1, 2, 3, 7, 20, 60):
            got = sample_indices(count, n, "uniform")
            if count <= n:
                assert got == list(range(count))
                continue
            expected = np.floor(np.linspace(0, count - 1, n) + 0.5).astype(int).tolist()
            assert got == expected, (count, n)
            assert len(got) == n and len(set(got)) == n and got == sorted(got)
            assert got[0] == 0
            assert n == 1 or got[-1] == count - 1


def test_sample_indices_uniform_examples() -> None:
    assert sample_indices(300, 7, "uniform") == [0, 50, 100, 150, 199, 249, 299]
    assert sample_indices(10, 4, "uniform") == [0, 3, 6, 9]
    assert sample_indices(300, 1, "uniform") == [0]
    assert sample_indices(5, 20, "uniform") == [0, 1, 2, 3, 4]  # short video: no padding


@pytest.mark.parametrize("n", [0, -1, 2.0, True, None])
def test_sample_indices_rejects_bad_n(n: object) -> None:
    with pytest.raises(InvalidInputError, match="positive integer"):
        sample_indices(10, n, "first")  # type: ignore[arg-type]


def test_sample_indices_accepts_numpy_integers() -> None:
    assert sample_indices(np.int64(300), np.int32(7), "uniform") == [0, 50, 100, 150, 199, 249, 299]


def test_sample_indices_rejects_bad_mode_and_count() -> None:
    with pytest.raises(InvalidInputError, match="supported values are 'first', 'uniform'"):
        sample_indices(10, 3, "random")
    with pytest.raises(InvalidInputError, match="frame_count"):
        sample_indices(-1, 3, "first")
    assert SAMPLING_MODES == ("first", "uniform")


def _avcc(*nals: bytes) -> bytes:
    return b"".join(len(n).to_bytes(4, "big") + n for n in nals)


def test_h264_disposable_detection() -> None:
    """Only pictures with every slice at nal_ref_idc 0 and no parameter set may be skipped."""
    is_disposable = h264._h264_is_disposable
    b_slice = b"\x01\x9e\x00"  # type 1, nal_ref_idc 0
    p_slice = b"\x41\x9a\x00"  # type 1, nal_ref_idc 2
    sei, pps = b"\x06\x05\x00", b"\x68\xce\x00"
    assert is_disposable(_avcc(b_slice), 4)
    assert is_disposable(_avcc(sei, b_slice, b_slice), 4)
    assert not is_disposable(_avcc(p_slice), 4)
    assert not is_disposable(_avcc(b_slice, p_slice), 4)
    assert not is_disposable(_avcc(pps, b_slice), 4)
    assert not is_disposable(_avcc(b"\x65\x88\x00"), 4)  # IDR
    assert not is_disposable(_avcc(sei), 4)  # no slice at all
    assert not is_disposable(_avcc(b_slice)[:-1], 4)  # lengths do not tile the packet
    assert not is_disposable(_avcc(b_slice), 2)  # wrong length size: does not parse
    assert is_disposable(b"\x00\x00\x00\x01" + b_slice, 0)  # Annex B
    assert not is_disposable(b"\x00\x00\x01" + b_slice + b"\x00\x00\x01" + p_slice, 0)
    assert not is_disposable(b_slice, 0)  # Annex B without a start code


# --------------------------------------------------------------------------- real clips


_REFERENCE: dict[Path, tuple[int, dict[int, np.ndarray]]] = {}


def _reference(path: Path) -> tuple[int, dict[int, np.ndarray]]:
    """Frame count of a full PyAV decode and its frames at every index the tests look at."""
    if path not in _REFERENCE:
        count = probe_video(path, backend="pyav").frame_count
        assert count is not None
        wanted = set(range(20))
        for n in (7, 20):
            wanted |= set(sample_indices(count, n, "uniform"))
        frames, decoded = {}, 0
        for i, frame in iter_frames(path, backend="pyav"):
            decoded += 1
            if i in wanted:
                frames[i] = frame
        assert decoded == count, "demuxed frame count differs from a full decode"
        _REFERENCE[path] = (count, frames)
    return _REFERENCE[path]


@real_clip
def test_real_clip_first_n_matches_full_decode(path: Path) -> None:
    count, ref = _reference(path)
    clip = read_video(path, 20)
    _check_frames(clip)
    assert clip.backend == "pyav" and clip.indices == list(range(20))
    assert _same(clip.frames, [ref[i] for i in range(20)])
    assert clip.frames_decoded < 20 + 16  # stopped after 20 frames (plus the decoder's delay)
    assert clip.info.frame_count == count and clip.warnings == ()


@real_clip
@pytest.mark.parametrize("n", [20, 7])
def test_real_clip_uniform_seek_matches_full_decode(path: Path, n: int) -> None:
    count, ref = _reference(path)
    clip = read_video(path, n, sampling="uniform")
    expected = sample_indices(count, n, "uniform")
    assert clip.indices == expected and clip.warnings == ()
    assert _same(clip.frames, [ref[i] for i in expected])
    # Fewer frames are decoded than a full decode wherever the stream allows it: keyframes to seek
    # to, or H.264 pictures no other picture references. A single-GOP stream of reference frames
    # only (the two pair480p clips: Constrained Baseline, one keyframe) must be decoded up to its
    # last frame, which uniform sampling always includes.
    index = pyav_backend._PyAVBackend().index(str(path))
    if index.disposable or len(index.keyframes) > 1:
        assert clip.frames_decoded < count
    else:
        assert clip.frames_decoded == count


@real_clip
def test_real_clip_opencv_first_n_gives_identical_pixels(path: Path) -> None:
    _, ref = _reference(path)
    clip = read_video(path, 20, backend="opencv")
    assert clip.backend == "opencv" and clip.indices == list(range(20))
    assert _same(clip.frames, [ref[i] for i in range(20)])


# OpenCV's uniform sampling decodes every frame twice (count, then pick): two clips are enough.
OPENCV_UNIFORM_CLIPS = [
    p for p in REAL_CLIPS if p.stem in ("dfdc_abofeumbvv_fake", "pair480p_real")
] or [pytest.param(None, marks=pytest.mark.skip(reason=f"no test videos under {SHARED}"))]


@pytest.mark.parametrize("path", OPENCV_UNIFORM_CLIPS, ids=lambda p: p.stem if p else "missing")
def test_real_clip_opencv_uniform_gives_identical_pixels(path: Path) -> None:
    count, ref = _reference(path)
    clip = read_video(path, 20, sampling="uniform", backend="opencv")
    assert clip.info.frame_count == count
    assert clip.indices == sample_indices(count, 20, "uniform")
    assert _same(clip.frames, [ref[i] for i in clip.indices])


@real_clip
def test_real_clip_probe(path: Path) -> None:
    info = probe_video(path)
    expected_count = 243 if path.stem.startswith("pair480p") else 300
    assert info.frame_count == expected_count
    assert (info.width, info.height) in {(1920, 1080), (854, 480)}
    assert info.codec == "h264" and info.rotation == 0 and "mp4" in info.container
    assert info.fps is not None and 23 < info.fps < 31
    assert info.duration_s is not None and abs(info.duration_s - 10.1) < 0.2


def test_real_clip_threads_option_gives_same_frames() -> None:
    if not REAL_CLIPS:
        pytest.skip(f"no test videos under {SHARED}")
    path = REAL_CLIPS[-1]
    one = read_video(path, 12, sampling="uniform", threads=1)
    two = read_video(path, 12, sampling="uniform", threads=2)
    assert one.indices == two.indices and _same(one.frames, two.frames)
    assert _same(one.frames, read_video(path, 12, sampling="uniform", backend="opencv").frames)


# --------------------------------------------------------------------------- codec/container matrix

# (file name, encode_video options). Each entry is skipped only if this FFmpeg build lacks the
# encoder. B-frames are on where the codec has them, and GOPs are short so seeking is exercised.
MATRIX = [
    ("h264.mp4", {"codec": "libx264", "max_b_frames": 3, "audio": True}),
    ("mpeg4.mp4", {"codec": "mpeg4", "max_b_frames": 2}),
    ("hevc.mp4", {"codec": "libx265", "options": {"x265-params": "log-level=none"}}),
    ("h264.mov", {"codec": "libx264", "max_b_frames": 3}),
    ("vp9.webm", {"codec": "libvpx-vp9"}),
    ("vp8.webm", {"codec": "libvpx"}),
    ("mjpeg.avi", {"codec": "mjpeg", "pix_fmt": "yuvj420p"}),
    ("mpeg4.avi", {"codec": "mpeg4", "max_b_frames": 2}),
    ("h264.mkv", {"codec": "libx264", "max_b_frames": 3}),
    ("ffv1.mkv", {"codec": "ffv1"}),
    ("anim.gif", {"codec": "gif", "pix_fmt": "rgb8"}),
    ("flv1.flv", {"codec": "flv"}),
    ("h264.flv", {"codec": "libx264", "max_b_frames": 3}),
    ("wmv2.wmv", {"codec": "wmv2", "fmt": "asf"}),
    ("h263.3gp", {"codec": "h263"}),
    ("h264.ts", {"codec": "libx264", "max_b_frames": 3}),
    ("mpeg2.ts", {"codec": "mpeg2video", "max_b_frames": 2}),
    ("odd_vp9.webm", {"codec": "libvpx-vp9", "size": (213, 119)}),
    ("odd_h264_444.mp4", {"codec": "libx264", "size": (853, 479), "pix_fmt": "yuv444p"}),
    ("odd_mjpeg.avi", {"codec": "mjpeg", "size": (853, 479), "pix_fmt": "yuvj444p"}),
]
MATRIX_FRAMES = 60


def _encoder_available(codec: str) -> bool:
    try:
        av.codec.Codec(codec, "w")
    except Exception:  # av raises its own not-found errors
        return False
    return True


@pytest.fixture(scope="module")
def synth_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("videos")


@pytest.fixture(scope="module")
def matrix_clip(synth_dir: Path):
    made: dict[str, Path] = {}

    def make(name: str) -> Path:
        if name not in made:
            options = dict(MATRIX)[name]
            if not _encoder_available(options["codec"]):
                pytest.skip(f"this FFmpeg build has no {options['codec']} encoder")
            made[name] = encode_video(synth_dir / name, frames=MATRIX_FRAMES, gop=12, **options)
        return made[name]

    return make


@pytest.mark.parametrize("name", [name for name, _ in MATRIX])
def test_matrix_reads_every_frame_in_order(matrix_clip, name: str) -> None:
    path = matrix_clip(name)
    full = [frame for _, frame in iter_frames(path)]
    assert [read_index(f) for f in full] == list(range(MATRIX_FRAMES))
    width, height = dict(MATRIX)[name].get("size", (176, 144))
    assert full[0].shape == (height, width, 3)

    info = probe_video(path)
    assert info.frame_count == MATRIX_FRAMES and (info.width, info.height) == (width, height)

    first = read_video(path, 5)
    _check_frames(first)
    assert first.indices == [0, 1, 2, 3, 4] and _same(first.frames, full[:5])

    for n in (7, 20):
        clip = read_video(path, n, sampling="uniform")
        assert clip.indices == sample_indices(MATRIX_FRAMES, n, "uniform")
        assert _same(clip.frames, [full[i] for i in clip.indices]), f"uniform {n} differs"
        assert clip.warnings == ()

    opencv = read_video(path, 7, sampling="uniform", backend="opencv")
    assert opencv.indices == sample_indices(MATRIX_FRAMES, 7, "uniform")
    assert _same(opencv.frames, [full[i] for i in opencv.indices]), "OpenCV differs from PyAV"


@pytest.mark.parametrize(
    ("name", "codec"),
    [
        ("long.mp4", "libx264"),
        ("long.mkv", "libx264"),
        ("long.webm", "libvpx-vp9"),
        ("long.ts", "libx264"),
    ],
)
def test_uniform_seeks_instead_of_decoding_everything(
    synth_dir: Path, name: str, codec: str
) -> None:
    frames = 240
    path = encode_video(synth_dir / name, codec=codec, frames=frames, size=(64, 48), gop=12)
    full = [frame for _, frame in iter_frames(path)]
    clip = read_video(path, 7, sampling="uniform")
    assert _same(clip.frames, [full[i] for i in clip.indices])
    assert [read_index(f) for f in clip.frames] == clip.indices
    # 7 targets, each at most one GOP (12) plus the decoder's delay past its keyframe.
    assert clip.frames_decoded <= 7 * (12 + 8), clip.frames_decoded
    assert clip.frames_decoded < frames // 2


def test_uniform_falls_back_to_sequential_when_pts_are_unreliable(
    synth_dir: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    path = encode_video(synth_dir / "fallback.mp4", codec="libx264", frames=60, gop=12)
    full = [frame for _, frame in iter_frames(path)]
    monkeypatch.setattr(pyav_backend, "_seek_unsafe", lambda pts, keys: "pretend pts are missing")
    with caplog.at_level(logging.DEBUG, logger="preprocess.video"):
        clip = read_video(path, 7, sampling="uniform")
    assert "pretend pts are missing" in caplog.text
    assert _same(clip.frames, [full[i] for i in clip.indices])
    assert clip.frames_decoded == 60  # sequential, stopped at the last target (the last frame)


def test_uniform_recovers_when_a_seek_misbehaves(
    synth_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = encode_video(synth_dir / "badseek.mkv", codec="libx264", frames=120, gop=12)
    full = [frame for _, frame in iter_frames(path)]

    def seek_to_end(self, pts):  # lands past every keyframe: the reader must notice
        self.container.seek(10**9, stream=self.stream, backward=True)
        return self.packets()

    monkeypatch.setattr(pyav_session._PyAVSession, "seek_to_keyframe", seek_to_end)
    clip = read_video(path, 5, sampling="uniform")
    assert clip.indices == sample_indices(120, 5, "uniform")
    assert _same(clip.frames, [full[i] for i in clip.indices])


# --------------------------------------------------------------------------- rotation, VFR, format


@pytest.mark.parametrize("ext", ["mp4", "mkv"])
@pytest.mark.parametrize(("ccw", "cw"), [(90, 270), (180, 180), (270, 90), (-90, 90)])
def test_rotation_metadata_gives_upright_frames(
    synth_dir: Path, ext: str, ccw: int, cw: int
) -> None:
    """PyAV writes the display matrix; frames come out turned by it, as OpenCV shows them."""
    path = encode_video(
        synth_dir / f"rot{ccw}.{ext}", codec="libx264", frames=10, rotation=ccw, pix_fmt="yuv444p"
    )
    clip = read_video(path, 10)
    assert clip.info.rotation == cw
    assert (clip.info.width, clip.info.height) == ((144, 176) if cw in (90, 270) else (176, 144))
    for i, frame in zip(clip.indices, clip.frames, strict=True):
        expected = np.rot90(pattern(i, 176, 144), k=ccw // 90)  # display matrix: turn CCW
        assert np.abs(frame.astype(int) - expected).mean() < 4
        assert read_index(np.rot90(frame, k=cw // 90)) == i
    opencv = read_video(path, 10, backend="opencv")
    assert opencv.info.rotation == cw and _same(opencv.frames, clip.frames)
    assert probe_video(path).rotation == cw


@pytest.mark.parametrize(
    ("ext", "codec"), [("mkv", "libx264"), ("mp4", "libx264"), ("webm", "libvpx-vp9")]
)
def test_variable_frame_rate_indexes_by_presentation_order(
    synth_dir: Path, ext: str, codec: str
) -> None:
    gaps = np.random.default_rng(0).choice([1, 2, 5, 13, 40], size=60)
    pts = [0, *np.cumsum(gaps)[:-1].tolist()]
    path = encode_video(
        synth_dir / f"vfr.{ext}",
        codec=codec,
        frames=60,
        pts=[int(p) for p in pts],
        time_base=Fraction(1, 100),
        gop=12,
    )
    full = [frame for _, frame in iter_frames(path)]
    assert [read_index(f) for f in full] == list(range(60))
    clip = read_video(path, 9, sampling="uniform")
    assert clip.indices == sample_indices(60, 9, "uniform")
    assert [read_index(f) for f in clip.frames] == clip.indices
    assert _same(clip.frames, [full[i] for i in clip.indices])
    assert clip.info.duration_s is not None and abs(clip.info.duration_s - pts[-1] / 100) < 0.5


def test_frames_are_bgr(synth_dir: Path) -> None:
    path = encode_video(synth_dir / "bgr.mp4", codec="libx264", frames=3, pix_fmt="yuv444p")
    for backend in ("pyav", "opencv"):
        frame = read_video(path, 1, backend=backend).frames[0]
        blue, green, red = frame[2, 2].astype(int)  # the corner square is pure red
        assert red > 200 and blue < 40 and green < 40, backend


def test_iter_frames_yields_every_frame(synth_dir: Path) -> None:
    path = encode_video(synth_dir / "iter.webm", codec="libvpx-vp9", frames=25)
    for backend in ("pyav", "opencv"):
        got = list(iter_frames(path, backend=backend))
        assert [i for i, _ in got] == list(range(25))
        assert [read_index(f) for _, f in got] == list(range(25))


def test_threads_option_is_validated_and_used(synth_dir: Path) -> None:
    path = encode_video(synth_dir / "threads.mp4", codec="libx264", frames=30)
    clips = [read_video(path, 30, threads=t) for t in (0, 1, 2)]
    clips += [read_video(path, 30, backend="opencv", threads=t) for t in (1, 2)]
    assert all(_same(clips[0].frames, c.frames) for c in clips)
    for bad in (-1, 1.5, "2"):
        with pytest.raises(InvalidInputError, match="threads"):
            read_video(path, 3, threads=bad)  # type: ignore[arg-type]


def test_threads_reach_the_decoder(synth_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = encode_video(synth_dir / "threads2.mp4", codec="libx264", frames=5)
    seen = []
    real_pick = pyav_session._PyAVSession._pick_stream

    def spy(self, threads):
        stream = real_pick(self, threads)
        seen.append((stream.codec_context.thread_count, stream.codec_context.thread_type))
        return stream

    monkeypatch.setattr(pyav_session._PyAVSession, "_pick_stream", spy)
    read_video(path, 2, threads=3)
    assert seen[-1][0] == 3 and "AUTO" in str(seen[-1][1])  # frame + slice threading


# ------------------------------------------------------------------- one open for the first N


def _count_opens(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    opened: list[str] = []
    real_open = av.open

    def spy(file, *args, **kwargs):
        opened.append(str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(av, "open", spy)
    return opened


@pytest.mark.parametrize("threads", [1, 0, 8])
def test_first_n_opens_the_file_once_and_decodes_the_same_frames(
    synth_dir: Path, monkeypatch: pytest.MonkeyPatch, threads: int
) -> None:
    path = encode_video(synth_dir / "once.mp4", codec="libx264", frames=60, max_b_frames=3)
    full = [frame for _, frame in iter_frames(path)]
    opened = _count_opens(monkeypatch)
    for n in (1, 10, 59):
        opened.clear()
        clip = read_video(path, n, threads=threads)
        assert opened == [str(path)]  # the demux pass's packets were decoded, no second open
        assert clip.indices == list(range(n)) and _same(clip.frames, full[:n])
        assert clip.info.frame_count == 60 and clip.warnings == ()


@pytest.mark.parametrize("threads", [1, 4])
def test_first_n_goes_on_demuxing_when_the_kept_packets_run_out(
    synth_dir: Path, monkeypatch: pytest.MonkeyPatch, threads: int
) -> None:
    # With no slack, the N kept packets give fewer than N frames (B-frames are reordered): the
    # reader opens the file again and feeds the decoder the packets after the kept ones, so it
    # neither stops short nor decodes the kept packets twice.
    path = encode_video(synth_dir / "slack.mp4", codec="libx264", frames=40, max_b_frames=3)
    full = [frame for _, frame in iter_frames(path)]
    with_slack = read_video(path, 10, threads=1)
    monkeypatch.setattr(pyav_backend, "_REPLAY_SLACK", 0)
    opened = _count_opens(monkeypatch)
    clip = read_video(path, 10, threads=threads)
    assert len(opened) == 2
    assert clip.indices == list(range(10)) and _same(clip.frames, full[:10])
    assert clip.warnings == ()
    if threads == 1:  # single-threaded decoding sends a fixed number of packets
        assert clip.frames_decoded == with_slack.frames_decoded
    assert clip.frames_decoded < 10 + 16


def test_first_n_of_a_short_video_decodes_every_kept_packet(
    synth_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = encode_video(synth_dir / "short.mp4", codec="libx264", frames=12, max_b_frames=3)
    full = [frame for _, frame in iter_frames(path)]
    opened = _count_opens(monkeypatch)
    clip = read_video(path, 100)
    assert opened == [str(path)]  # the whole stream was kept: drained, not demuxed again
    assert clip.indices == list(range(12)) and _same(clip.frames, full)
    assert any("asked for 100 frames" in w for w in clip.warnings)


# --------------------------------------------------------------------------- backend choice


def test_auto_uses_opencv_when_pyav_is_missing(
    synth_dir: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    path = encode_video(synth_dir / "nopyav.mp4", codec="libx264", frames=10)
    real_import = common._import

    def no_av(module: str, what: str):
        if module == "av":
            raise MissingDependencyError("No module named 'av'")
        return real_import(module, what)

    monkeypatch.setattr(pyav_backend, "_import", no_av)
    with caplog.at_level(logging.WARNING, logger="preprocess.video"):
        clip = read_video(path, 4)
    assert clip.backend == "opencv" and clip.indices == [0, 1, 2, 3]
    assert "PyAV is not available" in caplog.text and "No module named 'av'" in caplog.text
    with pytest.raises(MissingDependencyError):
        read_video(path, 4, backend="pyav")


def test_auto_uses_opencv_when_pyav_cannot_open(
    synth_dir: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    path = encode_video(synth_dir / "pyavfails.mp4", codec="libx264", frames=10)

    def fail(self, av, path, threads):
        raise common._CannotOpenError("simulated: no demuxer")

    monkeypatch.setattr(pyav_session._PyAVSession, "__init__", fail)
    with caplog.at_level(logging.WARNING, logger="preprocess.video"):
        clip = read_video(path, 3, sampling="uniform")
    assert clip.backend == "opencv" and len(clip.frames) == 3
    assert "PyAV cannot open" in caplog.text and "simulated: no demuxer" in caplog.text


def test_unknown_options_are_rejected_up_front(synth_dir: Path) -> None:
    path = encode_video(synth_dir / "opts.mp4", codec="libx264", frames=3)
    with pytest.raises(InvalidInputError, match="supported values are 'auto', 'pyav', 'opencv'"):
        read_video(path, 3, backend="ffmpeg")
    with pytest.raises(InvalidInputError, match="supported values are 'first', 'uniform'"):
        read_video(path, 3, sampling="random")
    for n in (0, -5):
        with pytest.raises(InvalidInputError, match="positive integer"):
            read_video(path, n)


def test_importing_the_module_loads_no_decoder() -> None:
    code = "import sys, preprocess.video; print('av' in sys.modules, 'cv2' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert out.stdout.split() == ["False", "False"]


# --------------------------------------------------------------------------- bad inputs


def _cut(src: Path, dst: Path, fraction: float = 0.5) -> Path:
    data = src.read_bytes()
    dst.write_bytes(data[: int(len(data) * fraction)])
    return dst


def _bad_file(tmp: Path, kind: str) -> tuple[Path, str]:
    """A bad input and a word its error message must contain."""
    if kind == "zero_bytes":
        (tmp / "empty.mp4").write_bytes(b"")
        return tmp / "empty.mp4", "empty (0 bytes)"
    if kind == "text":
        (tmp / "notes.mp4").write_text("these are not the frames you are looking for\n" * 40)
        return tmp / "notes.mp4", "text file"
    if kind == "html":
        (tmp / "page.mp4").write_text("<!DOCTYPE html><html><body>404 Not Found</body></html>")
        return tmp / "page.mp4", "HTML"
    if kind == "jpeg":
        frame = av.VideoFrame.from_ndarray(pattern(5, 64, 48), format="bgr24")
        frame.to_image().save(tmp / "photo.mp4", format="JPEG")
        return tmp / "photo.mp4", "JPEG image"
    if kind == "truncated_mp4":
        full = encode_video(tmp / "whole.mp4", codec="libx264", frames=60)
        return _cut(full, tmp / "cut.mp4"), "moov"
    if kind in ("audio_m4a", "audio_wav", "audio_mp3"):
        codec, ext = {
            "audio_m4a": ("aac", "m4a"),
            "audio_wav": ("pcm_s16le", "wav"),
            "audio_mp3": ("libmp3lame", "mp3"),
        }[kind]
        if not _encoder_available(codec):
            pytest.skip(f"this FFmpeg build has no {codec} encoder")
        return encode_audio(tmp / f"sound.{ext}", codec=codec), "audio"
    if kind == "directory":
        return tmp, "directory"
    raise AssertionError(kind)


BAD_KINDS = [
    "zero_bytes",
    "text",
    "html",
    "jpeg",
    "truncated_mp4",
    "audio_m4a",
    "audio_wav",
    "audio_mp3",
    "directory",
]


@pytest.mark.parametrize("backend", ["auto", "pyav", "opencv"])
@pytest.mark.parametrize("kind", BAD_KINDS)
def test_bad_input_raises_invalid_video_error(tmp_path: Path, kind: str, backend: str) -> None:
    path, word = _bad_file(tmp_path, kind)
    for call in (
        lambda: read_video(path, 5, backend=backend),
        lambda: read_video(path, 5, sampling="uniform", backend=backend),
        lambda: probe_video(path, backend=backend),
        lambda: iter_frames(path, backend=backend),
    ):
        with pytest.raises(InvalidVideoError) as info:
            call()
        message = str(info.value)
        assert str(path) in message
        if backend != "opencv" or kind not in ("audio_m4a", "audio_mp3"):
            assert word.lower() in message.lower(), message
        assert isinstance(info.value, ValueError) and isinstance(info.value, EngineError)


@pytest.mark.parametrize("backend", ["auto", "pyav", "opencv"])
def test_missing_file_raises_not_found(tmp_path: Path, backend: str) -> None:
    path = tmp_path / "nowhere.mp4"
    with pytest.raises(ArtifactNotFoundError, match=r"nowhere\.mp4") as info:
        read_video(path, 3, backend=backend)
    assert isinstance(info.value, FileNotFoundError)


def test_truncated_mp4_moov_at_start_gives_partial_frames_and_warnings(synth_dir: Path) -> None:
    full = encode_video(
        synth_dir / "faststart.mp4",
        codec="libx264",
        frames=60,
        container_options={"movflags": "faststart"},
    )
    path = _cut(full, synth_dir / "faststart_cut.mp4")
    clip = read_video(path, 60)
    assert 0 < len(clip.frames) < 60
    assert [read_index(f) for f in clip.frames] == clip.indices
    assert any("truncated" in w for w in clip.warnings), clip.warnings
    uniform = read_video(path, 10, sampling="uniform")
    assert [read_index(f) for f in uniform.frames] == uniform.indices


@pytest.mark.parametrize(
    ("name", "codec"), [("cut.mkv", "libx264"), ("cut.webm", "libvpx-vp9"), ("cut.ts", "libx264")]
)
def test_truncated_stream_gives_partial_frames_and_a_warning(
    synth_dir: Path, name: str, codec: str
) -> None:
    full = encode_video(synth_dir / f"whole_{name}", codec=codec, frames=60)
    path = _cut(full, synth_dir / name)
    # What survives of the file is its video: frames missing from it (e.g. a B-frame whose
    # packet was cut away) shift the indices, exactly as in a full decode of the cut file.
    full_cut = [frame for _, frame in iter_frames(path)]
    shown = [read_index(f) for f in full_cut]
    assert 10 < len(full_cut) < 60 and shown == sorted(set(shown))
    for sampling in SAMPLING_MODES:
        clip = read_video(path, 60, sampling=sampling)
        assert clip.indices == list(range(len(full_cut)))
        assert _same(clip.frames, full_cut)
        assert any("truncated" in w for w in clip.warnings), clip.warnings
        assert any("asked for 60 frames" in w for w in clip.warnings)


@pytest.mark.parametrize("backend", ["pyav", "opencv"])
def test_one_frame_video_is_valid(synth_dir: Path, backend: str) -> None:
    path = encode_video(synth_dir / "one.mp4", codec="libx264", frames=1)
    for sampling in SAMPLING_MODES:
        clip = read_video(path, 20, sampling=sampling, backend=backend)
        assert clip.indices == [0] and len(clip.frames) == 1
        assert read_index(clip.frames[0]) == 0
        assert any("asked for 20 frames" in w for w in clip.warnings)
    assert probe_video(path, backend=backend).frame_count == 1
