"""`dfe eval` metrics against a hand-computed case, label files, and an end-to-end run."""

from __future__ import annotations

import argparse
import json

import pytest

from engine import evaluation

# five scored videos, one error, one never scored
LABELS = [
    ("a", "FAKE"),
    ("b", "FAKE"),
    ("c", "FAKE"),
    ("d", "REAL"),
    ("e", "REAL"),
    ("bad", "REAL"),
    ("gone", "FAKE"),
]


def _rec(video, label, p_fake):
    return {"video": video, "status": "ok", "label": label, "p_fake": p_fake}


RECORDS = [
    _rec("a", "FAKE", 0.9),
    _rec("b", "FAKE", 0.6),
    _rec("c", "REAL", 0.3),
    _rec("d", "FAKE", 0.6),
    _rec("e", "REAL", 0.1),
    {"video": "bad", "status": "error", "error": "not a video"},
]


def test_evaluate_matches_hand_computed_case():
    m = evaluation.evaluate(LABELS, RECORDS)
    # rows true FAKE/REAL, columns predicted FAKE/REAL, as the original printed it
    assert m["confusion_matrix"] == [[2, 1], [1, 1]]
    assert m["accuracy"] == pytest.approx(3 / 5)
    assert m["per_class"]["FAKE"]["precision"] == pytest.approx(2 / 3)
    assert m["per_class"]["FAKE"]["recall"] == pytest.approx(2 / 3)
    assert m["per_class"]["REAL"]["precision"] == pytest.approx(1 / 2)
    assert m["per_class"]["REAL"]["recall"] == pytest.approx(1 / 2)
    assert m["per_class"]["FAKE"]["support"] == 3 and m["per_class"]["REAL"]["support"] == 2
    # 6 FAKE x REAL pairs: 4 won, 1 tie (0.6 vs 0.6), 1 lost -> 4.5 / 6
    assert m["roc_auc"] == pytest.approx(0.75)
    assert m["roc"]["fpr"] == pytest.approx([0, 0, 0.5, 0.5, 1])
    assert m["roc"]["tpr"] == pytest.approx([0, 1 / 3, 2 / 3, 1, 1])
    assert m["roc"]["thresholds"] == [None, 0.9, 0.6, 0.3, 0.1]
    # errors and missing videos are counted and listed, not dropped silently
    assert m["videos"] == 7 and m["scored"] == 5 and m["n_errors"] == 1
    assert m["errors"] == [{"video": "bad", "label": "REAL", "error": "not a video"}]
    assert m["missing"] == ["gone"]
    text = evaluation.format_report(m, seq_len=20)
    assert "[[2, 1], [1, 1]]" in text and "accuracy 60.00%" in text and "0.7500" in text


def test_metrics_one_class_or_nothing_scored_are_undefined_not_errors():
    m = evaluation.evaluate([("a", "FAKE")], [_rec("a", "REAL", 0.2)])
    assert m["confusion_matrix"] == [[0, 1], [0, 0]]
    assert m["roc_auc"] is None and m["per_class"]["FAKE"]["precision"] is None
    empty = evaluation.evaluate([("a", "FAKE")], [])
    assert empty["accuracy"] is None and empty["missing"] == ["a"]


# labels of the shared videos: DFDC fakes from their metadata, the others by file name
SHARED_LABELS = {
    "dfdc_abofeumbvv_fake.mp4": "FAKE",
    "dfdc_abqwwspghj_fake.mp4": "FAKE",
    "dfdc_like_fake.mp4": "FAKE",
    "dfdc_like_real.mp4": "REAL",
    "pair480p_fake.mp4": "FAKE",
    "pair480p_real.mp4": "REAL",
}


def run_command(module: str, argv: list[str]) -> int:
    """Run one `dfe` subcommand module the way `dfe` does (parser built from its register())."""
    import importlib

    parser = argparse.ArgumentParser(prog="dfe")
    importlib.import_module(module).register(parser.add_subparsers())
    args = parser.parse_args(argv)
    return args.func(args)


def write_shared_labels(path, *, extra: str = "") -> None:
    path.write_text("".join(f"{n},{lab}\n" for n, lab in SHARED_LABELS.items()) + extra)


def test_eval_end_to_end_on_shared_videos(tiny_model, shared_dir, tmp_path, capsys):
    labels = tmp_path / "labels.csv"
    write_shared_labels(labels, extra="missing_clip.mp4,REAL\n")
    out = tmp_path / "eval"
    rc = run_command(
        "engine.commands.eval",
        ["eval", str(labels), "--model", str(tiny_model), "--seq-len", "4", "6",
         "--root", str(shared_dir / "videos"), "-o", str(out), "--backend", "ort",
         "--models", str(shared_dir / "models"), "--no-download"],
    )  # fmt: skip
    assert rc == 3  # one unreadable video: reported, the evaluation still finishes
    report = json.loads((out / "metrics.json").read_text())
    assert [r["seq_len"] for r in report["results"]] == [4, 6]
    for r in report["results"]:
        n = r["seq_len"]
        assert r["videos"] == 7 and r["scored"] == 6 and r["n_errors"] == 1
        assert r["errors"][0]["video"].endswith("missing_clip.mp4")
        assert sum(map(sum, r["confusion_matrix"])) == 6
        assert [sum(row) for row in r["confusion_matrix"]] == [4, 2]
        assert 0.0 <= r["roc_auc"] <= 1.0 and 0.0 <= r["accuracy"] <= 1.0
        assert (out / f"eval_N{n}.png").stat().st_size > 1000
        preds = [json.loads(x) for x in (out / f"predictions_N{n}.jsonl").read_text().split("\n")
                 if x]  # fmt: skip
        assert len(preds) == 7 and all(p["seq_len"] == n for p in preds)
        # the metrics are those of the records the runtime wrote
        recomputed = evaluation.evaluate(
            evaluation.read_labels(labels, root=shared_dir / "videos"), preds
        )
        assert recomputed["confusion_matrix"] == r["confusion_matrix"]
        assert recomputed["roc_auc"] == pytest.approx(r["roc_auc"])
    printed = capsys.readouterr().out
    assert "rows true FAKE/REAL" in printed and "sequence length 6" in printed
