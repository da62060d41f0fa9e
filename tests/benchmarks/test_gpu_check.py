"""The GPU check's orchestration pieces that run anywhere: result names, the section time limit,
and the table rendered from partial results."""

from __future__ import annotations

import argparse
import sys
import time

from benchmarks import gpu_check


def test_gpu_check_name_comes_from_the_cuda_device_name():
    assert gpu_check._name_for("NVIDIA H200", False) == "h200"
    assert gpu_check._name_for("NVIDIA GeForce RTX 4090", False) == "geforce-rtx-4090"
    assert gpu_check._name_for("NVIDIA H200", True) == "dryrun-cpu"
    assert gpu_check._name_for(None, False) == "dryrun-cpu"


def test_gpu_check_kills_a_section_that_overruns(tmp_path, monkeypatch):
    """A section past its limit is killed with its process group and reported, not waited on."""
    sleeper = [sys.executable, "-c", "import subprocess, sys, time; "
               "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
               "time.sleep(60)"]  # fmt: skip
    real_popen = gpu_check.subprocess.Popen

    def popen(cmd, **kw):
        return real_popen(sleeper, **kw)

    monkeypatch.setattr(gpu_check.subprocess, "Popen", popen)
    t = time.monotonic()
    rc, killed = gpu_check._run_child("env", 1.5, {}, [], tmp_path / "env.log")
    assert killed and rc is None
    assert time.monotonic() - t < 10


def test_gpu_check_table_shows_partial_and_skipped_sections():
    rate = {"median": 1000.0, "p25": 900.0, "p75": 1100.0}
    sections = {
        "env": {"status": "ok", "result": {"gpu": "NVIDIA H200", "cpu_cores": 16}},
        "tests": {
            "status": "ok",
            "result": {
                "summary": "11 passed",
                "returncode": 0,
                "parity": [
                    {"what": "classifier", "device": "cuda:0", "precision": "fp16",
                     "cuda_graphs": True, "clip_max_delta": 0.001, "frame_max_delta": 0.004},
                    {"what": "detector", "device": "cuda", "batch": 7, "iou": 0.9999,
                     "score": 1e-6},
                ],
            },
        },
        "classifier": {
            "status": "timeout",
            "error": "killed after 130s (its hard limit)",
            "result": {"rows": [
                {"precision": "fp16", "batch": 256, "channels_last": True, "cuda_graphs": False,
                 "device_crops_per_s": rate, "infer_crops_per_s": rate},
                {"precision": "fp16", "batch": 256, "channels_last": True, "cuda_graphs": True,
                 "device_crops_per_s": {**rate, "median": 1250.0}, "infer_crops_per_s": rate},
                {"precision": "fp16", "batch": 256, "channels_last": False, "cuda_graphs": False,
                 "device_crops_per_s": {**rate, "median": 800.0}, "infer_crops_per_s": rate},
            ]},
        },
        "compile": {"status": "skipped", "reason": "only 20s left"},
    }  # fmt: skip
    results = gpu_check.assemble(sections, argparse.Namespace(dry_run=False))
    results["wall_s"] = 400
    assert results["gpu"] == "NVIDIA H200" and results["cpu_cores"] == 16
    text = gpu_check.table(results)
    assert "classifier  timeout" in text and "killed after 130s" in text
    assert "compile     skipped" in text and "only 20s left" in text
    assert "parity classifier cuda:0 fp16 cuda_graphs: clip 0.001 frame 0.004" in text
    assert "fp16" in text and "b256" in text and "1000" in text
    assert "fp16 gains: graphs b256 +25%, channels_last b256 +25%" in text
