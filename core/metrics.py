"""Classification metrics of a labelled set, as pure functions: the original's confusion
matrix, per-class precision/recall, ROC curve and AUC.

Shared by ``dfe eval`` (:mod:`engine.evaluation`) and ``dfe train``'s validation
(:mod:`export.train`), so a training run's ``val_auc`` is the number ``dfe eval`` would print.
Class order is the original's, FAKE then REAL (:data:`core.labels.CLASSES`); the
confusion matrix's rows are the true class and its columns the predicted one, as the original
printed it. ROC treats FAKE as the positive class and scores videos by ``p_fake``. No
scikit-learn: the formulas are the textbook ones (AUC as the Mann-Whitney statistic).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from core.labels import CLASSES


def confusion_matrix(y_true: Sequence[str], y_pred: Sequence[str]) -> list[list[int]]:
    """2x2 counts: rows true FAKE/REAL, columns predicted FAKE/REAL (labels are class names)."""
    m = [[0, 0], [0, 0]]
    for t, p in zip(y_true, y_pred, strict=True):
        m[CLASSES.index(t)][CLASSES.index(p)] += 1
    return m


def ratio(num: float, den: float) -> float | None:
    """``num / den``, or None when ``den`` is 0 (an undefined metric, never an error)."""
    return num / den if den else None


def accuracy(matrix: list[list[int]]) -> float | None:
    """Share of the diagonal of a :func:`confusion_matrix` (None when it is empty)."""
    return ratio(matrix[0][0] + matrix[1][1], sum(map(sum, matrix)))


def class_metrics(matrix: list[list[int]]) -> dict[str, dict[str, Any]]:
    """Precision, recall, F1 and support per class (``None`` where undefined: 0/0)."""
    out: dict[str, dict[str, Any]] = {}
    for i, name in enumerate(CLASSES):
        tp = matrix[i][i]
        predicted = matrix[0][i] + matrix[1][i]
        support = sum(matrix[i])
        precision, recall = ratio(tp, predicted), ratio(tp, support)
        f1 = (
            2 * precision * recall / (precision + recall)
            if precision is not None and recall is not None and precision + recall > 0
            else None
        )
        out[name] = {"precision": precision, "recall": recall, "f1": f1, "support": support}
    return out


def roc_curve(
    y_true: Sequence[str], p_fake: Sequence[float]
) -> tuple[list[float], list[float], list[float]]:
    """(false positive rates, true positive rates, thresholds) with FAKE positive: one point per
    distinct score, from (0, 0) at threshold +inf to (1, 1). Empty lists if a class is absent."""
    pos = sum(t == "FAKE" for t in y_true)
    neg = len(y_true) - pos
    if pos == 0 or neg == 0:
        return [], [], []
    pairs = sorted(zip(p_fake, y_true, strict=True), key=lambda x: -x[0])
    fpr, tpr, thr = [0.0], [0.0], [float("inf")]
    tp = fp = 0
    for i, (score, truth) in enumerate(pairs):
        if truth == "FAKE":
            tp += 1
        else:
            fp += 1
        if i + 1 == len(pairs) or pairs[i + 1][0] != score:  # close a group of tied scores
            fpr.append(fp / neg)
            tpr.append(tp / pos)
            thr.append(float(score))
    return fpr, tpr, thr


def roc_auc(y_true: Sequence[str], p_fake: Sequence[float]) -> float | None:
    """Area under the ROC curve: P(a FAKE video scores above a REAL one), ties count one half
    (the Mann-Whitney statistic; equal to the trapezoidal area of :func:`roc_curve`). None
    when one class is absent."""
    fake = [s for s, t in zip(p_fake, y_true, strict=True) if t == "FAKE"]
    real = [s for s, t in zip(p_fake, y_true, strict=True) if t == "REAL"]
    if not fake or not real:
        return None
    # rank-sum with average ranks for ties: O(n log n)
    order = sorted((s, t == "FAKE") for s, t in zip(p_fake, y_true))
    rank_sum, i = 0.0, 0
    while i < len(order):
        j = i
        while j < len(order) and order[j][0] == order[i][0]:
            j += 1
        avg_rank = (i + 1 + j) / 2  # ranks i+1 .. j
        rank_sum += avg_rank * sum(is_fake for _, is_fake in order[i:j])
        i = j
    n_pos, n_neg = len(fake), len(real)
    return (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


#: Equal-width probability bins of the expected calibration error and reliability diagram.
CALIBRATION_BINS = 10


def reliability(
    y_true: Sequence[str], p_fake: Sequence[float], bins: int = CALIBRATION_BINS
) -> list[dict[str, Any]]:
    """The reliability table: for each of ``bins`` equal-width bins of ``p_fake`` ([0, 0.1),
    ..., [0.9, 1.0]), the videos in it, their mean p_fake and the share truly FAKE (None
    where a bin is empty). The diagram plots ``fake_share`` against ``mean_p_fake``."""
    rows: list[dict[str, Any]] = []
    for b in range(bins):
        lo, hi = b / bins, (b + 1) / bins
        inside = [
            (t, p)
            for t, p in zip(y_true, p_fake, strict=True)
            if lo <= p < hi or (b == bins - 1 and p == 1.0)
        ]
        rows.append(
            {
                "low": lo,
                "high": hi,
                "videos": len(inside),
                "mean_p_fake": ratio(sum(p for _, p in inside), len(inside)),
                "fake_share": ratio(sum(t == "FAKE" for t, _ in inside), len(inside)),
            }
        )
    return rows


def expected_calibration_error(
    y_true: Sequence[str], p_fake: Sequence[float], bins: int = CALIBRATION_BINS
) -> float | None:
    """ECE (Guo et al., 2017, eq. 3, with FAKE as the event): the mean over videos of
    |share truly FAKE - mean p_fake| of their :func:`reliability` bin. None for no video."""
    n = len(p_fake)
    if not n:
        return None
    return sum(
        r["videos"] / n * abs(r["fake_share"] - r["mean_p_fake"])
        for r in reliability(y_true, p_fake, bins)
        if r["videos"]
    )


def brier_score(y_true: Sequence[str], p_fake: Sequence[float]) -> float | None:
    """Mean squared difference between ``p_fake`` and the truth (1 for FAKE, 0 for REAL);
    Brier (1950). None for no video."""
    if not p_fake:
        return None
    return sum((p - (t == "FAKE")) ** 2 for t, p in zip(y_true, p_fake, strict=True)) / len(p_fake)
