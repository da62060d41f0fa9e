"""The timeline benchmark (issue 32): long videos built by stream copy, its JSON from a small
real run, the report's section and the doc's generated table from a JSON."""

from __future__ import annotations

import json
import shutil

import pytest

from benchmarks.report import render_markdown
from benchmarks.timeline_bench import (
    _probe,
    long_video,
    measure,
    render_table,
    summarize,
)

needs_ffmpeg = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs the ffmpeg CLI")

ROW_KEYS = {"duration_s", "video_mb", "size", "timeline_fps", "timeline_frames", "people",
            "segments", "wall_s", "timeline_s", "frames_per_s", "frames_per_s_wall", "realtime",
            "peak_rss_mb", "cpu_s", "cores_busy", "timings", "build_s",
            "load_average_after"}  # fmt: skip


def _row(duration: float, wall: float, timeline: float, rss: float) -> dict:
    frames = int(duration * 2) + 1
    return {"duration_s": duration, "video_mb": duration / 3, "size": [1920, 1080],
            "timeline_fps": 2.0, "timeline_frames": frames, "people": 1, "segments": 0,
            "wall_s": wall, "timeline_s": timeline, "frames_per_s": frames / timeline,
            "frames_per_s_wall": frames / wall, "realtime": duration / wall, "peak_rss_mb": rss,
            "cpu_s": wall * 1.2, "cores_busy": 1.2, "timings": {"timeline": timeline},
            "build_s": 1.0}  # fmt: skip


def _result() -> dict:
    rows = [_row(300.0, 70.0, 66.0, 730.0), _row(600.0, 140.0, 136.0, 728.0)]
    return {
        "benchmark": "whole-video timeline",
        "started": "2026-12-04T19:00:00+0000",
        "machine": {
            "cpu": "test cpu",
            "cores": 2,
            "memory_gb": 24,
            "gpu": None,
            "python": "3.11",
            "versions": {},
            "allocator_env": {},
        },
        "cpu_cores": 2,
        "model": "model",
        "clips": ["a.mp4"],
        "timeline_fps": 2.0,
        "options": [],
        "rows": rows,
        "summary": summarize(rows),
    }


def test_summary_compares_the_longest_run_with_the_shortest():
    s = _result()["summary"]
    assert s["duration_ratio"] == 2.0 and s["timeline_time_ratio"] == round(136 / 66, 3)
    assert s["linearity"] == round(136 / 66 / 2, 3) and s["cpu_linearity"] == 1.0
    assert s["marginal_frames_per_s"] == round(600 / 70, 3)
    assert s["peak_rss_growth_mb"] == -2.0 and s["peak_rss_ratio"] == round(728 / 730, 3)
    assert summarize(_result()["rows"][:1]) == {}


def test_report_and_doc_render_the_timeline_section(tmp_path):
    result = _result()
    suite = {"suite": "quick", "started": "-", "machine": result["machine"], "videos": ["a.mp4"],
             "detector": "det_500m.onnx", "sections": {"timeline": result}}  # fmt: skip
    md = render_markdown(suite)
    assert "## Whole-video timeline" in md
    assert "| 5:00 1080p (100 MB) | 601 | 70.0 | 66.0 | 9.11 | 4.29 | 730 | 84 (1.2) |" in md
    assert "| 10:00 1080p (200 MB) | 1201 | 140.0 |" in md
    assert "linearity 1.03" in md and "-2 MB" in md
    # the doc's block (benchmarks.readme_tables) is rewritten from the JSON its marker names
    from benchmarks.readme_tables import BLOCKS, END, RESULTS
    from benchmarks.readme_tables import render_doc as render_blocks

    block = next(b for b in BLOCKS if b.name == "timeline")
    (tmp_path / RESULTS).mkdir(parents=True)
    (tmp_path / RESULTS / block.sources[0]).write_text(json.dumps(result))
    marker = block.marker()
    doc = f"# T\n\nbefore\n{marker}\nstale\n{END}\nafter\n"
    new, problems = render_blocks(doc, [block], tmp_path)
    assert new == f"# T\n\nbefore\n{marker}\n{render_table(result)}\n{END}\nafter\n"
    assert len(problems) == 1 and "'timeline'" in problems[0]  # the stale block
    assert render_blocks(new, [block], tmp_path) == (new, [])
    with pytest.raises(ValueError, match="no"):
        render_blocks(f"{marker}\nno end\n", [block], tmp_path)


@needs_ffmpeg
def test_a_small_run_writes_the_json(tiny_model, models_dir, shared_dir, tmp_path):
    """Two short videos (480p clips, 4 and 8 s) through `dfe predict --timeline` in child
    processes, with the tiny model: the JSON's structure, not its speed."""
    clips = [
        shared_dir / "videos" / "pair480p_real.mp4",
        shared_dir / "videos" / "pair480p_fake.mp4",
    ]
    video = long_video(clips, 14.0, tmp_path / "long.mp4")  # longer than one clip: both used
    assert abs(_probe(video)[0] - 14.0) < 0.6 and _probe(video)[1:] == (854, 480)
    result = measure(tiny_model, clips, durations=(8.0, 4.0), models_dir=models_dir,
                     workdir=tmp_path / "work")  # fmt: skip
    assert [r["duration_s"] for r in result["rows"]] == pytest.approx([4.0, 8.0], abs=0.5)
    for row in result["rows"]:
        assert set(row) == ROW_KEYS
        assert abs(row["timeline_frames"] - 2 * row["duration_s"]) <= 2
        assert row["size"] == [854, 480] and row["people"] == 1
        assert row["peak_rss_mb"] > 50 and row["wall_s"] > row["timeline_s"] > 0
        assert row["frames_per_s"] == pytest.approx(row["timeline_frames"] / row["timeline_s"],
                                                    rel=0.02)  # fmt: skip
    assert set(result["summary"]) >= {"linearity", "cpu_linearity", "peak_rss_growth_mb"}
    assert len(result["load_average_before"]) == 3
    assert result["timeline_fps"] == 2.0 and result["clips"] == [c.name for c in clips]
    assert "| 0:04 480p" in render_table(result)


@needs_ffmpeg
def test_dfe_bench_runs_the_timeline_section_into_report_md(
    tiny_model, shared_dir, tmp_path, monkeypatch
):
    """``dfe bench --sections timeline`` (shorter videos here): results.json and report.md."""
    import benchmarks.timeline_bench as bench
    from benchmarks.report import render
    from benchmarks.suite import SECTIONS, SuiteConfig, bench_timeline, run_suite

    assert SECTIONS["timeline"] is bench_timeline
    monkeypatch.setattr(bench, "QUICK_DURATIONS", (3.0, 6.0))
    cfg = SuiteConfig(
        model_dir=tiny_model,
        checkpoint=None,
        videos=[shared_dir / "videos" / "dfdc_like_real.mp4"],
        videos_480p=[],
        detector=shared_dir / "models" / "det_500m.onnx",
        out=tmp_path,
    )
    results = run_suite(cfg, ["timeline"])
    section = results["sections"]["timeline"]
    assert [round(r["duration_s"]) for r in section["rows"]] == [3, 6]
    assert all(r["size"] == [1920, 1080] for r in section["rows"])
    md, _plots = render(tmp_path / "results.json")
    text = md.read_text()
    assert "## Whole-video timeline" in text and "| 0:03 1080p" in text and "| 0:06 1080p" in text
