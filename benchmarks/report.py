"""Render the benchmark JSON into a Markdown report and PNG plots (never typed by hand).

``dfe bench`` renders its ``results.json`` this way; a committed suite run is rendered with
``python -m benchmarks.report benchmarks/results/quick-2core-cpu.json -o bench_out/report``
(``report.md`` and the plots in that folder).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

STAGE_NAMES = ("decode", "detect", "track", "crop", "classify")


def _fps(r: dict[str, Any]) -> str:
    f = r.get("frames_per_s")
    if isinstance(f, dict):
        return f"{f['median']:.1f} ({f['p25']:.1f}-{f['p75']:.1f})"
    return f"{f:.1f}" if f is not None else "-"


def render_markdown(results: dict[str, Any]) -> str:
    m = results["machine"]
    lines = [
        f"# Benchmark results ({results['suite']} suite, {results['started']})",
        "",
        f"Machine: {m['cpu']}"
        + (f" ({', '.join(m['isa'])})" if m.get("isa") else "")
        + f", {m['cores']} cores, {m['memory_gb']} GiB, GPU: {m['gpu'] or 'none'}."
        f" Python {m['python']}; " + ", ".join(f"{k} {v}" for k, v in m["versions"].items()) + ".",
        f"Allocator settings: {m['allocator_env'] or 'defaults'}. Videos: "
        + ", ".join(results["videos"])
        + f". Detector: {results['detector']}.",
        "",
        "Rates are median (p25-p75) over repeated runs after a warm-up.",
        "",
    ]
    if results.get("targets"):
        lines += ["## Targets", "", "| target | goal | measured | met |", "|---|---|---|---|"]
        for t in results["targets"]:
            measured = t["ratio"] is not None
            ratio = f"{t['ratio']:.2f}x" if measured else "not measured"
            met = ("yes" if t["met"] else "no") if measured else "-"
            lines.append(f"| {t['target']} | >= {t['goal']}x | {ratio} | {met} |")
        lines.append("")
    sec = results["sections"]
    if "classifier" in sec:
        lines += [
            "## Classifier (whole model, frames/s)",
            "",
            "| backend | precision | batch | frames/s |",
            "|---|---|---|---|",
        ]
        for r in sec["classifier"]["rows"]:
            if "skipped" in r:
                lines.append(f"| {r['backend']} | - | - | skipped: {r['skipped'][:80]} |")
            else:
                lines.append(f"| {r['backend']} | {r['precision']} | {r['batch']} | {_fps(r)} |")
        lines.append("")
    if "detector" in sec:
        lines += [
            "## Detector (frames/s)",
            "",
            "| detector | resolution | frames/s |",
            "|---|---|---|",
        ]
        for r in sec["detector"]["rows"]:
            if "skipped" in r:
                lines.append(f"| {r['detector']} | - | skipped: {r['skipped'][:80]} |")
            else:
                lines.append(f"| {r['detector']} | {r['resolution']} | {_fps(r)} |")
        lines.append("")
    if "decode" in sec:
        lines += [
            "## Decoding (20 frames of a 1080p clip, frames/s)",
            "",
            "| backend | sampling | frames/s |",
            "|---|---|---|",
        ]
        for r in sec["decode"]["rows"]:
            lines.append(f"| {r['backend']} | {r['sampling']} | {_fps(r)} |")
        lines.append("")
    if "end_to_end" in sec:
        e2e = sec["end_to_end"]
        lines += [
            f"## End to end (N={e2e['rows'][0]['n']}, whole processes, marginal rate, "
            f"{e2e['cpu_cores']} cores)",
            "",
            "Each pipeline scored the clips (cycled) in fresh processes with two video counts; "
            "the marginal rate (difference of videos over difference of seconds) cancels "
            f"start-up. Median of {e2e['rounds']} alternating rounds (range in brackets).",
            "",
            "| pipeline | videos/s | frames/s | CPU s per video (cores busy) | peak RSS MB "
            "| ms per frame: " + " / ".join(STAGE_NAMES) + " |",
            "|---|---|---|---|---|---|",
        ]
        for r in e2e["rows"]:
            ms = r.get("ms_per_frame", {})
            spread = r.get("videos_per_s_range") or [None, None]
            vps = (
                f"{r['videos_per_s']:.3f} ({spread[0]:.3f}-{spread[1]:.3f})"
                if r.get("videos_per_s")
                else "-"
            )
            cpu = (
                f"{r['cpu_s_per_video']:.3f} ({r['cores_busy']:.2f})"
                if r.get("cpu_s_per_video") and r.get("cores_busy")
                else "-"
            )
            lines.append(
                f"| {r['pipeline']} | {vps} | {r.get('frames_per_s') or 0:.1f} | {cpu} | "
                f"{r['peak_rss_mb']:.0f} | "
                + " / ".join(f"{ms[k]:.1f}" if k in ms else "-" for k in STAGE_NAMES)
                + " |"
            )
        costs = e2e.get("fast_mode_and_input_costs", {})
        if costs:
            lines += ["", "Against exact mode (same videos):", ""]
            lines += ["| pipeline | mean box IoU | min box IoU | max abs delta p_fake |"]
            lines += ["|---|---|---|---|"]
            for name, c in costs.items():
                lines.append(
                    f"| {name} | {c['mean_box_iou']} | {c['min_box_iou']} | "
                    f"{c['max_abs_delta_p_fake']} |"
                )
        alone = e2e.get("stages_alone")
        if alone:
            lines += [
                "",
                f"Stages alone (N={alone['n']}, {alone['videos']} videos, seconds): "
                + ", ".join(f"{k} {v:.2f}" for k, v in alone["seconds"].items())
                + f"; slowest: {alone['slowest']}.",
            ]
        lines.append("")
    if "scaling" in sec:
        lines += [
            "## Scaling",
            "",
            "| axis | value | seconds | rate | peak RSS MB |",
            "|---|---|---|---|---|",
        ]
        for r in sec["scaling"]["rows"]:
            rate = (
                f"{r['videos_per_s']:.3f} videos/s"
                if "videos_per_s" in r
                else f"{r['frames_per_s']:.1f} frames/s"
            )
            lines.append(
                f"| {r['axis']} | {r['value']} | {r['seconds']:.2f} | {rate} | {r['rss_mb']:.0f} |"
            )
        lines.append("")
    if "timeline" in sec:
        from benchmarks.timeline_bench import render_table

        lines += [
            "## Whole-video timeline (dfe predict --timeline, long 1080p videos)",
            "",
            "Each video scored once in a fresh process; frames/s: timeline frames per second of "
            "the timeline's own time (every frame decoded, the sampled ones detected and "
            "classified); video s per wall s: seconds of video per second of the whole process.",
            "",
            render_table(sec["timeline"]),
            "",
        ]
    if "live" in sec:
        from benchmarks.live_bench import render_table as render_live

        lines += [
            "## Live video (dfe watch on 1080p30 and 720p30 streams over TCP)",
            "",
            "Each stream served live on loopback (`ffmpeg -re`, a stream copy) and watched by one "
            "fresh `dfe watch` process per `--fps`, up to the first rate that fell behind; "
            "latency from each verdict line, RSS sampled from /proc every second.",
            "",
            render_live(sec["live"]),
            "",
        ]
    return "\n".join(lines)


def render_plots(results: dict[str, Any], out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    sec = results["sections"]
    if "classifier" in sec:
        fig, ax = plt.subplots(figsize=(6, 4))
        series: dict[str, list[tuple[int, float]]] = {}
        for r in sec["classifier"]["rows"]:
            if "frames_per_s" in r:
                series.setdefault(f"{r['backend']} {r['precision']}", []).append(
                    (r["batch"], r["frames_per_s"]["median"])
                )
        for name, pts in series.items():
            xs, ys = zip(*sorted(pts))
            ax.plot(xs, ys, marker="o", label=name)
        ax.set(xlabel="frames per batch", ylabel="frames/s", title="Classifier throughput")
        ax.legend()
        ax.grid(alpha=0.3)
        written.append(out / "classifier.png")
        fig.tight_layout()
        fig.savefig(written[-1], dpi=110)
        plt.close(fig)
    if "detector" in sec:
        fig, ax = plt.subplots(figsize=(7, 4))
        rows = [r for r in sec["detector"]["rows"] if "frames_per_s" in r]
        dets = sorted({r["detector"] for r in rows})
        res = ["480p", "720p", "1080p"]
        width = 0.8 / max(len(dets), 1)
        for i, d in enumerate(dets):
            ys = [
                next(
                    (
                        r["frames_per_s"]["median"]
                        for r in rows
                        if r["detector"] == d and r["resolution"] == x
                    ),
                    0,
                )
                for x in res
            ]
            ax.bar([j + i * width for j in range(len(res))], ys, width, label=d)
        ax.set_xticks([j + 0.4 - width / 2 for j in range(len(res))], res)
        ax.set(ylabel="frames/s (log)", title="Face detection", yscale="log")
        ax.legend(fontsize=7)
        written.append(out / "detector.png")
        fig.tight_layout()
        fig.savefig(written[-1], dpi=110)
        plt.close(fig)
    if "end_to_end" in sec:
        fig, ax = plt.subplots(figsize=(6, 4))
        rows = [r for r in sec["end_to_end"]["rows"] if r.get("videos_per_s")]
        ax.barh([r["pipeline"] for r in rows], [r["videos_per_s"] for r in rows])
        ax.set(xlabel="videos/s (marginal, log)", xscale="log", title="End to end")
        written.append(out / "end_to_end.png")
        fig.tight_layout()
        fig.savefig(written[-1], dpi=110)
        plt.close(fig)
        # where the time goes: stacked per-stage time per frame of each pipeline
        fig, ax = plt.subplots(figsize=(7, 4))
        left = [0.0] * len(rows)
        for stage in STAGE_NAMES:
            ms = [r.get("ms_per_frame", {}).get(stage, 0.0) for r in rows]
            if any(ms):
                ax.barh([r["pipeline"] for r in rows], ms, left=left, label=stage)
                left = [a + b for a, b in zip(left, ms)]
        ax.set(
            xlabel="ms per frame in each stage (wall time of the stage while others run)",
            xscale="log"
            if max(left, default=1) / max(min(left, default=1), 1e-9) > 30
            else "linear",
            title="Time per stage",
        )
        ax.legend(fontsize=8)
        written.append(out / "stages.png")
        fig.tight_layout()
        fig.savefig(written[-1], dpi=110)
        plt.close(fig)
    return written


def render(results_path: Path, out: Path | None = None) -> tuple[Path, list[Path]]:
    """``report.md`` and the PNG plots of a suite's JSON, written into ``out`` (default: the
    JSON's folder; created when missing). Returns the report's path and the plots' (none
    without matplotlib)."""
    results = json.loads(results_path.read_text())
    out = results_path.parent if out is None else out
    out.mkdir(parents=True, exist_ok=True)
    md = out / "report.md"
    md.write_text(render_markdown(results) + "\n")
    try:
        plots = render_plots(results, out)
    except ImportError:
        plots = []
    return md, plots


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.report", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("results", type=Path, help="a suite's JSON (dfe bench's results.json)")
    parser.add_argument(
        "-o", "--out", type=Path, default=None, help="folder for report.md and the plots "
        "(default: the JSON's folder)"
    )  # fmt: skip
    args = parser.parse_args(argv)
    md, plots = render(args.results, args.out)
    print(f"report: {md}; plots: " + (", ".join(str(p) for p in plots) or "none"), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
