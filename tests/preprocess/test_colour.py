"""Colour as a player shows it: wide-gamut and HDR video reach the model as 8-bit BT.709 SDR.

Test videos are made from a shared clip with Debian's ``ffmpeg`` CLI (tests needing it skip
without it): an SDR BT.709 source, its BT.2020 / Display P3 versions made with FFmpeg's
``colorspace`` filter, and PQ / HLG versions made with zimg (``zscale``, HDR reference white at
203 cd/m^2, ITU-R BT.2408). Conversions are compared with the SDR source and with the CLI's own
conversion of the same frames (``colorspace`` for SDR, ``zscale`` for HDR), by mean absolute
difference in 8-bit levels.
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
from preprocess.colour import COLOUR_MODES, check_colour, plan_conversion
from preprocess.video import iter_frames, read_video
from tests.preprocess._synth import encode_video

REPO = Path(__file__).resolve().parents[2]
SHARED = Path(os.environ.get("DFE_SHARED", REPO.parent / "shared"))
SOURCE_CLIP = SHARED / "videos" / "pair480p_real.mp4"
REAL_CLIPS = sorted((SHARED / "videos").glob("*.mp4")) if (SHARED / "videos").is_dir() else []
FFMPEG = shutil.which("ffmpeg")
FRAMES = 12
SIZE = (256, 144)


def _mad(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    """Mean absolute difference in 8-bit levels over paired frames."""
    assert len(a) == len(b)
    return float(np.mean([np.abs(x.astype(int) - y.astype(int)).mean() for x, y in zip(a, b)]))


# --------------------------------------------------------------------------- options and plans


def test_check_colour_accepts_the_modes_and_rejects_others(tmp_path: Path) -> None:
    assert COLOUR_MODES == ("bt709", "keep")
    assert [check_colour(m) for m in COLOUR_MODES] == list(COLOUR_MODES)
    path = encode_video(tmp_path / "opts.mp4", codec="libx264", frames=3)
    for call in (
        lambda: read_video(path, 3, colour="srgb"),
        lambda: iter_frames(path, colour="raw"),
    ):
        with pytest.raises(InvalidInputError, match="supported values are 'bt709', 'keep'"):
            call()


def _frame(pix_fmt: str, primaries: int, trc: int, matrix: int, rng: int) -> av.VideoFrame:
    frame = av.VideoFrame(64, 48, pix_fmt)
    frame.color_primaries, frame.color_trc, frame.colorspace, frame.color_range = (
        primaries,
        trc,
        matrix,
        rng,
    )
    return frame


# (pix_fmt, primaries, transfer, matrix, range) as FFmpeg's enum values, expected kind, and
# a piece of the filter chain. 1 = BT.709, 2 = unspecified, 6 = SMPTE 170M, 9 = BT.2020
# (matrix: BT.2020 NCL), 12 = SMPTE 432 (Display P3), 13 = sRGB, 14 = BT.2020 10-bit,
# 16 = PQ, 18 = HLG, 8 = linear; range 1 = tv, 0 = unspecified.
PLANS = [
    ("yuv420p", (1, 1, 1, 1), "none", ""),
    ("yuv420p", (2, 2, 2, 0), "none", ""),  # untagged
    ("yuv420p", (6, 6, 6, 1), "none", ""),  # BT.601
    ("yuv420p10le", (1, 1, 1, 1), "none", ""),  # 10-bit SDR BT.709: only the bit depth drops
    ("yuv420p10le", (9, 14, 9, 1), "gamut", "colorspace=all=bt709:iprimaries=bt2020"),
    ("yuv420p", (12, 13, 1, 1), "gamut", "colorspace=all=bt709:iprimaries=smpte432"),
    ("yuv422p10le", (9, 16, 9, 1), "tone-map", "in_transfer=smpte2084"),
    ("yuv420p10le", (2, 18, 2, 1), "tone-map", "in_primaries=bt2020:in_transfer=arib-std-b67"),
    ("gbrp10le", (9, 14, 0, 2), "gamut", "scale=in_primaries=bt2020"),
    ("yuv420p", (1, 8, 1, 1), "transfer", "in_transfer=linear"),
]


@pytest.mark.parametrize(("pix_fmt", "tags", "kind", "piece"), PLANS)
def test_plan_conversion_picks_ffmpegs_filter_for_each_kind(
    pix_fmt: str, tags: tuple[int, int, int, int], kind: str, piece: str
) -> None:
    frame = _frame(pix_fmt, *tags)
    plan = plan_conversion(frame, "bt709")
    assert plan.kind == kind and plan.mode == "bt709"
    assert plan.source.pix_fmt == pix_fmt
    if kind == "none":
        assert plan.filters == "" and plan.warning is None and not plan.converted
        keep = plan_conversion(frame, "keep")
        assert keep.kind == "none" and keep.warning is None
        return
    assert piece in plan.filters and plan.converted
    out_fmt = {"yuv420p": "yuv420p", "yuv422p": "yuv422p", "gbrp10le": "bgr24"}
    expected = next(v for k, v in out_fmt.items() if pix_fmt.startswith(k))
    assert plan.filters.endswith(f"format={expected}")
    assert plan.warning is not None and plan.warning.startswith("colour: ")
    assert "8-bit BT.709 SDR" in plan.warning
    if kind == "tone-map":
        assert "intent=relative_colorimetric" in plan.filters and "tone-mapped" in plan.warning
    keep = plan_conversion(frame, "keep")
    assert keep.kind == "kept" and keep.filters == "" and not keep.converted
    assert keep.warning is not None and "colour='keep'" in keep.warning


def test_plan_conversion_records_assumed_fields() -> None:
    plan = plan_conversion(_frame("yuv420p10le", 2, 18, 2, 0), "bt709")  # HLG, nothing else
    assert plan.assumed == ("primaries=bt2020", "matrix=bt2020nc", "range=tv")
    assert plan.source.primaries == "unknown" and plan.source.transfer == "arib-std-b67"
    assert plan.warning is not None and "unspecified primaries=bt2020" in plan.warning


@pytest.mark.skipif(not REAL_CLIPS, reason=f"no test videos under {SHARED}")
@pytest.mark.parametrize("path", REAL_CLIPS, ids=lambda p: p.stem)
def test_sdr_clips_are_not_converted(path: Path) -> None:
    """8-bit SDR video: the default gives exactly the raw decode (and says nothing)."""
    clip = read_video(path, 3)
    keep = read_video(path, 3, colour="keep")
    assert all(np.array_equal(a, b) for a, b in zip(clip.frames, keep.frames, strict=True))
    assert clip.colour is not None and clip.colour.kind == "none" and not clip.colour.converted
    assert clip.info.colour is not None and clip.info.colour.bit_depth == 8
    assert not any(w.startswith("colour:") for w in clip.warnings + keep.warnings)


# --------------------------------------------------------------------------- against FFmpeg


def _ffmpeg(*args: str | Path) -> None:
    out = subprocess.run(
        [FFMPEG, "-hide_banner", "-loglevel", "error", "-y", *map(str, args)],
        capture_output=True,
        text=True,
    )
    if out.returncode:
        pytest.skip(f"Debian's ffmpeg could not make the test video: {out.stderr.strip()[-300:]}")


def _cli_frames(path: Path, vf: str, size: tuple[int, int]) -> list[np.ndarray]:
    """BGR frames of ``path`` after the CLI's filter chain ``vf`` (FFmpeg's own conversion)."""
    command = f"-v error -i {path} -vf {vf} -fps_mode passthrough -f rawvideo -pix_fmt bgr24 -"
    out = subprocess.run([FFMPEG, *command.split()], capture_output=True, check=True)
    width, height = size
    return list(np.frombuffer(out.stdout, np.uint8).reshape(-1, height, width, 3))


HEVC = "-c:v libx265 -x265-params log-level=none -crf 6"
BT2020 = "-color_primaries bt2020 -colorspace bt2020nc"
VARIANTS = {
    # name: (filter chain applied to the SDR source, encoder arguments with the colour tags)
    "bt2020_10.mp4": (
        "colorspace=all=bt2020:iall=bt709:format=yuv420p10",
        f"{HEVC} -pix_fmt yuv420p10le {BT2020} -color_trc bt2020-10",
    ),
    "bt2020_12.mkv": (
        "colorspace=all=bt2020:iall=bt709:format=yuv420p12",
        f"{HEVC} -pix_fmt yuv420p12le {BT2020} -color_trc bt2020-12",
    ),
    "p3.mp4": (
        "colorspace=iall=bt709:primaries=smpte432:trc=srgb:space=bt709:format=yuv420p",
        "-c:v libx264 -crf 8 -color_primaries smpte432 -color_trc iec61966-2-1 -colorspace bt709",
    ),
    "pq.mp4": (
        "zscale=t=smpte2084:m=bt2020nc:p=bt2020:r=tv:npl=203,format=yuv420p10le",
        f"{HEVC} {BT2020} -color_trc smpte2084",
    ),
    "hlg.mp4": (
        "zscale=t=arib-std-b67:m=bt2020nc:p=bt2020:r=tv:npl=203,format=yuv420p10le",
        f"{HEVC} {BT2020} -color_trc arib-std-b67",
    ),
    # The issue's recipe: BT.2020 SDR pixels tagged HLG (the signal is not re-encoded as HLG).
    "issue_hlg.mov": (
        "colorspace=all=bt2020:iall=bt709:format=yuv420p10",
        f"{HEVC} -pix_fmt yuv420p10le {BT2020} -color_trc arib-std-b67 -tag:v hvc1",
    ),
}


@pytest.fixture(scope="module")
def colour_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if FFMPEG is None or not SOURCE_CLIP.is_file():
        pytest.skip("needs Debian's ffmpeg CLI (apt-get install -y ffmpeg) and the shared clips")
    folder = tmp_path_factory.mktemp("colour")
    _ffmpeg(
        "-i", SOURCE_CLIP, "-vf", f"scale={SIZE[0]}:{SIZE[1]}", "-frames:v", FRAMES,
        "-c:v", "libx264", "-crf", "8", "-color_primaries", "bt709", "-color_trc", "bt709",
        "-colorspace", "bt709", "-an", folder / "sdr.mp4",
    )  # fmt: skip
    return folder


@pytest.fixture(scope="module")
def variant(colour_dir: Path):
    def make(name: str) -> Path:
        path = colour_dir / name
        if not path.exists():
            vf, args = VARIANTS[name]
            _ffmpeg("-i", colour_dir / "sdr.mp4", "-vf", vf, *args.split(), "-an", path)
        return path

    return make


def _sdr(colour_dir: Path) -> list[np.ndarray]:
    return read_video(colour_dir / "sdr.mp4", FRAMES).frames


@pytest.mark.parametrize("name", ["bt2020_10.mp4", "bt2020_12.mkv", "p3.mp4"])
def test_wide_gamut_sdr_matches_ffmpeg_colorspace(colour_dir: Path, variant, name: str) -> None:
    path = variant(name)
    clip = read_video(path, FRAMES)
    keep = read_video(path, FRAMES, colour="keep")
    assert clip.colour is not None and clip.colour.kind == "gamut"
    assert clip.colour.filters.startswith("colorspace=all=bt709")
    assert clip.info.colour == clip.colour.source
    assert clip.info.colour.wide_gamut and not clip.info.colour.hdr
    assert any(w.startswith("colour: wide-gamut video") for w in clip.warnings)

    ffmpeg = _cli_frames(path, "colorspace=all=bt709:format=yuv420p", SIZE)
    assert _mad(clip.frames, ffmpeg) <= 1.0
    sdr = _sdr(colour_dir)
    assert _mad(clip.frames, sdr) <= 2.0
    assert _mad(keep.frames, sdr) >= _mad(clip.frames, sdr) + 2.0  # the conversion matters


def test_wide_gamut_description_names_bit_depth_and_tags(variant) -> None:
    info = read_video(variant("bt2020_12.mkv"), 1).info
    assert info.colour is not None
    assert (info.colour.primaries, info.colour.transfer, info.colour.matrix) == (
        "bt2020",
        "bt2020-12",
        "bt2020nc",
    )
    assert (info.colour.range, info.colour.bit_depth) == ("tv", 12)


@pytest.mark.slow  # swscale builds its colour-mapping LUT once per colour (seconds)
@pytest.mark.parametrize(
    ("name", "transfer"), [("pq.mp4", "smpte2084"), ("hlg.mp4", "arib-std-b67")]
)
def test_hdr_is_tone_mapped_to_the_sdr_rendering(
    colour_dir: Path, variant, name: str, transfer: str
) -> None:
    path = variant(name)
    clip = read_video(path, FRAMES)
    keep = read_video(path, FRAMES, colour="keep")
    assert clip.colour is not None and clip.colour.kind == "tone-map" and clip.colour.converted
    source = clip.info.colour
    assert source is not None and source.hdr and source.transfer == transfer
    assert (source.primaries, source.matrix, source.bit_depth) == ("bt2020", "bt2020nc", 10)
    assert any("tone-mapped to 8-bit BT.709 SDR" in w for w in clip.warnings), clip.warnings
    assert keep.colour is not None and keep.colour.kind == "kept"
    assert any("colour='keep'" in w for w in keep.warnings)

    sdr = _sdr(colour_dir)
    assert _mad(clip.frames, sdr) <= 5.0  # within a few levels of the SDR grade
    assert _mad(keep.frames, sdr) >= 15.0  # unconverted HDR is far off
    zimg = _cli_frames(path, "zscale=t=bt709:m=bt709:p=bt709:r=tv:npl=203,format=yuv420p", SIZE)
    assert _mad(clip.frames, zimg) <= 5.0  # and of FFmpeg's zimg conversion of the same frames

    # Sampling does not change the pixels: uniform (seeking) and a full decode agree.
    full = [frame for _, frame in iter_frames(path)]
    uniform = read_video(path, 5, sampling="uniform")
    assert all(np.array_equal(full[i], f) for i, f in zip(uniform.indices, uniform.frames))


@pytest.mark.slow
def test_issue_hlg_portrait_is_upright_and_follows_ffmpegs_rendering(variant) -> None:
    """The issue's iPhone-style file: HEVC Main 10, BT.2020, HLG, rotated by its display matrix."""
    landscape = variant("issue_hlg.mov")
    portrait = landscape.with_name("issue_hlg_portrait.mov")
    _ffmpeg("-i", landscape, "-c", "copy", "-metadata:s:v:0", "rotate=270", portrait)
    flat = read_video(landscape, FRAMES)
    turned = read_video(portrait, FRAMES)
    assert turned.info.rotation in (90, 270) and turned.frames[0].shape == (SIZE[0], SIZE[1], 3)
    k = -1 if turned.info.rotation == 90 else 1  # np.rot90 turns counter-clockwise
    assert all(np.array_equal(np.rot90(a, k=k), b) for a, b in zip(flat.frames, turned.frames))
    assert turned.colour is not None and turned.colour.kind == "tone-map"
    # The tag says HLG, so a player (zimg here) shows the pixels as HLG: brighter than the SDR
    # source they were made from, with everything above 75 % signal (reference white) clipped.
    # Ours follows the player; only the clipped highlights differ (swscale clips keeping the
    # hue, zimg clips each channel), so they are left out of the comparison.
    vf = "zscale=t=bt709:m=bt709:p=bt709:r=tv:npl=203,format=yuv420p"
    zimg = np.stack(_cli_frames(landscape, vf, SIZE)).astype(int)
    ours = np.stack(flat.frames).astype(int)
    unclipped = (zimg.max(axis=3) < 250) & (ours.max(axis=3) < 250)
    assert unclipped.mean() > 0.3
    assert np.abs(ours - zimg)[unclipped].mean() <= 5.0


@pytest.mark.slow
def test_colour_keep_gives_the_raw_decode(variant) -> None:
    path = variant("pq.mp4")
    keep = read_video(path, 4, colour="keep")
    with av.open(str(path)) as container:
        raw = [
            f.to_ndarray(format="bgr24", interpolation="BICUBIC")
            for _, f in zip(range(4), container.decode(video=0))
        ]
    assert all(np.array_equal(a, b) for a, b in zip(keep.frames, raw, strict=True))
    streamed = [f for i, f in iter_frames(path, colour="keep") if i < 4]
    assert all(np.array_equal(a, b) for a, b in zip(streamed, raw, strict=True))


def test_colour_change_mid_stream_is_converted_and_reported(colour_dir: Path) -> None:
    """Two transport streams joined with ``cat``: BT.709 SDR, then BT.2020 SDR (8-bit H.264)."""
    sdr, wide = colour_dir / "part_sdr.ts", colour_dir / "part_bt2020.ts"
    _ffmpeg("-i", colour_dir / "sdr.mp4", "-c:v", "libx264", "-crf", "8", sdr)
    _ffmpeg(
        "-i", colour_dir / "sdr.mp4", "-vf", "colorspace=all=bt2020:iall=bt709:format=yuv420p",
        "-c:v", "libx264", "-crf", "8", "-color_primaries", "bt2020", "-color_trc", "bt2020-10",
        "-colorspace", "bt2020nc", wide,
    )  # fmt: skip
    joined = colour_dir / "joined_colour.ts"
    joined.write_bytes(sdr.read_bytes() + wide.read_bytes())
    clip = read_video(joined, 2 * FRAMES)
    assert len(clip.frames) == 2 * FRAMES
    assert clip.colour is not None and clip.colour.kind == "none"  # the first frame's plan
    assert any("changes mid-way" in w and "'gamut'" in w for w in clip.warnings), clip.warnings
    first = read_video(sdr, FRAMES).frames
    second = read_video(wide, FRAMES)
    assert second.colour is not None and second.colour.kind == "gamut"
    assert all(np.array_equal(a, b) for a, b in zip(clip.frames[:FRAMES], first, strict=True))
    assert all(
        np.array_equal(a, b) for a, b in zip(clip.frames[FRAMES:], second.frames, strict=True)
    )
    assert read_video(wide, 2, backend="opencv").colour is None  # OpenCV cannot tell
