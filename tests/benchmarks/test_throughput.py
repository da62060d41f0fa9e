"""The throughput benchmark's arithmetic: stage times from records, fast mode's cost."""

from __future__ import annotations

import json

import pytest

from benchmarks.throughput import _stage_times, compare_records, merge_run


def _rec(video, boxes, p, timings=None):
    return {"video": video, "status": "ok", "boxes": boxes, "p_fake": p, "timings": timings or {}}


def test_compare_records_gives_box_iou_and_p_fake_delta():
    exact = [_rec("a", [[0, 0, 10, 10], [0, 0, 10, 10]], 0.4), _rec("b", [None], 0.9)]
    fast = [_rec("a", [[0, 0, 10, 10], [5, 0, 15, 10]], 0.45), _rec("b", [None], 0.9)]
    c = compare_records(exact, fast)
    assert c["videos"] == 2 and c["min_box_iou"] == round(50 / 150, 5)
    assert c["mean_box_iou"] == round((1 + 50 / 150 + 1) / 3, 5)
    assert c["max_abs_delta_p_fake"] == 0.05 and c["videos_on_other_frames"] == 0
    # records of other frames (another sampling) are counted, never compared box by box
    exact[0]["frame_indices"], fast[0]["frame_indices"] = [0, 1], [0, 40]
    c = compare_records(exact, fast)
    assert (c["videos"], c["videos_on_other_frames"], c["min_box_iou"]) == (1, 1, 1.0)


def test_stage_times_per_video_and_per_frame():
    recs = [
        _rec("a", [], 0.1, {"decode": 0.2, "detect": 0.4, "classify": 0.6}),
        _rec("b", [], 0.1, {"decode": 0.4, "detect": 0.2, "classify": 0.2}),
    ]
    t = _stage_times(recs, 20)
    assert t["seconds_per_video"] == {"decode": 0.3, "detect": 0.3, "classify": 0.4}
    assert t["ms_per_frame"]["classify"] == 20.0
    baseline = [{"video": "a", "decode_s": 1.0, "detect_s": 2.0, "classify_s": 3.0}]
    assert _stage_times(baseline, 10)["ms_per_frame"] == {
        "decode": 100.0, "detect": 200.0, "classify": 300.0
    }  # fmt: skip


def test_stages_alone_crop_the_faces_they_time(tiny_model, shared_dir, tmp_path):
    """The stage-alone timing runs the pipeline's stages as the pipeline does: the crops come
    from face tracks, not from the whole-frame fallback (which made crop look 15x slower)."""
    from benchmarks.suite import SuiteConfig, bench_stages_alone

    clip = shared_dir / "videos" / "dfdc_like_real.mp4"
    cfg = SuiteConfig(
        model_dir=tiny_model,
        checkpoint=None,
        videos=[clip],
        videos_480p=[],
        detector=shared_dir / "models" / "det_500m.onnx",
        out=tmp_path,
    )
    alone = bench_stages_alone(cfg, n=4)
    assert alone["frames"] == 4 and alone["face_frames"] == 4, alone
    assert set(alone["seconds"]) == {"decode", "detect", "crop", "classify"}


def test_runs_merge_by_name_into_one_file(tmp_path):
    out = tmp_path / "throughput-2core-cpu.json"
    merge_run(out, "thread-budget", {"benchmark": "b", "rows": [1]})
    merge_run(out, "decode-workers", {"benchmark": "b", "rows": [2]})
    data = merge_run(out, "thread-budget", {"benchmark": "b", "rows": [3]})
    assert data["benchmark"] == "b" and list(data["runs"]) == ["thread-budget", "decode-workers"]
    assert data["runs"]["thread-budget"]["rows"] == [3]
    assert data["runs"]["decode-workers"]["rows"] == [2]
    assert json.loads(out.read_text()) == data
    single = tmp_path / "single.json"
    single.write_text(json.dumps({"benchmark": "b", "rows": []}))
    with pytest.raises(ValueError, match="single run"):
        merge_run(single, "x", {"benchmark": "b"})
