"""The whole video as a timeline (issue 32): sampling by time, the segment rule, a spliced
real / manipulated / real video whose manipulated part the timeline finds within one sampling
step of the cuts, and per-frame scores equal to what `dfe predict` gives for the same frames."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from engine.timeline import find_segments, moving_mean, time_sampler

FFMPEG = shutil.which("ffmpeg")
needs_cli = pytest.mark.skipif(FFMPEG is None, reason="needs Debian's ffmpeg CLI (make setup)")


def test_time_sampler_keeps_the_first_frame_at_each_step():
    keep = time_sampler(2.0)
    times = [i / 24 for i in range(60)]  # 24 fps for 2.5 s
    kept = [i for i, t in enumerate(times) if keep(i, t)]
    assert kept == [0, 12, 24, 36, 48]
    keep = time_sampler(2.0)  # 29.97 fps: frame 15 is the first at or after 0.5 s
    kept = [i for i in range(60) if keep(i, i * 1001 / 30000)]
    assert kept == [0, 15, 30, 45]
    with pytest.raises(ValueError, match="timeline-fps"):
        time_sampler(0)


def test_segments_follow_the_documented_rule():
    step = 0.5
    times = [i * step for i in range(20)]
    p = [0.1] * 6 + [0.9] * 7 + [0.1] * 7  # manipulated from 3.0 s to 6.5 s
    assert moving_mean(times, [None, 1.0, 0.0], 1.0) == [None, 0.5, 0.5]
    (seg,) = find_segments(times, p, fake_at=0.6, real_below=0.4, step=step)
    start, end, score = seg
    assert abs(start - 3.0) <= step and abs(end - 6.5) <= step and score > 0.8
    # too short, and gaps that close a run
    assert find_segments(times, [0.1] * 9 + [0.9] + [0.1] * 10, fake_at=0.6, real_below=0.4,
                         step=step) == []  # fmt: skip
    gap = [0.9] * 5 + [None] * 4 + [0.9] * 5 + [0.1] * 6
    assert len(find_segments(times, gap, fake_at=0.6, real_below=0.4, step=step)) == 2
    assert find_segments(times, [None] * 20, fake_at=0.6, real_below=0.4, step=step) == []


def _colour_model(directory: Path, k: float, c: float) -> Path:
    """A tiny model whose logit margin (FAKE - REAL) is ``k * (G - (B + R) / 2) + c`` of the
    crop's normalised channel means: its score follows how green the face is."""
    from tests.tiny_model import make_tiny_model

    conv_w = np.zeros((8, 3, 1, 1), np.float32)
    conv_w[0, :, 0, 0] = [0.0, 1.0, 0.0]  # G (channels in BGR order)
    conv_w[1, :, 0, 0] = [0.5, 0.0, 0.5]  # (B + R) / 2
    fc_w = np.zeros((2, 8), np.float32)
    fc_w[0, 0], fc_w[0, 1] = k, -k
    weights = {"conv_w": conv_w, "conv_b": np.zeros(8, np.float32), "fc_w": fc_w,
               "fc_b": np.array([c, 0.0], np.float32)}  # fmt: skip
    return make_tiny_model(directory, weights=weights)


@pytest.fixture(scope="module")
def spliced(tmp_path_factory, shared_dir) -> tuple[Path, Path, tuple[float, float]]:
    """Real (0-3 s), manipulated (3-6.5 s: the pair's fake clip, its colours pushed towards
    green), real again (6.5-9.5 s), one continuous shot of the same man; and the greener
    manipulated footage alone."""
    if FFMPEG is None:
        pytest.skip("needs Debian's ffmpeg CLI (make setup)")
    d = tmp_path_factory.mktemp("spliced")
    real = str(shared_dir / "videos" / "pair480p_real.mp4")
    fake = str(shared_dir / "videos" / "pair480p_fake.mp4")
    tint = "colorchannelmixer=gg=1.25"
    same = "setpts=PTS-STARTPTS,format=yuv420p,setsar=1"
    graph = (f"[0:v]split[r1][r2];[r1]trim=0:3,{same}[a];"
             f"[1:v]trim=3:6.5,{tint},{same}[b];"
             f"[r2]trim=6.5:9.5,{same}[c];[a][b][c]concat=n=3:v=1[v]")  # fmt: skip
    out = d / "spliced.mp4"
    subprocess.run([FFMPEG, "-loglevel", "error", "-y", "-i", real, "-i", fake,
                    "-filter_complex", graph, "-map", "[v]", "-c:v", "libx264", "-pix_fmt",
                    "yuv420p", str(out)], check=True, timeout=300)  # fmt: skip
    green = d / "green.mp4"
    subprocess.run([FFMPEG, "-loglevel", "error", "-y", "-ss", "3", "-t", "2", "-i", fake, "-vf",
                    tint, "-c:v", "libx264", "-pix_fmt", "yuv420p", str(green)],
                   check=True, timeout=300)  # fmt: skip
    return out, green, (3.0, 6.5)


@needs_cli
def test_a_spliced_manipulation_is_found_within_one_step_of_the_cuts(
    spliced, tmp_path, models_dir, shared_dir
):
    from engine.api import Engine

    video, green, (cut_in, cut_out) = spliced
    # the score's scale, from the model's margins on real and on greener footage
    probe = Engine.load(_colour_model(tmp_path / "probe", 1.0, 0.0), backend="ort",
                        models_dir=models_dir, download=False)  # fmt: skip

    def margins(path: Path) -> np.ndarray:
        line = probe.timeline(str(path))
        p = np.array([v for v in line.people[0].p_fake if v is not None])
        return np.log(p / (1 - p))

    m_real = margins(shared_dir / "videos" / "pair480p_real.mp4")
    m_fake = margins(green)
    assert m_fake.min() > m_real.max()  # the property tells the two apart
    k = 6.0 / (m_fake.mean() - m_real.mean())
    c = -k * (m_fake.mean() + m_real.mean()) / 2  # real about p 0.05, manipulated 0.95
    engine = Engine.load(_colour_model(tmp_path / "colour", k, c), backend="ort",
                         models_dir=models_dir, download=False, timeline=True)  # fmt: skip
    pred = engine.predict(str(video), seq_len=20)  # the first second: real
    line = pred.timeline
    step = 1 / line["fps"]
    assert line["fps"] == 2.0 and len(line["people"]) == 1
    assert line["frames"] == len(line["times"]) >= 18
    (seg,) = pred.segments  # the real parts give no segment
    print(f"spliced: cuts {cut_in}-{cut_out} s, segment {seg} (step {step} s)")
    assert abs(seg["start"] - cut_in) <= step and abs(seg["end"] - cut_out) <= step, seg
    assert seg["score"] > 0.9 and seg["person"] == line["people"][0]["track"]
    # the first frames alone look real; the segment makes the video's verdict FAKE
    assert pred.p_fake < 0.2
    assert pred.verdict == "FAKE" and pred.reasons == ["MANIPULATED_SEGMENT"]
    assert any(w.startswith("MANIPULATED_SEGMENT") for w in pred.warnings)


def test_timeline_scores_equal_dfe_predict_for_the_same_frames(tiny_model, models_dir,
                                                               shared_dir, tmp_path):  # fmt: skip
    from engine.cli import main

    video = shared_dir / "videos" / "dfdc_like_fake.mp4"  # 29.97 fps: frames 0, 15, 30, 45
    out = tmp_path / "r.jsonl"
    common = ["--model", str(tiny_model), "--backend", "ort", "--models", models_dir,
              "--no-download", "--no-progress"]  # fmt: skip
    assert main(["predict", str(video), "--seq-len", "60", "--out", str(out), *common]) == 0
    (plain,) = map(json.loads, out.read_text().splitlines())
    out2 = tmp_path / "t.jsonl"
    assert main(["predict", str(video), "--seq-len", "4", "--timeline", "--out", str(out2),
                 *common]) == 0  # fmt: skip
    (rec,) = map(json.loads, out2.read_text().splitlines())
    line = rec["timeline"]
    (person,) = line["people"]
    by_index = dict(zip(plain["frame_indices"], plain["frame_p_fake"], strict=True))
    boxes = dict(zip(plain["frame_indices"], plain["boxes"], strict=True))
    shared = [i for i in line["frame_indices"] if i in by_index]
    assert shared == [0, 15, 30, 45]
    for pos, idx in enumerate(line["frame_indices"][:4]):
        assert person["boxes"][pos] == boxes[idx]
        assert person["p_fake"][pos] == pytest.approx(by_index[idx], abs=1e-6)
    assert rec["provenance"]["settings"]["timeline"] is True
    assert rec["provenance"]["settings"]["timeline_fps"] == 2.0


def test_sampled_times_are_finite_and_increasing_to_the_last_frame(shared_dir):
    """Frames the decoder drains at the end of a stream come without a timestamp (NaN in
    PyAV for the DFDC clips): they get one frame's spacing after the last, never NaN, so a
    record is valid JSON and the sampler keeps one frame per step to the end."""
    from preprocess.video import sample_frames

    for name in ("dfdc_like_fake.mp4", "pair480p_real.mp4"):
        got = [(i, t) for i, t, _ in sample_frames(shared_dir / "videos" / name,
                                                    time_sampler(2.0))]  # fmt: skip
        times = [t for _, t in got]
        assert all(np.isfinite(times)) and times == sorted(times) and len(set(times)) == len(got)
        assert 9.4 <= times[-1] <= 10.2 and len(got) in (20, 21)
        json.dumps(times, allow_nan=False)
