"""Metrics of a labelled set: coverage of the verdicts, the original's confusion matrix,
per-class precision/recall, ROC AUC and the calibration of ``p_fake_calibrated``.

Pure functions on labels and ``dfe predict`` records, so they are checked against hand-computed
cases. The label file reader and the metric functions themselves live in the shared base
(:mod:`core.labels`, :mod:`core.metrics`), where ``dfe train``'s validation uses
the same ones. Class order is the original's: FAKE first, then REAL (its label indices 0 and
1); the confusion matrix's rows are the true class and its columns the predicted one, as the
original printed it.

What each number covers (the engine answers FAKE, REAL, UNCERTAIN or NO_FACE,
:mod:`core.verdict`):

* ``verdicts`` and ``coverage``: every scored video has a verdict; coverage is the share of
  them that got a decided one (FAKE or REAL).
* ``confusion_matrix``, ``accuracy``, ``per_class``: the decided videos only (the columns are
  their verdicts); UNCERTAIN and NO_FACE are counted apart, never as errors or hits.
* ``roc_auc``, ``roc``, ``ece``, ``brier``, ``reliability``: every scored video with a face
  (NO_FACE excluded), scored by ``p_fake_calibrated``, FAKE the positive class.
* ``label_accuracy``: the original's measure, its argmax ``label`` over every scored video.

Records of versions before verdicts (no ``verdict`` field) are read by their ``label``, and by
``p_fake`` where they have no ``p_fake_calibrated``.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from core.errors import MissingDependencyError
from core.labels import CLASSES, read_labels
from core.metrics import (
    CALIBRATION_BINS,
    accuracy,
    brier_score,
    class_metrics,
    confusion_matrix,
    expected_calibration_error,
    ratio,
    reliability,
    roc_auc,
    roc_curve,
)
from core.verdict import DEFAULT_FAKE_AT, DEFAULT_REAL_BELOW, VERDICTS

log = logging.getLogger(__name__)

__all__ = [
    "CLASSES",
    "LOW_COVERAGE",
    "VERDICTS",
    "class_metrics",
    "confusion_matrix",
    "evaluate",
    "format_report",
    "is_untrained",
    "plot",
    "plural",
    "read_labels",
    "record_p_fake",
    "record_verdict",
    "roc_auc",
    "roc_curve",
]

#: A scored video with fewer frames than this share holding the scored face is listed.
LOW_COVERAGE = 0.5
#: The words a record's warnings use for the untrained demo model (engine.pipeline).
UNTRAINED_NOTE = "untrained demo model"
#: How to calibrate a model (the uncalibrated marks quote it).
CALIBRATE_HINT = "dfe calibrate LABELS.csv --model DIR"


def plural(n: int, noun: str, plural_form: str | None = None) -> str:
    """``"1 video"``, ``"2 videos"``: ``n`` and the noun in the right number."""
    return f"{n} {noun if n == 1 else plural_form or noun + 's'}"


def is_untrained(record: dict[str, Any]) -> bool:
    """Whether the untrained demo model made ``record`` (reason ``UNTRAINED_MODEL``, or a
    warning naming the untrained demo model: error records carry that one too)."""
    return "UNTRAINED_MODEL" in (record.get("reasons") or []) or any(
        UNTRAINED_NOTE in w for w in record.get("warnings") or []
    )


def record_verdict(record: dict[str, Any]) -> str | None:
    """A record's verdict; for a scored record of a version before verdicts, its label."""
    verdict = record.get("verdict")
    if verdict in VERDICTS:
        return verdict
    return record.get("label") if record.get("status") == "ok" else None


def record_p_fake(record: dict[str, Any]) -> float:
    """A scored record's ``p_fake_calibrated`` (its ``p_fake`` in records without one)."""
    p = record.get("p_fake_calibrated")
    return float(record["p_fake"] if p is None else p)


def _calibration_of(scored: list[dict[str, Any]]) -> tuple[bool | None, dict[str, Any] | None]:
    """(calibrated, the calibration of the first record that names one): calibrated is True
    when every record that names its calibration was calibrated, None when none names it."""
    named = [r["calibration"] for r in scored if r.get("calibration")]
    if not named:
        return None, None
    return all(c.get("status") == "calibrated" for c in named), named[0]


def evaluate(
    labels: Iterable[tuple[str, str]],
    records: Iterable[dict[str, Any]],
    *,
    untrained: bool = False,
) -> dict:
    """Metrics of ``records`` (``dfe predict`` records) against ``labels`` (video, REAL/FAKE),
    each over the videos the module docstring says. ``untrained``: the model is the untrained
    demo (its sidecar says so); a record with reason ``UNTRAINED_MODEL`` marks it as well.

    Videos that could not be scored are counted and listed under ``errors``, and labelled
    videos with no record at all under ``missing``; the metrics cover the scored ones.
    """
    truth = dict(labels)
    by_video = {r["video"]: r for r in records}
    scored: list[tuple[str, dict[str, Any]]] = []  # (true label, record)
    errors: list[dict[str, str]] = []
    missing: list[str] = []
    low_coverage: list[dict[str, Any]] = []
    for video, label in truth.items():
        rec = by_video.get(video)
        if rec is None:
            missing.append(video)
        elif rec["status"] != "ok":
            errors.append({"video": video, "label": label, "error": rec.get("error") or ""})
            untrained |= is_untrained(rec)
        else:
            scored.append((label, rec))
            untrained |= is_untrained(rec)
            cover = rec.get("face_coverage")
            if cover is not None and cover < LOW_COVERAGE:
                low_coverage.append({"video": video, "label": label, "face_coverage": cover})
    verdicts = {v: 0 for v in VERDICTS}
    by_class = {c: {v: 0 for v in VERDICTS} for c in CLASSES}
    decided_true: list[str] = []
    decided_pred: list[str] = []
    face_true: list[str] = []
    face_scores: list[float] = []
    for label, rec in scored:
        verdict = record_verdict(rec)
        if verdict in verdicts:
            verdicts[verdict] += 1
            by_class[label][verdict] += 1
        if verdict in CLASSES:
            decided_true.append(label)
            decided_pred.append(verdict)
        if verdict != "NO_FACE":
            face_true.append(label)
            face_scores.append(record_p_fake(rec))
    matrix = confusion_matrix(decided_true, decided_pred)
    labelled = [(t, r["label"]) for t, r in scored if r.get("label") in CLASSES]
    fpr, tpr, thr = roc_curve(face_true, face_scores)
    calibrated, calibration = _calibration_of([r for _, r in scored])
    return {
        "videos": len(truth),
        "scored": len(scored),
        "n_errors": len(errors),
        "errors": errors,
        "missing": missing,
        # scored mostly on whole frames (no face found): their metrics are not about faces
        "low_face_coverage": low_coverage,
        # the model is the untrained demo: every number below means nothing
        "untrained": bool(untrained),
        # False: p_fake_calibrated is the plain softmax and the verdict band the default
        "calibrated": calibrated,
        "calibration": calibration,
        "verdicts": verdicts,
        "verdicts_by_class": by_class,
        "decided": len(decided_true),
        "coverage": ratio(len(decided_true), len(scored)),
        "classes": list(CLASSES),
        # over the decided videos only: rows true FAKE/REAL, columns verdict FAKE/REAL
        "confusion_matrix": matrix,
        "accuracy": accuracy(matrix),
        "per_class": class_metrics(matrix),
        # the original's argmax label over every scored video (no UNCERTAIN)
        "label_accuracy": accuracy(confusion_matrix(*zip(*labelled))) if labelled else None,
        # over every scored video with a face, by p_fake_calibrated
        "with_face": len(face_true),
        "roc_auc": roc_auc(face_true, face_scores),
        "roc": {"fpr": fpr, "tpr": tpr, "thresholds": [None if t == math.inf else t for t in thr]},
        "calibration_bins": CALIBRATION_BINS,
        "ece": expected_calibration_error(face_true, face_scores),
        "brier": brier_score(face_true, face_scores),
        "reliability": reliability(face_true, face_scores),
    }


def _band(metrics: dict) -> tuple[float, float]:
    """(real_below, fake_at) the records' verdicts used (the default when they do not say)."""
    cal = metrics.get("calibration") or {}
    return (
        float(cal.get("real_below", DEFAULT_REAL_BELOW)),
        float(cal.get("fake_at", DEFAULT_FAKE_AT)),
    )


def format_report(metrics: dict, *, seq_len: int | None = None) -> str:
    """The report as text: the marks (untrained model first, uncalibrated), the verdicts and
    coverage, the confusion matrix of the decided videos as the original printed it, the
    metrics (each saying which videos it covers), then the videos listed."""

    def pct(x: float | None) -> str:
        return "n/a" if x is None else f"{100 * x:.2f}%"

    def num(x: float | None) -> str:
        return "n/a" if x is None else f"{x:.4f}"

    lines = []
    if metrics.get("untrained"):
        lines.append(
            "UNTRAINED model: these metrics are of the untrained demo model and mean nothing "
            "(export a trained checkpoint with dfe export)"
        )
    m = metrics["confusion_matrix"]
    head = f"sequence length {seq_len}: " if seq_len is not None else ""
    scored, decided = metrics["scored"], metrics.get("decided", sum(map(sum, m)))
    lines.append(
        f"{head}{metrics['scored']}/{plural(metrics['videos'], 'video')} scored, "
        f"{plural(metrics['n_errors'], 'error')}, {len(metrics['missing'])} missing"
    )
    if metrics.get("calibrated") is False:
        real_below, fake_at = _band(metrics)
        lines.append(
            "uncalibrated model: p_fake_calibrated is the plain softmax and the verdicts use "
            f"the default band (REAL below {real_below:.2f}, FAKE from {fake_at:.2f}, UNCERTAIN "
            f"between); calibrate with: {CALIBRATE_HINT}"
        )
    verdicts = metrics.get("verdicts")
    if verdicts is not None:
        lines.append(
            "verdicts: " + ", ".join(f"{verdicts[v]} {v}" for v in VERDICTS) + "; coverage "
            f"{pct(metrics['coverage'])} ({decided} of {plural(scored, 'scored video')} "
            "decided FAKE or REAL)"
        )
        for name, counts in metrics["verdicts_by_class"].items():
            lines.append(f"  true {name}: " + ", ".join(f"{counts[v]} {v}" for v in VERDICTS))
    auc = metrics["roc_auc"]
    with_face = metrics.get("with_face", scored)
    lines += [
        "confusion matrix of the decided videos (rows true FAKE/REAL, columns verdict FAKE/REAL):",
        f"[[{m[0][0]}, {m[0][1]}], [{m[1][0]}, {m[1][1]}]]",
        f"accuracy {pct(metrics['accuracy'])} of the {plural(decided, 'decided video')}   "
        "ROC AUC "
        + ("n/a (one class only)" if auc is None else f"{auc:.4f}")
        + f" (the {plural(with_face, 'video')} with a face, by p_fake_calibrated)",
    ]
    for name, c in metrics["per_class"].items():
        lines.append(
            f"  {name}: precision {pct(c['precision'])}  recall {pct(c['recall'])}  "
            f"support {c['support']} (decided)"
        )
    if "ece" in metrics:
        lines.append(
            f"calibration of p_fake_calibrated ({plural(with_face, 'video')} with a face, "
            f"{metrics['calibration_bins']} bins): ECE {num(metrics['ece'])}  Brier "
            f"{num(metrics['brier'])} (0 is perfect)"
        )
    if metrics.get("label_accuracy") is not None:
        lines.append(
            f"argmax label accuracy {pct(metrics['label_accuracy'])} (the original's REAL/FAKE "
            f"label, every scored video)"
        )
    low = metrics.get("low_face_coverage", [])
    if low:
        lines.append(
            f"{plural(len(low), 'scored video')} had a face in fewer than {LOW_COVERAGE:.0%} of "
            "their frames (scored mostly on whole frames):"
        )
        for r in low[:20]:
            lines.append(f"  low face coverage {r['face_coverage']:.2f}: {r['video']}")
    for e in metrics["errors"][:20]:
        lines.append(f"  error: {e['video']}: {e['error'][:100]}")
    if len(metrics["errors"]) > 20:
        lines.append(f"  ... {len(metrics['errors']) - 20} more errors in the JSON")
    return "\n".join(lines)


def plot(metrics: dict, path: str | os.PathLike[str], *, title: str = "") -> Path:
    """A PNG with the confusion matrix of the decided videos (left), the ROC curve (middle) and
    the reliability diagram of p_fake_calibrated (right: mean p_fake against the share truly
    FAKE per bin, the diagonal of perfect calibration, each bin's count)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise MissingDependencyError(
            f"matplotlib is needed for the evaluation plots but could not be imported ({exc}); "
            "install it with: pip install 'deepfake-engine[eval]' (or pass --no-plots)"
        ) from exc
    path = Path(path)
    fig, (ax_m, ax_r, ax_c) = plt.subplots(1, 3, figsize=(15, 4.8))
    m = metrics["confusion_matrix"]
    ax_m.imshow(m, cmap="Blues")
    peak = max(max(row) for row in m) or 1
    for i in range(2):
        for j in range(2):
            ax_m.text(
                j, i, str(m[i][j]), ha="center", va="center",
                color="white" if m[i][j] > peak / 2 else "black", fontsize=14,
            )  # fmt: skip
    ax_m.set_xticks([0, 1], [f"verdict {c}" for c in CLASSES])
    ax_m.set_yticks([0, 1], [f"true {c}" for c in CLASSES])
    acc, cov = metrics["accuracy"], metrics.get("coverage")
    ax_m.set_title(
        "decided videos"
        + ("" if acc is None else f": accuracy {100 * acc:.1f}%")
        + ("" if cov is None else f", coverage {100 * cov:.1f}%")
    )
    roc = metrics["roc"]
    auc = metrics["roc_auc"]
    if roc["fpr"]:
        ax_r.plot(roc["fpr"], roc["tpr"], marker=".", label=f"AUC {auc:.3f}")
        ax_r.legend(loc="lower right")
    else:
        ax_r.text(0.5, 0.5, "ROC undefined: one class only", ha="center", va="center")
    ax_r.plot([0, 1], [0, 1], ls="--", color="grey", lw=0.8)
    ax_r.set_xlabel("false positive rate (REAL called FAKE)")
    ax_r.set_ylabel("true positive rate (FAKE caught)")
    ax_r.set_title("ROC, positive class FAKE, score p_fake_calibrated")
    _reliability_panel(ax_c, metrics)
    heading = [title] if title else []
    if metrics.get("untrained"):
        heading.insert(0, "UNTRAINED model: these metrics mean nothing")
    if heading:
        fig.suptitle("\n".join(heading), color="red" if metrics.get("untrained") else "black")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _reliability_panel(ax: Any, metrics: dict) -> None:
    """The reliability diagram of ``metrics["reliability"]`` on ``ax``."""
    rows = [r for r in metrics.get("reliability", []) if r["videos"]]
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=0.8, label="perfect calibration")
    if rows:
        xs = [r["mean_p_fake"] for r in rows]
        ys = [r["fake_share"] for r in rows]
        ax.plot(xs, ys, marker="o", label="share truly FAKE")
        for r, x, y in zip(rows, xs, ys, strict=True):
            ax.annotate(
                f"n={r['videos']}", (x, y), textcoords="offset points",
                xytext=(4, 5 if y < 0.5 else -12), fontsize=8,
            )  # fmt: skip
        ax.legend(loc="best", fontsize=8)
    else:
        ax.text(0.5, 0.5, "no scored video with a face", ha="center", va="center")
    ax.set_xlim(-0.02, 1.02)
    ax.set_ylim(-0.05, 1.05)
    ax.set_xlabel("mean p_fake_calibrated in the bin")
    ax.set_ylabel("share of the bin truly FAKE")
    ece, brier = metrics.get("ece"), metrics.get("brier")
    head = "reliability"
    if metrics.get("calibrated") is False:
        head += " (uncalibrated: plain softmax)"
    if ece is not None:
        head += f"\nECE {ece:.3f}, Brier {brier:.3f}"
    ax.set_title(head)
