"""`dfe eval` metrics against hand-computed cases (verdicts, coverage, calibration), label
files, the untrained/uncalibrated marks, and end-to-end runs."""

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
    # records of versions before verdicts (no verdict, no p_fake_calibrated): read by their
    # label and p_fake, so every scored one is decided
    m = evaluation.evaluate(LABELS, RECORDS)
    assert m["decided"] == 5 and m["coverage"] == 1.0 and m["calibrated"] is None
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


CALIBRATED = {"status": "calibrated", "temperature": 2.0, "fake_at": 0.6, "real_below": 0.4}
UNCALIBRATED = {"status": "uncalibrated", "temperature": 1.0, "fake_at": 0.6, "real_below": 0.4}


def _verdict_rec(video, verdict, p_cal, p_plain, *, reasons=(), calibration=CALIBRATED):
    """A record of this version: verdict, calibrated and plain p_fake, the argmax label."""
    return {
        "video": video, "status": "ok", "verdict": verdict, "reasons": list(reasons),
        "p_fake_calibrated": p_cal, "p_fake": p_plain,
        "label": "FAKE" if p_plain >= 0.5 else "REAL", "calibration": calibration,
        "warnings": [],
    }  # fmt: skip


# true label, verdict, p_fake_calibrated, plain p_fake; plus an error and a missing video
VERDICT_LABELS = [
    ("a", "FAKE"), ("b", "FAKE"), ("c", "FAKE"), ("d", "REAL"), ("e", "REAL"),
    ("f", "FAKE"), ("g", "REAL"), ("bad", "REAL"), ("gone", "FAKE"),
]  # fmt: skip
VERDICT_RECORDS = [
    _verdict_rec("a", "FAKE", 0.95, 0.99),
    _verdict_rec("b", "FAKE", 0.75, 0.90),
    _verdict_rec("c", "REAL", 0.35, 0.20),  # a missed fake
    _verdict_rec("d", "FAKE", 0.75, 0.90),  # a real video called FAKE
    _verdict_rec("e", "REAL", 0.15, 0.01),
    _verdict_rec("f", "UNCERTAIN", 0.55, 0.60, reasons=["SCORE_IN_UNCERTAIN_BAND"]),
    _verdict_rec("g", "NO_FACE", 0.85, 0.95, reasons=["NO_FACE_DETECTED"]),
    {"video": "bad", "status": "error", "error": "not a video", "verdict": None},
]


def test_evaluate_verdicts_coverage_and_accuracy_over_decided_videos_only():
    m = evaluation.evaluate(VERDICT_LABELS, VERDICT_RECORDS)
    assert (m["videos"], m["scored"], m["n_errors"], m["missing"]) == (9, 7, 1, ["gone"])
    assert m["verdicts"] == {"FAKE": 3, "REAL": 2, "UNCERTAIN": 1, "NO_FACE": 1}
    assert m["verdicts_by_class"] == {
        "FAKE": {"FAKE": 2, "REAL": 1, "UNCERTAIN": 1, "NO_FACE": 0},
        "REAL": {"FAKE": 1, "REAL": 1, "UNCERTAIN": 0, "NO_FACE": 1},
    }
    assert m["decided"] == 5 and m["coverage"] == pytest.approx(5 / 7)
    # a, b, c, d, e only: UNCERTAIN (f) and NO_FACE (g) are neither hits nor misses
    assert m["confusion_matrix"] == [[2, 1], [1, 1]]
    assert m["accuracy"] == pytest.approx(3 / 5)
    assert m["per_class"]["FAKE"]["precision"] == pytest.approx(2 / 3)
    assert m["per_class"]["FAKE"]["recall"] == pytest.approx(2 / 3)
    assert m["per_class"]["REAL"]["precision"] == pytest.approx(1 / 2)
    assert m["per_class"]["REAL"]["support"] == 2
    # the original's argmax label over all 7 scored: a, b, e, f right; c, d, g wrong
    assert m["label_accuracy"] == pytest.approx(4 / 7)
    assert m["untrained"] is False and m["calibrated"] is True
    assert m["calibration"]["temperature"] == 2.0


def test_evaluate_roc_and_calibration_over_videos_with_a_face_by_calibrated_p_fake():
    m = evaluation.evaluate(VERDICT_LABELS, VERDICT_RECORDS)
    # a b c d e f (g has no face): FAKE 0.95 0.75 0.35 0.55, REAL 0.75 0.15
    assert m["with_face"] == 6
    # 8 FAKE x REAL pairs: 0.95 wins 2, 0.75 ties 1 and wins 1, 0.35 and 0.55 win 1 each
    assert m["roc_auc"] == pytest.approx(5.5 / 8)
    # bins of 0.1: |share FAKE - mean p| = 0.05 (a), 0.25 x 2 (b, d: share 1/2, mean 0.75),
    # 0.65 (c), 0.15 (e), 0.45 (f): weighted by 1/6 each
    assert m["ece"] == pytest.approx((0.05 + 2 * 0.25 + 0.65 + 0.15 + 0.45) / 6)
    brier = (0.05**2 + 0.25**2 + 0.65**2 + 0.75**2 + 0.15**2 + 0.45**2) / 6
    assert m["brier"] == pytest.approx(brier)
    rows = {round(r["low"], 1): r for r in m["reliability"]}
    assert sum(r["videos"] for r in m["reliability"]) == 6 and m["calibration_bins"] == 10
    assert rows[0.7]["videos"] == 2 and rows[0.7]["mean_p_fake"] == pytest.approx(0.75)
    assert rows[0.7]["fake_share"] == pytest.approx(0.5)
    assert rows[0.8]["videos"] == 0 and rows[0.8]["mean_p_fake"] is None  # g is not in it
    text = evaluation.format_report(m, seq_len=20)
    assert "verdicts: 3 FAKE, 2 REAL, 1 UNCERTAIN, 1 NO_FACE; coverage 71.43%" in text
    assert "accuracy 60.00% of the 5 decided videos" in text
    assert "ROC AUC 0.6875 (the 6 videos with a face" in text
    assert "ECE 0.3000  Brier 0.2125" in text
    assert "7/9 videos scored, 1 error, 1 missing" in text
    assert "UNTRAINED" not in text and "uncalibrated" not in text


def test_format_report_marks_untrained_and_uncalibrated_models():
    uncal = [
        _verdict_rec("a", "UNCERTAIN", 0.7, 0.7, reasons=["UNTRAINED_MODEL"],
                     calibration=UNCALIBRATED),
        _verdict_rec("b", "UNCERTAIN", 0.2, 0.2, reasons=["UNTRAINED_MODEL"],
                     calibration=UNCALIBRATED),
    ]  # fmt: skip
    m = evaluation.evaluate([("a", "FAKE"), ("b", "REAL")], uncal)
    assert m["untrained"] is True and m["calibrated"] is False
    assert m["decided"] == 0 and m["coverage"] == 0.0 and m["accuracy"] is None
    assert m["roc_auc"] == 1.0  # every video with a face, decided or not
    text = evaluation.format_report(m, seq_len=4)
    first = text.splitlines()[0]
    assert first.startswith("UNTRAINED model") and "mean nothing" in first
    assert "uncalibrated model: p_fake_calibrated is the plain softmax" in text
    assert "default band (REAL below 0.40, FAKE from 0.60" in text
    assert "dfe calibrate LABELS.csv --model DIR" in text
    assert "accuracy n/a of the 0 decided videos" in text

    # the engine's sidecar flag marks it too, even when no record says so
    trained = [_verdict_rec("a", "FAKE", 0.9, 0.9), _verdict_rec("b", "REAL", 0.1, 0.1)]
    flagged = evaluation.evaluate([("a", "FAKE"), ("b", "REAL")], trained, untrained=True)
    assert flagged["untrained"] is True
    assert evaluation.format_report(flagged).startswith("UNTRAINED model")
    plain = evaluation.evaluate([("a", "FAKE"), ("b", "REAL")], trained)
    assert plain["untrained"] is False
    assert not evaluation.format_report(plain).startswith("UNTRAINED")
    # an error record of the demo model carries its warning: that marks the run as well
    demo_error = {
        "video": "a",
        "status": "error",
        "error": "x",
        "warnings": ["untrained demo model (dfe demo): its labels ... mean nothing"],
    }
    assert evaluation.evaluate([("a", "FAKE")], [demo_error])["untrained"] is True  # fmt: skip


def test_plot_has_three_panels(tmp_path):
    pytest.importorskip("matplotlib")
    m = evaluation.evaluate(VERDICT_LABELS, VERDICT_RECORDS)
    png = evaluation.plot(m, tmp_path / "eval.png", title="t")
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    # confusion matrix, ROC and reliability diagram side by side: 15 x 4.8 inches at 100 dpi
    assert int.from_bytes(data[16:20], "big") == 1500


def test_plural_words():
    assert evaluation.plural(1, "video") == "1 video"
    assert evaluation.plural(2, "video") == "2 videos"
    assert evaluation.plural(0, "error") == "0 errors"


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
        # every scored video has a verdict; the confusion matrix holds the decided ones
        assert sum(r["verdicts"].values()) == 6
        assert [sum(c.values()) for c in r["verdicts_by_class"].values()] == [4, 2]
        decided = r["verdicts"]["FAKE"] + r["verdicts"]["REAL"]
        assert sum(map(sum, r["confusion_matrix"])) == r["decided"] == decided
        assert r["coverage"] == pytest.approx(decided / 6)
        assert r["accuracy"] is None or 0.0 <= r["accuracy"] <= 1.0
        assert 0.0 <= r["roc_auc"] <= 1.0 and r["with_face"] == 6 - r["verdicts"]["NO_FACE"]
        assert 0.0 <= r["ece"] <= 1.0 and 0.0 <= r["brier"] <= 1.0
        assert sum(b["videos"] for b in r["reliability"]) == r["with_face"]
        # the tiny model is trained (not the demo) but never calibrated
        assert r["untrained"] is False and r["calibrated"] is False
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
    assert report["untrained"] is False and report["calibrated"] is False
    printed = capsys.readouterr().out
    assert "rows true FAKE/REAL" in printed and "sequence length 6" in printed
    assert "uncalibrated model" in printed and "UNTRAINED" not in printed


def test_eval_marks_the_untrained_demo_model(shared_dir, tmp_path, capsys):
    from tests.tiny_model import make_tiny_model

    demo = make_tiny_model(tmp_path / "demo", demo=True)
    labels = tmp_path / "labels.csv"
    labels.write_text("pair480p_fake.mp4,FAKE\npair480p_real.mp4,REAL\n")
    out = tmp_path / "eval"
    rc = run_command(
        "engine.commands.eval",
        ["eval", str(labels), "--model", str(demo), "--seq-len", "3",
         "--root", str(shared_dir / "videos"), "-o", str(out), "--no-plots", "--backend", "ort",
         "--models", str(shared_dir / "models"), "--no-download"],
    )  # fmt: skip
    assert rc == 0
    report = json.loads((out / "metrics.json").read_text())
    (r,) = report["results"]
    assert report["untrained"] is True and r["untrained"] is True
    assert r["verdicts"]["UNCERTAIN"] == 2 and r["coverage"] == 0.0  # the demo never decides
    printed = capsys.readouterr().out
    assert printed.startswith("UNTRAINED model: these metrics are of the untrained demo model")
