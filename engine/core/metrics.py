"""Classification metrics of a labelled set, as pure functions: the original's confusion
matrix, per-class precision/recall, ROC curve and AUC.

Shared by ``dfe eval`` (:mod:`engine.evaluation`) and ``dfe train``'s validation
(:mod:`export.train`), so a training run's ``val_auc`` is the number ``dfe eval`` would print.
Class order is the original's, FAKE then REAL (:data:`engine.core.labels.CLASSES`); the
confusion matrix's rows are the true class and its columns the predicted one, as the original
printed it. ROC treats FAKE as the positive class and scores videos by ``p_fake``. No
scikit-learn: the formulas are the textbook ones (AUC as the Mann-Whitney statistic).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from engine.core.labels import CLASSES


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
