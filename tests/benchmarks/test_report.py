"""The benchmark report is rendered from the JSON, and the targets are computed from it."""

from __future__ import annotations

import json

from benchmarks.report import render
from benchmarks.suite import targets


def _results() -> dict:
    def fps(x):
        return {"median": x, "p25": x * 0.9, "p75": x * 1.1}

    return {
        "suite": "quick",
        "started": "2026-01-01T00:00:00",
        "machine": {
            "cpu": "test cpu",
            "cores": 2,
            "memory_gb": 24,
            "gpu": None,
            "python": "3.11",
            "versions": {"numpy": "2"},
            "allocator_env": {},
        },
        "videos": ["a.mp4"],
        "detector": "det_500m.onnx",
        "sections": {
            "classifier": {
                "rows": [
                    {
                        "backend": "torch-eager",
                        "precision": "fp32",
                        "batch": 20,
                        "frames_per_s": fps(70.0),
                    },
                    {
                        "backend": "ort",
                        "precision": "fp32",
                        "batch": 20,
                        "frames_per_s": fps(150.0),
                    },
                    {
                        "backend": "ort",
                        "precision": "int8",
                        "batch": 20,
                        "frames_per_s": fps(210.0),
                    },
                ]
            },
            "end_to_end": {
                "cpu_cores": 2,
                "rounds": 2,
                "rows": [
                    {
                        "pipeline": "ours-fp32",
                        "n": 20,
                        "videos": [4, 24],
                        "videos_per_s": 4.0,
                        "videos_per_s_range": [3.8, 4.2],
                        "frames_per_s": 80.0,
                        "cpu_s_per_video": 0.48,
                        "cores_busy": 1.92,
                        "peak_rss_mb": 900.0,
                        "ms_per_frame": {"decode": 10.0, "detect": 12.5, "classify": 20.0},
                    },
                    {
                        "pipeline": "original",
                        "n": 20,
                        "videos": [2, 4],
                        "videos_per_s": 0.1,
                        "videos_per_s_range": [0.1, 0.1],
                        "frames_per_s": 2.0,
                        "peak_rss_mb": 1500.0,
                        "ms_per_frame": {"decode": 10.0, "detect": 480.0, "classify": 30.0},
                    },
                    {
                        "pipeline": "straightforward",
                        "n": 20,
                        "videos": [4, 24],
                        "videos_per_s": 2.0,
                        "videos_per_s_range": [1.9, 2.1],
                        "frames_per_s": 40.0,
                        "peak_rss_mb": 1500.0,
                        "ms_per_frame": {"decode": 10.0, "detect": 20.0, "classify": 30.0},
                    },
                ],
                "fast_mode_and_input_costs": {
                    "ours-detect-every-4": {
                        "videos": 4,
                        "mean_box_iou": 0.98,
                        "min_box_iou": 0.9,
                        "max_abs_delta_p_fake": 0.02,
                    }
                },
                "targets": [
                    {
                        "target": "exact fp32 vs straightforward",
                        "goal": 2.0,
                        "ratio": 2.0,
                        "met": True,
                    },
                    {"target": "exact fp32 vs original", "goal": 30.0, "ratio": 40.0, "met": True},
                ],
                "stages_alone": {
                    "videos": 4,
                    "n": 20,
                    "slowest": "detect",
                    "seconds": {"decode": 0.4, "detect": 0.8, "crop": 0.1, "classify": 0.5},
                    "videos_per_s": {"decode": 10.0, "detect": 5.0, "crop": 40.0, "classify": 8.0},
                },
            },
        },
    }


def test_targets_are_ratios_from_the_json():
    t = {x["target"]: x for x in targets(_results())}
    ort = t["ONNX Runtime fp32 classifier vs eager PyTorch (batch 20)"]
    assert abs(ort["ratio"] - 150 / 70) < 1e-9 and ort["met"]
    int8 = t["INT8 classifier vs eager PyTorch (batch 20)"]
    assert abs(int8["ratio"] - 3.0) < 1e-9 and int8["met"]
    orig = t["exact fp32 vs original"]
    assert abs(orig["ratio"] - 40.0) < 1e-9 and orig["met"]
    sf = t["exact fp32 vs straightforward"]
    assert abs(sf["ratio"] - 2.0) < 1e-9 and sf["met"]
    pipe = t["pipelined end to end vs its slowest stage alone"]
    assert abs(pipe["ratio"] - 4.0 / 5.0) < 1e-9 and pipe["met"]


def test_report_markdown_and_plots_rendered_from_json(tmp_path):
    res = _results()
    res["targets"] = targets(res)
    res["targets"].append(
        {
            "target": "exact fp32 vs the version before (--before)",
            "goal": 1.0,
            "ratio": None,
            "met": False,
        }
    )
    path = tmp_path / "results.json"
    path.write_text(json.dumps(res))
    md, plots = render(path)
    text = md.read_text()
    assert "| ort | int8 | 20 | 210.0 (189.0-231.0) |" in text
    assert (
        "| ours-fp32 | 4.000 (3.800-4.200) | 80.0 | 0.480 (1.92) | 900 "
        "| 10.0 / 12.5 / - / - / 20.0 |" in text
    )
    assert "| ours-detect-every-4 | 0.98 | 0.9 | 0.02 |" in text
    assert "40.00x" in text and "slowest: detect" in text
    # a target the run did not measure is neither met nor missed
    assert "| exact fp32 vs the version before (--before) | >= 1.0x | not measured | - |" in text
    assert {p.name for p in plots} == {"classifier.png", "end_to_end.png", "stages.png"}
    assert all(p.stat().st_size > 1000 for p in plots)
    # a committed run is rendered into another folder (python -m benchmarks.report FILE -o DIR)
    from benchmarks.report import main

    assert main([str(path), "-o", str(tmp_path / "report")]) == 0
    assert (tmp_path / "report" / "report.md").read_text() == text
    assert {p.name for p in (tmp_path / "report").iterdir()} == {"report.md"} | {
        p.name for p in plots
    }
