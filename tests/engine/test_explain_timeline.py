"""The whole-video timeline in ``dfe explain`` and the job page's helpers (issue 32): the
timeline applied to an explanation, ``timeline.png`` and the segments on stderr, the thumbnails
of its moments, and the plain words of a segment."""

from __future__ import annotations

import itertools
import json

import cv2
import pytest

from engine.explain import (
    clock,
    explain,
    segment_words,
    thumbnail_positions,
    write_timeline_thumbnails,
)

VIDEO = "pair480p_fake.mp4"  # the tiny model finds it manipulated throughout


def test_clock_and_segment_words():
    assert clock(0) == "0:00.0" and clock(3.24) == "0:03.2" and clock(59.96) == "1:00.0"
    assert clock(725.0) == "12:05.0" and clock(3723.5) == "1:02:03.5"
    seg = {"start": 3.2, "end": 6.7, "score": 0.9612, "person": 0}
    assert segment_words(seg) == "Manipulated from 0:03.2 to 0:06.7, person 1, confidence 96%"
    assert segment_words({**seg, "score": 0.999}, person=2).endswith("person 2, confidence >99%")


def test_thumbnail_positions_are_bounded_and_spread():
    assert thumbnail_positions(7) == list(range(7))
    pos = thumbnail_positions(1200)
    assert len(pos) == 120 and pos[0] == 0 and pos[-1] == 1199
    gaps = {b - a for a, b in itertools.pairwise(pos)}
    assert gaps <= {10, 11}
    assert thumbnail_positions(0) == [] and thumbnail_positions(50, limit=1) == [0]


def test_explain_applies_the_timeline_and_thumbnails_show_its_moments(
    tiny_engine, shared_dir, tmp_path
):
    video = shared_dir / "videos" / VIDEO
    stages: list[str] = []
    expl = explain(tiny_engine, video, seq_len=4, timeline=True, progress=stages.append)
    pred = expl.prediction
    assert stages[-1] == "computing the whole-video timeline"
    direct = tiny_engine.timeline(video).to_record()
    assert pred.timeline["frame_indices"] == direct["frame_indices"]
    assert pred.segments == direct["segments"] and pred.segments
    assert pred.verdict == "FAKE" and "MANIPULATED_SEGMENT" in pred.reasons
    assert explain(tiny_engine, video, seq_len=4).prediction.timeline is None  # off by default

    thumbs = write_timeline_thumbnails(tiny_engine, video, pred.timeline, tmp_path, limit=5)
    indices = pred.timeline["frame_indices"]
    assert thumbs["indices"][0] == indices[0] and thumbs["indices"][-1] == indices[-1]
    assert len(thumbs["frames"]) == 5 and all(thumbs["frames"])
    person = pred.timeline["people"][0]
    for k, index in enumerate(thumbs["indices"]):
        frame = cv2.imread(str(tmp_path / thumbs["frames"][k]))
        assert frame.shape == (90, 160, 3)  # 854x480 at 160 px wide
        has_face = person["boxes"][indices.index(index)] is not None
        assert (thumbs["crops"][0][k] is not None) == has_face
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [*thumbs["frames"], *(c for c in thumbs["crops"][0] if c)]
    )


def test_dfe_explain_timeline_writes_the_plot_and_lists_the_segments(
    tiny_model, models_dir, shared_dir, tmp_path, capsys
):
    pytest.importorskip("matplotlib", reason="timeline.png needs the `eval` extra")
    from engine.cli import main

    out = tmp_path / "out"
    code = main(["explain", str(shared_dir / "videos" / VIDEO), "--model", str(tiny_model),
                 "-o", str(out), "--seq-len", "4", "--backend", "ort", "--models", models_dir,
                 "--no-download", "--timeline", "--timeline-fps", "2"])  # fmt: skip
    assert code == 0
    png = out / "timeline.png"
    assert png.read_bytes()[:4] == b"\x89PNG"
    img = cv2.imread(str(png))
    assert img.shape[0] > 150 and img.shape[1] > 600
    err = capsys.readouterr().err
    record = json.loads((out / "explain.json").read_text())["record"]
    assert record["timeline"]["fps"] == 2.0 and record["segments"]
    assert f"{len(record['segments'])} segment(s) judged manipulated" in err
    for seg in record["segments"]:
        assert segment_words(seg, 1) in err
    assert record["verdict"] == "FAKE" and "MANIPULATED_SEGMENT" in record["reasons"]


def test_dfe_explain_without_timeline_writes_no_plot(tiny_model, models_dir, shared_dir, tmp_path):
    from engine.cli import main

    out = tmp_path / "out"
    code = main(["explain", str(shared_dir / "videos" / VIDEO), "--model", str(tiny_model),
                 "-o", str(out), "--seq-len", "2", "--backend", "ort", "--models", models_dir,
                 "--no-download"])  # fmt: skip
    assert code == 0 and not (out / "timeline.png").exists()
    assert json.loads((out / "explain.json").read_text())["record"]["timeline"] is None
