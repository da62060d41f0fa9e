"""Metrics of a labelled set: the original's confusion matrix, per-class precision/recall, ROC AUC.

Pure functions on labels and ``dfe predict`` records, so they are checked against hand-computed
cases. The label file reader and the metric functions themselves live in the shared base
(:mod:`engine.core.labels`, :mod:`engine.core.metrics`), where ``dfe train``'s validation uses
the same ones. Class order is the original's: FAKE first, then REAL (its label indices 0 and
1); the confusion matrix's rows are the true class and its columns the predicted one, as the
original printed it. ROC treats FAKE as the positive class and scores videos by ``p_fake``.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from engine.core.errors import MissingDependencyError
from engine.core.labels import CLASSES, read_labels
from engine.core.metrics import (
    accuracy,
    class_metrics,
    confusion_matrix,
    roc_auc,
    roc_curve,
)

log = logging.getLogger(__name__)

__all__ = [
    "CLASSES",
    "LOW_COVERAGE",
    "class_metrics",
    "confusion_matrix",
    "evaluate",
    "format_report",
    "plot",
    "read_labels",
    "roc_auc",
    "roc_curve",
]

#: A scored video with fewer frames than this share holding the scored face is listed.
LOW_COVERAGE = 0.5


def evaluate(labels: Iterable[tuple[str, str]], records: Iterable[dict[str, Any]]) -> dict:
    """Metrics of ``records`` (``dfe predict`` records) against ``labels`` (video, REAL/FAKE).

    Videos that could not be scored are counted and listed under ``errors``, and labelled
    videos with no record at all under ``missing``; the metrics cover the scored ones.
    """
    truth = dict(labels)
    by_video = {r["video"]: r for r in records}
    y_true: list[str] = []
    y_pred: list[str] = []
    scores: list[float] = []
    errors: list[dict[str, str]] = []
    missing: list[str] = []
    low_coverage: list[dict[str, Any]] = []
    for video, label in truth.items():
        rec = by_video.get(video)
        if rec is None:
            missing.append(video)
        elif rec["status"] != "ok":
            errors.append({"video": video, "label": label, "error": rec.get("error") or ""})
        else:
            y_true.append(label)
            y_pred.append(rec["label"])
            scores.append(float(rec["p_fake"]))
            cover = rec.get("face_coverage")
            if cover is not None and cover < LOW_COVERAGE:
                low_coverage.append({"video": video, "label": label, "face_coverage": cover})
    matrix = confusion_matrix(y_true, y_pred)
    fpr, tpr, thr = roc_curve(y_true, scores)
    return {
        "videos": len(truth),
        "scored": len(y_true),
        "n_errors": len(errors),
        "errors": errors,
        "missing": missing,
        # scored mostly on whole frames (no face found): their metrics are not about faces
        "low_face_coverage": low_coverage,
        "classes": list(CLASSES),
        "confusion_matrix": matrix,
        "accuracy": accuracy(matrix),
        "per_class": class_metrics(matrix),
        "roc_auc": roc_auc(y_true, scores),
        "roc": {"fpr": fpr, "tpr": tpr, "thresholds": [None if t == math.inf else t for t in thr]},
    }


def format_report(metrics: dict, *, seq_len: int | None = None) -> str:
    """The confusion matrix as the original printed it, then the metrics, as text."""

    def pct(x: float | None) -> str:
        return "n/a" if x is None else f"{100 * x:.2f}%"

    m = metrics["confusion_matrix"]
    head = f"sequence length {seq_len}: " if seq_len is not None else ""
    auc = metrics["roc_auc"]
    lines = [
        f"{head}{metrics['scored']}/{metrics['videos']} videos scored, "
        f"{metrics['n_errors']} errors, {len(metrics['missing'])} missing",
        "confusion matrix (rows true FAKE/REAL, columns predicted FAKE/REAL):",
        f"[[{m[0][0]}, {m[0][1]}], [{m[1][0]}, {m[1][1]}]]",
        f"accuracy {pct(metrics['accuracy'])}   ROC AUC "
        + ("n/a (one class only)" if auc is None else f"{auc:.4f}"),
    ]
    for name, c in metrics["per_class"].items():
        lines.append(
            f"  {name}: precision {pct(c['precision'])}  recall {pct(c['recall'])}  "
            f"support {c['support']}"
        )
    low = metrics.get("low_face_coverage", [])
    if low:
        lines.append(
            f"{len(low)} scored video(s) had a face in fewer than {LOW_COVERAGE:.0%} of their "
            "frames (scored mostly on whole frames):"
        )
        for r in low[:20]:
            lines.append(f"  low face coverage {r['face_coverage']:.2f}: {r['video']}")
    for e in metrics["errors"][:20]:
        lines.append(f"  error: {e['video']}: {e['error'][:100]}")
    if len(metrics["errors"]) > 20:
        lines.append(f"  ... {len(metrics['errors']) - 20} more errors in the JSON")
    return "\n".join(lines)


def plot(metrics: dict, path: str | os.PathLike[str], *, title: str = "") -> Path:
    """A PNG with the confusion matrix (left) and the ROC curve (right)."""
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
    fig, (ax_m, ax_r) = plt.subplots(1, 2, figsize=(10, 4.5))
    m = metrics["confusion_matrix"]
    ax_m.imshow(m, cmap="Blues")
    peak = max(max(row) for row in m) or 1
    for i in range(2):
        for j in range(2):
            ax_m.text(
                j, i, str(m[i][j]), ha="center", va="center",
                color="white" if m[i][j] > peak / 2 else "black", fontsize=14,
            )  # fmt: skip
    ax_m.set_xticks([0, 1], [f"pred {c}" for c in CLASSES])
    ax_m.set_yticks([0, 1], [f"true {c}" for c in CLASSES])
    acc = metrics["accuracy"]
    ax_m.set_title("confusion matrix" + ("" if acc is None else f" (accuracy {100 * acc:.1f}%)"))
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
    ax_r.set_title("ROC, positive class FAKE, score p_fake")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
