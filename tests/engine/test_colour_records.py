"""The record says what the decoder converted: HDR and wide-gamut video reach the model as
8-bit BT.709 SDR, the source's colour description is recorded, and ``colour="keep"`` skips the
conversion (issue 15)."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from engine.api import Engine

FFMPEG = shutil.which("ffmpeg")


@pytest.fixture(scope="module")
def pq_clip(shared_dir, tmp_path_factory):
    if FFMPEG is None:
        pytest.skip("needs Debian's ffmpeg CLI (apt-get install -y ffmpeg)")
    out = tmp_path_factory.mktemp("pq") / "pq.mp4"
    proc = subprocess.run(
        [FFMPEG, "-hide_banner", "-loglevel", "error", "-y", "-i",
         str(shared_dir / "videos" / "pair480p_real.mp4"), "-frames:v", "4", "-vf",
         "scale=426:240,zscale=tin=bt709:min=bt709:pin=bt709:rin=tv:t=smpte2084:m=bt2020nc:p=bt2020:"
         "r=tv:npl=203,format=yuv420p10le",
         "-c:v", "libx265", "-x265-params", "log-level=none", "-crf", "10", "-color_primaries",
         "bt2020", "-colorspace", "bt2020nc", "-color_trc", "smpte2084", "-an", str(out)],
        capture_output=True, text=True,
    )  # fmt: skip
    if proc.returncode:
        pytest.skip(f"ffmpeg could not make a PQ clip: {proc.stderr[-300:]}")
    return out


@pytest.mark.slow
def test_hdr_clip_record_names_the_source_colour_and_the_tone_mapping(
    pq_clip, tiny_model, models_dir
):
    engine = Engine.load(tiny_model, backend="ort", models_dir=models_dir)
    pred = engine.predict(pq_clip, seq_len=4)
    assert pred.ok and pred.colour["conversion"] == "tone-map"
    assert pred.colour["source"]["transfer"] == "smpte2084"
    assert pred.colour["source"]["bit_depth"] == 10
    assert any(w.startswith("colour: HDR video") for w in pred.warnings)
    kept = Engine.load(tiny_model, backend="ort", models_dir=models_dir, colour="keep")
    raw = kept.predict(pq_clip, seq_len=4)
    assert raw.colour["conversion"] == "kept" and raw.p_fake != pred.p_fake
    assert any("kept as decoded" in w for w in raw.warnings)


def test_sdr_clip_record_says_nothing_was_converted(tiny_engine, shared_dir):
    pred = tiny_engine.predict(shared_dir / "videos" / "pair480p_real.mp4", seq_len=2)
    assert pred.colour["conversion"] == "none"
    assert not any(w.startswith("colour:") for w in pred.warnings)
