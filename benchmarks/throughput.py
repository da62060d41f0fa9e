"""End-to-end throughput of whole processes, as a user runs them (issue 18).

Each pipeline scores the 1080p clips (cycled) in a fresh process, once with ``--base`` videos and
once with ``--videos`` videos; the **marginal rate** ``(videos - base) / (t_videos - t_base)``
cancels start-up (imports, model loading, warm-up), which a long job pays once. Runs alternate
between pipelines and are repeated ``--rounds`` times; the median is reported with the spread.

Pipelines, in one run on one machine:

- ``ours-*``: ``dfe predict`` (``engine.cli.main`` in a child process) in exact mode (fp32, the
  square 640x640 detector input: InsightFace's boxes on every frame), with the frame-shaped
  detector input alone (fast mode's input), in fast mode (``--detect-every 4`` with the
  frame-shaped input) and with the INT8 graph when the model has one;
- ``straightforward``: what a careful user writes today (``benchmarks.baselines``: OpenCV
  decode, InsightFace's own SCRFD on every frame at 640, eager PyTorch);
- ``original``: the original project's pipeline (OpenCV, dlib HOG on every full frame, eager
  PyTorch); slow, so measured on fewer videos.

Per pipeline the JSON has the marginal videos/s and frames/s, the peak resident memory of the
job, the time per stage per video and per frame (from ``dfe predict``'s records, or the
baselines' own stage timers), the machine's core count, and the ratios the issue targets. Fast
mode's cost against exact mode is measured on the records: mean and min IoU of the crop boxes and
max |delta p_fake| on the same videos.

``-o FILE`` writes the run alone; with ``--run NAME`` it is merged into ``FILE``'s ``runs``
under ``NAME`` (:func:`merge_run`), the form of the committed
``benchmarks/results/throughput-<host>.json``: one file per machine, one named run per question
(thread budget, decoders, ...), each with the command that made it.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import machine_info, write_json
from core.compute import ThreadBudget

REPO = Path(__file__).resolve().parents[1]
STAGES = ("decode", "detect", "track", "crop", "classify")

# The child's own peak resident memory: VmHWM of /proc/self/status, which starts afresh at
# exec. (getrusage's ru_maxrss does not: it is kept across fork and execve, so every child
# would report at least the benchmark's own peak; getrusage(2).)
_PEAK = """
def PEAK_KB():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0
"""

# A child process scoring videos with `dfe predict` and reporting its own peak memory.
_OURS_CHILD = (
    _PEAK
    + """
import sys
from engine.cli import main
code = main(sys.argv[1:])
print("PEAK_RSS_KB", PEAK_KB(), file=sys.stderr)
sys.exit(code)
"""
)

# A child process running a baseline pipeline over videos, writing one JSON line per video.
_BASELINE_CHILD = (
    _PEAK
    + """
import json, sys
from pathlib import Path
from benchmarks.baselines import OriginalPipeline, StraightforwardPipeline
kind, checkpoint, detector, n, out, *videos = sys.argv[1:]
if kind == "straightforward":
    pipe = StraightforwardPipeline(Path(checkpoint), Path(detector))
else:
    pipe = OriginalPipeline(Path(checkpoint))
with open(out, "w") as f:
    for v in videos:
        f.write(json.dumps({"video": v, **pipe.run(v, int(n))}) + "\\n")
print("PEAK_RSS_KB", PEAK_KB(), file=sys.stderr)
"""
)


def _cycle(clips: list[Path], count: int, directory: Path) -> list[str]:
    """``count`` inputs cycling over ``clips``: hard links (copies across file systems) in
    ``directory``, distinct files where the same path given twice would be scored once."""
    directory.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(count):
        src = clips[i % len(clips)]
        dst = directory / f"{i:05d}_{src.name}"
        if not dst.exists():
            try:
                os.link(src.resolve(), dst)
            except OSError:
                shutil.copyfile(src, dst)
        out.append(str(dst))
    return out


def _children_cpu() -> float:
    """CPU seconds (user + system) of this process's waited-for children so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _run_child(
    args: list[str], env: dict[str, str], cwd: Path = REPO
) -> tuple[float, int, float, str]:
    """(wall seconds, peak RSS in KiB, CPU seconds, stderr) of one child process."""
    t, cpu = time.perf_counter(), _children_cpu()
    proc = subprocess.run(args, capture_output=True, text=True, env=env, cwd=cwd)
    wall = time.perf_counter() - t
    cpu = _children_cpu() - cpu
    rss = 0
    for line in proc.stderr.splitlines():
        if line.startswith("PEAK_RSS_KB"):
            rss = int(line.split()[1])
    if proc.returncode not in (0, 3):
        raise RuntimeError(f"{args[:4]}... failed ({proc.returncode}): {proc.stderr[-1500:]}")
    return wall, rss, cpu, proc.stderr


def run_ours(
    model: Path,
    videos: list[str],
    n: int,
    options: list[str],
    records: Path,
    models_dir: str,
    checkout: Path = REPO,
) -> tuple[float, int, float]:
    """``dfe predict`` of the checkout ``checkout`` (this one, or another version of the
    project for a before/after comparison) in a child process: (wall seconds, peak RSS in
    KiB, CPU seconds)."""
    # absolute paths: the child runs in ``checkout``
    model, records, models = model.resolve(), Path(records).resolve(), Path(models_dir).resolve()
    args = [sys.executable, "-c", _OURS_CHILD, "predict", *videos, "--model", str(model),
            "--seq-len", str(n), "--backend", "ort", "--models", str(models), "--no-download",
            "--no-progress", "--out", str(records), *options]  # fmt: skip
    env = dict(os.environ)
    env["PYTHONPATH"] = str(checkout)
    wall, rss, cpu, _ = _run_child(args, env, cwd=checkout)
    return wall, rss, cpu


def run_baseline(
    kind: str, checkpoint: Path, detector: Path, videos: list[str], n: int, records: Path
) -> tuple[float, int, float]:
    """A baseline pipeline in a child process: (wall seconds, peak RSS in KiB, CPU seconds)."""
    args = [sys.executable, "-c", _BASELINE_CHILD, kind, str(checkpoint), str(detector), str(n),
            str(records), *videos]  # fmt: skip
    wall, rss, cpu, _ = _run_child(args, dict(os.environ))
    return wall, rss, cpu


def _records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _stage_times(records: list[dict[str, Any]], n: int) -> dict[str, Any]:
    """Mean seconds per video and milliseconds per frame of each stage."""
    ok = [r for r in records if r.get("status", "ok") == "ok"]
    per_video: dict[str, float] = {}
    for stage in STAGES:
        key = stage if stage in ok[0].get("timings", {}) else f"{stage}_s"
        values = [r.get("timings", {}).get(stage, r.get(key, 0.0)) for r in ok]
        if any(values):
            per_video[stage] = round(statistics.mean(values), 5)
    return {
        "seconds_per_video": per_video,
        "ms_per_frame": {k: round(1000 * v / n, 3) for k, v in per_video.items()},
    }


def _iou(a: list[float] | None, b: list[float] | None) -> float:
    if a is None or b is None:
        return 1.0 if a == b else 0.0
    x1, y1, x2, y2 = max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x2 - x1) * max(0.0, y2 - y1)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def compare_records(exact: list[dict[str, Any]], other: list[dict[str, Any]]) -> dict[str, Any]:
    """Box IoU and p_fake difference of ``other`` against ``exact``, video by video. A video
    scored on other frames (another ``--sampling`` or ``--seq-len``: its ``frame_indices``
    differ) is not compared, only counted (``videos_on_other_frames``)."""
    by_video = {r["video"]: r for r in exact}
    ious: list[float] = []
    deltas: list[float] = []
    other_frames = 0
    for r in other:
        e = by_video.get(r["video"])
        if e is None or e["status"] != "ok" or r["status"] != "ok":
            continue
        if e.get("frame_indices") != r.get("frame_indices"):
            other_frames += 1
            continue
        ious += [_iou(a, b) for a, b in zip(e["boxes"], r["boxes"])]
        deltas.append(abs(e["p_fake"] - r["p_fake"]))
    return {
        "videos": len(deltas),
        "videos_on_other_frames": other_frames,
        "mean_box_iou": round(statistics.mean(ious), 5) if ious else None,
        "min_box_iou": round(min(ious), 5) if ious else None,
        "max_abs_delta_p_fake": round(max(deltas), 6) if deltas else None,
    }


def measure(args: argparse.Namespace) -> dict[str, Any]:
    clips = sorted(Path(v) for v in args.clips)
    n = args.seq_len
    tmp = Path(tempfile.mkdtemp(prefix="dfe-throughput-"))
    ours: dict[str, list[str]] = {
        "ours-fp32": [],
        "ours-fp32-frame-input": ["--detector-input-shape", "frame"],
        "ours-detect-every-4": ["--detect-every", "4", "--detector-input-shape", "frame"],
    }
    if (args.model / "classifier.int8.onnx").is_file():
        ours["ours-int8"] = ["--precision", "int8"]
    for name, extra in args.ours_option or []:
        ours[name] = extra.split()
    checkouts = {name: REPO for name in ours}
    if getattr(args, "before", None) is not None:
        ours["before-fp32"] = []
        checkouts["before-fp32"] = Path(args.before).resolve()
    pipelines: list[str] = list(ours)
    if args.checkpoint is not None:
        pipelines += ["straightforward"]
        if not args.skip_original:
            pipelines += ["original"]
    sizes = {p: (args.base, args.videos) for p in pipelines}
    if "original" in sizes:
        sizes["original"] = (args.original_base, args.original_videos)
    times: dict[str, dict[int, list[float]]] = {p: {} for p in pipelines}
    cpus: dict[str, dict[int, list[float]]] = {p: {} for p in pipelines}
    rss: dict[str, int] = {}
    last: dict[str, Path] = {}
    for rnd in range(args.rounds):
        order = pipelines if rnd % 2 == 0 else pipelines[::-1]
        for p in order:
            for count in sizes[p]:
                videos = _cycle(clips, count, tmp / "inputs")
                out = tmp / f"{p}-{count}-{rnd}.jsonl"
                if p in ours:
                    wall, peak, cpu = run_ours(
                        args.model, videos, n, ours[p], out, args.models, checkouts[p]
                    )
                else:
                    wall, peak, cpu = run_baseline(
                        p, args.checkpoint, args.detector, videos, n, out
                    )
                times[p].setdefault(count, []).append(wall)
                cpus[p].setdefault(count, []).append(cpu)
                if count == sizes[p][1]:
                    rss[p] = max(rss.get(p, 0), peak)
                    last[p] = out
                print(f"round {rnd} {p:24s} {count:3d} videos {wall:7.2f} s", file=sys.stderr)
    rows = []
    for p in pipelines:
        base, big = sizes[p]
        marginal = [
            (big - base) / (tb - ta) for ta, tb in zip(times[p][base], times[p][big]) if tb > ta
        ]
        vps = statistics.median(marginal) if marginal else None
        # marginal CPU (user + system, all threads) per video: what the cores are spent on
        cpu_marginal = [(cb - ca) / (big - base) for ca, cb in zip(cpus[p][base], cpus[p][big])]
        cpu_per_video = statistics.median(cpu_marginal) if cpu_marginal else None
        row = {
            "pipeline": p,
            "options": ours.get(p),
            "n": n,
            "videos": [base, big],
            "seconds": {str(k): [round(v, 3) for v in vs] for k, vs in times[p].items()},
            "videos_per_s": round(vps, 4) if vps else None,
            "videos_per_s_range": [round(min(marginal), 4), round(max(marginal), 4)]
            if marginal
            else None,
            "frames_per_s": round(vps * n, 2) if vps else None,
            "cpu_s_per_video": round(cpu_per_video, 4) if cpu_per_video else None,
            "cores_busy": round(cpu_per_video * vps, 2) if cpu_per_video and vps else None,
            "peak_rss_mb": round(rss.get(p, 0) / 1024, 1),
            **_stage_times(_records(last[p]), n),
        }
        rows.append(row)
    by = {r["pipeline"]: r for r in rows}
    exact = _records(last["ours-fp32"])
    costs = {
        name: compare_records(exact, _records(last[name]))
        for name in by
        if name in ours and name != "ours-fp32"
    }

    def ratio(a: str, b: str) -> float | None:
        if a in by and b in by and by[a]["videos_per_s"] and by[b]["videos_per_s"]:
            return round(by[a]["videos_per_s"] / by[b]["videos_per_s"], 3)
        return None

    targets = [
        {"target": "exact fp32 vs straightforward", "goal": 2.0,
         "ratio": ratio("ours-fp32", "straightforward")},
        {"target": "exact fp32 vs original", "goal": 30.0, "ratio": ratio("ours-fp32", "original")},
        {"target": "INT8 vs straightforward", "goal": 3.0,
         "ratio": ratio("ours-int8", "straightforward")},
        {"target": "--detect-every 4 vs straightforward", "goal": 2.5,
         "ratio": ratio("ours-detect-every-4", "straightforward")},
        {"target": "frame-shaped vs square detector input (fp32)", "goal": 1.0,
         "ratio": ratio("ours-fp32-frame-input", "ours-fp32")},
        {"target": "exact fp32 vs the version before (--before)", "goal": 1.0,
         "ratio": ratio("ours-fp32", "before-fp32")},
    ]  # fmt: skip
    for t in targets:
        t["met"] = t["ratio"] is not None and t["ratio"] >= t["goal"]
    return {
        "benchmark": "end-to-end throughput, whole processes, marginal rate",
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": machine_info(),
        "cpu_cores": os.cpu_count(),
        "thread_budget": ThreadBudget.resolve("ort").to_record(),  # ours' default on CPU
        "load_average_at_end": list(os.getloadavg()),
        "model": str(args.model),
        "clips": [c.name for c in clips],
        "rounds": args.rounds,
        "rows": rows,
        "fast_mode_and_input_costs": costs,
        "targets": targets,
    }


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", type=Path, required=True, help="exported model directory")
    p.add_argument("--checkpoint", type=Path, default=None, help="its .pt (for the baselines)")
    p.add_argument("--detector", type=Path, required=True, help="det_500m.onnx")
    p.add_argument("--models", required=True, help="models directory for dfe predict")
    p.add_argument("--clips", nargs="+", required=True, help="the 1080p clips (cycled)")
    p.add_argument("--seq-len", type=int, default=20)
    p.add_argument("--videos", type=int, default=24)
    p.add_argument("--base", type=int, default=4)
    p.add_argument("--original-videos", type=int, default=4)
    p.add_argument("--original-base", type=int, default=2)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--skip-original", action="store_true")
    p.add_argument(
        "--ours-option",
        nargs=2,
        action="append",
        metavar=("NAME", "FLAGS"),
        help="another configuration of ours, e.g. --ours-option threads1 '--threads 1'",
    )
    p.add_argument(
        "--before",
        type=Path,
        default=None,
        help="another checkout of the project: its dfe predict runs too (before/after)",
    )
    p.add_argument("-o", "--out", type=Path, required=True, help="JSON results")
    p.add_argument(
        "--run",
        default=None,
        metavar="NAME",
        help="merge the run into the -o file's runs under NAME (the committed form) instead of "
        "writing it alone",
    )


def merge_run(path: Path, name: str, result: dict[str, Any]) -> dict[str, Any]:
    """Add (or replace) ``result`` under ``name`` in the ``runs`` of the JSON file at ``path``
    (created as ``{"benchmark", "runs"}`` when missing); returns the whole. Raises
    ``ValueError`` when the file holds a single run (no ``runs``)."""
    data: dict[str, Any] = {"benchmark": result["benchmark"], "runs": {}}
    if path.is_file():
        data = json.loads(path.read_text())
        if "runs" not in data:
            raise ValueError(f"{path} holds a single run, not named runs; write another file")
    data["runs"][name] = result
    write_json(path, data)
    return data


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.throughput", description=__doc__)
    add_arguments(p)
    args = p.parse_args(argv)
    result = measure(args)
    command = sys.argv[1:] if argv is None else list(argv)
    result["command"] = shlex.join(["python", "-m", "benchmarks.throughput", *command])
    if args.run:
        merge_run(args.out, args.run, result)
    else:
        write_json(args.out, result)
    for r in result["rows"]:
        print(
            f"{r['pipeline']:26s} {r['videos_per_s'] or 0:6.3f} videos/s  peak "
            f"{r['peak_rss_mb']:7.1f} MB  stages {r['seconds_per_video']}"
        )
    for t in result["targets"]:
        print(f"{t['target']:55s} goal {t['goal']:5.1f}x  measured {t['ratio']}")
    print(json.dumps(result["fast_mode_and_input_costs"], indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
