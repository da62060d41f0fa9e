"""The metric functions shared by ``dfe eval`` and ``dfe train`` (``core.metrics``)."""

from __future__ import annotations

import pytest

from core import metrics
from engine import evaluation


def test_roc_auc_equals_trapezoid_area_of_roc_curve():
    y = ["FAKE", "REAL", "FAKE", "REAL", "REAL", "FAKE", "FAKE", "REAL"]
    s = [0.8, 0.8, 0.2, 0.5, 0.1, 0.9, 0.5, 0.3]
    fpr, tpr, _ = metrics.roc_curve(y, s)
    area = sum((fpr[i + 1] - fpr[i]) * (tpr[i + 1] + tpr[i]) / 2 for i in range(len(fpr) - 1))
    assert metrics.roc_auc(y, s) == pytest.approx(area)


def test_accuracy_and_confusion_follow_the_originals_class_order():
    m = metrics.confusion_matrix(["FAKE", "FAKE", "REAL"], ["FAKE", "REAL", "REAL"])
    assert m == [[1, 1], [0, 1]]  # rows true FAKE/REAL, columns predicted FAKE/REAL
    assert metrics.accuracy(m) == pytest.approx(2 / 3)
    assert metrics.accuracy([[0, 0], [0, 0]]) is None
    assert metrics.roc_auc(["FAKE", "FAKE"], [0.1, 0.2]) is None  # one class: undefined


def test_dfe_eval_uses_the_shared_functions():
    """One implementation: ``dfe eval`` and training call the same objects."""
    assert evaluation.roc_auc is metrics.roc_auc
    assert evaluation.confusion_matrix is metrics.confusion_matrix
