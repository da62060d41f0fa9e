"""The live benchmark (issue 34): its figures come from the watch's own lines (the kept-up rule,
the thirds, the reading lag, the RSS summary), the ladder stops at the first rate that falls
behind, and a short real run (a small stream served over TCP, ``dfe watch`` with the tiny model)
writes a row whose counts are the summary line's and whose latency is the verdict lines'."""

from __future__ import annotations

import json
import shutil

import pytest

from benchmarks import live_bench
from benchmarks.live_bench import (
    analyse_lines,
    behind,
    climb,
    highest_kept_up,
    render_table,
    summarize_rss,
)

needs_ffmpeg = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs the ffmpeg CLI")


def _lines(latencies, dropped=None, lag=0.0, end="eof", stream_s=None):
    """A watch's lines: one verdict a second with these latencies, ``dropped`` so far per line,
    the reading lag growing by ``lag`` seconds per line, and the summary."""
    dropped = dropped or [0] * len(latencies)
    out = [{"event": "start"}, {"event": "opened", "format": "mpegts", "codec": "h264",
                                "width": 1280, "height": 720, "rate": 30.0}]  # fmt: skip
    for i, (ms, d) in enumerate(zip(latencies, dropped)):
        t = float(i + 1)
        wall = 1000.0 + t + i * lag + ms / 1000
        out.append({"event": "verdict", "time": t, "latency_ms": ms, "dropped": d,
                    "wall": wall, "read": 30 * (i + 1)})  # fmt: skip
    out.append({"event": "summary", "end": end, "error": None, "seconds": len(latencies) + 1.0,
                "stream_s": stream_s or float(len(latencies)), "frames_read": 30 * len(latencies),
                "frames_sampled": 4 * len(latencies),
                "frames_scored": 4 * len(latencies) - dropped[-1],
                "frames_dropped": dropped[-1], "people": 1, "lines": len(latencies),
                "verdicts": {"UNCERTAIN": len(latencies)}, "latency_ms": {}, "queue_max": 2,
                "buffer_max": 16})  # fmt: skip
    return out


def _row(records, duration=None, exit_code=0):
    info = analyse_lines(records)
    info.pop("first_line_wall")
    lines = info["lines"]
    row = {"fps": 4.0, "duration_s": duration or float(lines), "exit_code": exit_code, **info}
    row["behind"] = behind(row)
    row["kept_up"] = not row["behind"]
    return row


def test_figures_come_from_the_lines():
    lat = [400.0, 60, 70, 80, 65, 75, 90, 70, 60]
    row = _row(_lines(lat, dropped=[3] * 9))
    assert row["lines"] == 9 and row["events"]["verdict"] == 9
    assert row["latency_ms"]["median"] == 70.0 and row["latency_ms"]["max"] == 400.0
    assert row["latency_ms"]["p95"] == pytest.approx(400 - 0.4 * (400 - 90), abs=0.01)
    assert row["latency_ms"]["first_third_median"] == 70.0  # 400, 60, 70
    assert row["latency_ms"]["last_third_median"] == 70.0  # 90, 70, 60
    assert row["read_lag_growth_s"] == pytest.approx(0.0, abs=1e-6)
    assert row["stream"]["width"] == 1280
    # three frames dropped while the sessions warmed up, none after: kept up
    assert row["summary"]["frames_dropped"] == row["dropped_last_line"] == 3
    assert row["dropped_warmup"] == 3 and row["dropped_after_warmup"] == 0
    assert row["dropped_by_minute"] == [[1.0, 3], [9.0, 3]]
    assert row["kept_up"], row["behind"]


def test_falling_behind_is_each_of_its_reasons():
    grew = _row(_lines([60.0, 60, 60, 200, 300, 400]))
    assert not grew["kept_up"] and grew["behind"][0].startswith("latency grew")
    dropped = _row(_lines([60.0] * 6, dropped=[0, 0, 1, 4, 4, 9]))
    assert dropped["behind"] == ["9 frames dropped after the first line"]
    late = _row(_lines([60.0] * 9, lag=0.5))  # reading 0.5 s further behind every line
    assert late["read_lag_growth_s"] == pytest.approx(3.0)
    assert late["behind"] == ["reading fell 3.0 s behind the stream"]
    short = _row(_lines([60.0] * 3, end="source_lost"), duration=20.0, exit_code=0)
    assert any(r.startswith("ended source_lost") for r in short["behind"])
    assert any(r.startswith("stream watched 3.0 s") for r in short["behind"])
    none = _row([{"event": "start"}], exit_code=2)
    assert none["behind"] == ["dfe watch exited 2", "no summary line"]


def test_rss_summary_after_the_first_line():
    samples = [(100.0 + t, 50.0 if t < 3 else 400.0 + 0.1 * t) for t in range(0, 120)]
    rss = summarize_rss(samples, started=103.0, warmup_s=30.0)
    assert rss["samples"] == 120 and rss["first"] == 400.3 and rss["max"] == 411.9
    assert rss["last"] == 411.9 and rss["slope_mb_per_min"] == pytest.approx(6.0, abs=1e-3)
    assert rss["fit_span_s"] == 86.0
    kept = rss["every_10s"]
    assert kept[0] == [0.0, 400.3] and kept[-1] == [116.0, 411.9]
    assert [t for t, _ in kept[:-1]] == [10.0 * k for k in range(12)]
    assert summarize_rss([], None, 10.0) == {"samples": 0}


def test_the_ladder_stops_at_the_first_rate_behind_and_refines():
    def run_for(limit):
        def run(fps):
            return {"fps": fps, "kept_up": fps <= limit}

        return run

    rows = climb(run_for(10), (4.0, 8.0, 16.0, 30.0), refine=True)
    assert [r["fps"] for r in rows] == [4.0, 8.0, 16.0, 12.0]
    assert highest_kept_up(rows) == 8.0
    rows = climb(run_for(12), (4.0, 8.0, 16.0, 30.0), refine=True)
    assert highest_kept_up(rows) == 12.0
    rows = climb(run_for(3), (4.0, 8.0), refine=True)
    assert [r["fps"] for r in rows] == [4.0, 2.0] and highest_kept_up(rows) == 2.0
    rows = climb(run_for(100), (4.0, 8.0), refine=True)
    assert [r["fps"] for r in rows] == [4.0, 8.0] and highest_kept_up(rows) == 8.0
    assert highest_kept_up(climb(run_for(1), (4.0,), refine=False)) is None


@needs_ffmpeg
def test_a_short_run_writes_rows_from_the_watch_lines(
    tiny_model, models_dir, shared_dir, tmp_path, monkeypatch
):
    """A 5-second 360p30 stream served live, ``dfe watch --fps 2`` on it (tiny model): every
    figure of the row is the lines' own, and the report and table render it."""
    from benchmarks.report import render_markdown
    from benchmarks.suite import SECTIONS, bench_live

    assert SECTIONS["live"] is bench_live
    monkeypatch.setitem(live_bench.RESOLUTIONS, "360p", (640, 360))
    clip = shared_dir / "videos" / "pair480p_real.mp4"
    result = live_bench.measure(tiny_model, clip, models_dir=models_dir, duration=5.0,
                                ladder=(2.0,), resolutions=("360p",), refine=False,
                                workdir=tmp_path, log=lambda _: None)  # fmt: skip
    assert result["streams"]["360p"]["size"] == [640, 360]
    assert len(result["load_average_start"]) == 3 and len(result["load_average_end"]) == 3
    assert set(result["host"]) == {"machine", "cpu_cores"} and result["settings"]["rate"] == 30
    (row,) = result["runs"]
    assert row["exit_code"] == 0 and row["resolution"] == "360p" and row["kind"] == "ladder"
    records = [
        json.loads(x) for x in (tmp_path / "lines_360p_2_ladder.jsonl").read_text().splitlines()
    ]
    summary = records[-1]
    assert summary["event"] == "summary" and summary["end"] == "eof"
    assert row["summary"]["frames_dropped"] == summary["frames_dropped"]
    assert row["summary"]["frames_read"] == summary["frames_read"] >= 140  # 150 frames sent
    assert row["stream"] == {"format": "mpegts", "codec": "h264", "width": 640, "height": 360,
                             "rate": 30.0}  # fmt: skip
    verdicts = [r for r in records if r["event"] == "verdict"]
    assert row["lines"] == len(verdicts) == summary["lines"] >= 4
    assert row["dropped_last_line"] == verdicts[-1]["dropped"]
    lat = row["latency_ms"]
    assert lat["p95"] >= lat["median"] > 0 and lat["max"] == max(v["latency_ms"] for v in verdicts)
    # the watch's own summary computes the same quantiles over the unrounded latencies
    assert lat["median"] == pytest.approx(summary["latency_ms"]["median"], abs=0.02)
    assert lat["p95"] == pytest.approx(summary["latency_ms"]["p95"], abs=0.02)
    assert row["rss_mb"]["samples"] >= 3 and row["rss_mb"]["max"] >= row["rss_mb"]["first"] > 50
    assert row["rss_mb"]["every_10s"][0][0] == 0.0
    assert row["cpu_s"] > 0 and row["wall_s"] > 4.0
    assert row["kept_up"] == (not row["behind"])
    assert result["results"]["360p"]["highest_fps_kept_up"] == (2.0 if row["kept_up"] else None)
    table = render_table(result)
    assert table.startswith("| stream | `--fps` |") and "| 360p30 | 2 | 5 |" in table
    suite = {"suite": "quick", "started": "-", "machine": result["host"]["machine"],
             "videos": [clip.name], "detector": "det_500m.onnx",
             "sections": {"live": result}}  # fmt: skip
    assert "## Live video" in render_markdown(suite) and table in render_markdown(suite)
