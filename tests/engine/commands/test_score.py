"""`dfe score` without Ray: records are written in files of a bounded size as the job goes."""

from __future__ import annotations

from pathlib import Path

from engine import distributed
from engine.cli import main
from engine.commands import score


def test_score_local_writes_bounded_files_as_it_goes(monkeypatch, tiny_model, models_dir,
                                                     shared_dir, tmp_path):  # fmt: skip
    monkeypatch.setattr(score, "LOCAL_CHUNK", 2)
    d = tmp_path / "in"
    d.mkdir()
    videos = sorted((shared_dir / "videos").glob("*.mp4"))[:4]  # four different files
    for i, video in enumerate(videos):
        (d / f"{i}.mp4").symlink_to(video)
    (d / "4.mp4").write_text("not a video\n")
    out = tmp_path / "scores.jsonl"
    code = main(
        ["score", str(d), "--model", str(tiny_model), "--out", str(out), "--seq-len", "3",
         "--backend", "ort", "--models", models_dir, "--no-download"]
    )  # fmt: skip
    assert code == 3  # the text file failed, and is recorded
    assert len(list(out.glob("*.json"))) == 3  # 2 + 2 + 1 records
    records = distributed.read_records(out)
    assert sorted(Path(r["video"]).name for r in records) == [f"{i}.mp4" for i in range(5)]
    assert [r["status"] for r in sorted(records, key=lambda r: r["video"])] == ["ok"] * 4 + [
        "error"
    ]
