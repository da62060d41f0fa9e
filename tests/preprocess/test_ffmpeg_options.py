"""FFmpeg input option names are checked against the FFmpeg build PyAV loaded: FFmpeg itself
ignores a name it does not know, so ``dfe watch --option rtsp_tranport=tcp`` (a typo) or
``--option stimeout=5000000`` (removed in FFmpeg 5) would have had no effect without a word."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest

from core.errors import InvalidInputError
from preprocess.video import ffmpeg_options
from preprocess.video.ffmpeg_options import check_input_options, unknown_input_options

av = pytest.importorskip("av")
REPO = Path(__file__).resolve().parents[2]

#: Input options of each layer ``av.open(options=)`` reaches: the format context, demuxers
#: (RTSP, v4l2, MPEG-TS) and protocols (TCP, HTTP, avio).
KNOWN = [
    "probesize", "analyzeduration", "fflags", "err_detect",  # AVFormatContext
    "rtsp_transport", "input_format", "video_size", "framerate", "scan_all_pmts",  # demuxers
    "timeout", "rw_timeout", "reconnect", "user_agent", "listen", "tcp_nodelay",  # protocols
    # flagged for encoding or not at all, yet FFmpeg sets them on inputs and they act there:
    "blocksize", "fd",  # the file/pipe protocols' (blocksize caps each read)
    "skip_changes", "skip_clear",  # mpegts demuxer's
]  # fmt: skip


def test_input_options_of_every_layer_are_known_and_others_are_not():
    assert unknown_input_options(av, KNOWN) == []
    bad = [
        "rtsp_tranport", "stimeout", "no_such_option", "tcp",  # "tcp": a value, not a name
        "threads", "skip_frame",  # decoder options: PyAV gives them to the demuxer only
        "movflags", "hls_time", "avoid_negative_ts",  # output options (a muxer's, the context's)
        "", "a\0b", "probesize\0x", "\udcff",  # empty, NUL (C would cut it), undecodable
    ]  # fmt: skip
    assert unknown_input_options(av, KNOWN[:3] + bad) == bad


def test_an_unknown_option_is_refused_with_why_or_the_close_names():
    options = {
        "rtsp_tranport": "tcp", "probesize": "32", "stimeout": "5000000", "threads": "2",
        "movflags": "faststart", "pix_fmt": "bgr24", "RTSP_TRANSPORT": "tcp",
    }  # fmt: skip
    with pytest.raises(InvalidInputError) as info:
        check_input_options(av, options, "rtsp://cam")
    message = str(info.value)
    assert message.startswith("rtsp://cam: FFmpeg ")
    assert "'rtsp_tranport' (did you mean rtsp_transport" in message
    assert "'RTSP_TRANSPORT' (did you mean rtsp_transport" in message  # case ignored
    assert "'stimeout' (removed: use timeout" in message
    assert "'threads' (a decoder option" in message
    assert "'movflags' (an output option" in message
    assert "'pix_fmt' (an ffmpeg command-line flag: use pixel_format" in message
    assert "probesize" not in message.split("has no input option")[1]
    assert "would ignore them" in message
    check_input_options(av, {"rtsp_transport": "tcp", "timeout": "2"}, "rtsp://cam")  # no error
    check_input_options(av, {}, "rtsp://cam")


def test_a_missing_protocol_is_named_with_the_ones_there_are():
    assert ffmpeg_options.missing_protocol(av, "tcp://127.0.0.1:9") is None
    assert ffmpeg_options.missing_protocol(av, "rtsp://cam/stream") is None  # its demuxer's
    assert ffmpeg_options.missing_protocol(av, "http://host/x.ts") is None
    message = ffmpeg_options.missing_protocol(av, "nosuchproto://host:1")
    assert "has no 'nosuchproto' protocol" in message and "tcp" in message


def test_a_long_list_of_unknown_names_is_cut():
    with pytest.raises(InvalidInputError) as info:
        check_input_options(av, {f"bogus{i}": "1" for i in range(300)}, "x.mp4")
    message = str(info.value)
    assert "and 290 more" in message and len(message) < 1000


def test_libraries_that_cannot_be_found_are_a_warning_not_a_silent_pass(monkeypatch, caplog):
    monkeypatch.setattr(ffmpeg_options, "_LOOKUP", {})
    monkeypatch.setattr(ffmpeg_options, "_library_paths", lambda av: {})
    with caplog.at_level(logging.WARNING, logger=ffmpeg_options.__name__):
        assert unknown_input_options(av, ["rtsp_tranport"]) is None
        check_input_options(av, {"rtsp_tranport": "tcp"}, "rtsp://cam")  # cannot tell: no error
    assert "cannot be checked" in caplog.text and "check the spelling" in caplog.text


def test_the_libraries_found_are_the_ones_pyav_uses():
    paths = ffmpeg_options._library_paths(av)
    assert set(paths) == {"avformat", "avcodec", "avutil"}
    for name, path in paths.items():
        assert name in path.rsplit("/", 1)[-1]
        assert ffmpeg_options._version(path, name) == av.library_versions[f"lib{name}"]


def test_opencv_s_own_ffmpeg_is_not_taken_for_pyav_s():
    """OpenCV's wheel bundles another FFmpeg; imported after PyAV, its libraries map at lower
    addresses, and taking the first libavformat mapped checked names against a build without
    PyAV's devices (``input_format``, v4l2's, was "unknown" in one full run)."""
    pytest.importorskip("cv2")
    code = (
        "import json, av, cv2\n"
        "from preprocess.video import ffmpeg_options as f\n"
        "print(json.dumps([f._library_paths(av), f.unknown_input_options(av, ['input_format'])]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO
    ).stdout
    paths, unknown = json.loads(out.splitlines()[-1])
    assert unknown == [] and "opencv" not in " ".join(paths.values()).lower()
