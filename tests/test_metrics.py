"""Tests for common.nn.metrics on a hand-countable case: accuracy, confusion matrix, precision/recall/F1."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

from common.nn.metrics import accuracy, confusion_matrix, misclassified_indices, precision_recall_f1

LABELS = np.array([0, 0, 1, 2, 2, 2])
PREDICTED = np.array([0, 1, 1, 2, 0, 2])


def test_confusion_matrix_hand_case():
    """Rows are true classes, columns predictions: counted by hand."""
    matrix = confusion_matrix(LABELS, PREDICTED, num_classes=3)
    np.testing.assert_array_equal(matrix, [[1, 1, 0],
                                           [0, 1, 0],
                                           [1, 0, 2]])
    assert matrix.dtype == np.int64
    assert confusion_matrix(LABELS, PREDICTED).shape == (10, 10)
    assert confusion_matrix(LABELS, PREDICTED).sum() == 6


def test_precision_recall_f1_hand_case():
    """precision = TP / predicted, recall = TP / support, F1 = 2PR/(P+R), macro = plain means."""
    result = precision_recall_f1(confusion_matrix(LABELS, PREDICTED, num_classes=3))
    precision = [1 / 2, 1 / 2, 2 / 2]
    recall = [1 / 2, 1 / 1, 2 / 3]
    f1 = [2 * p * r / (p + r) for p, r in zip(precision, recall)]  # [0.5, 2/3, 0.8]
    np.testing.assert_allclose(result["precision"], precision, rtol=1e-15)
    np.testing.assert_allclose(result["recall"], recall, rtol=1e-15)
    np.testing.assert_allclose(result["f1"], [0.5, 2 / 3, 0.8], rtol=1e-15)
    np.testing.assert_allclose(result["f1"], f1, rtol=1e-15)
    np.testing.assert_array_equal(result["support"], [2, 1, 3])
    assert result["macro_precision"] == pytest.approx(2 / 3, rel=1e-15)
    assert result["macro_recall"] == pytest.approx((1 / 2 + 1 + 2 / 3) / 3, rel=1e-15)
    assert result["macro_f1"] == pytest.approx((0.5 + 2 / 3 + 0.8) / 3, rel=1e-15)


def test_never_predicted_and_absent_classes_give_zero_without_warnings():
    """A class never predicted gets precision 0 (and F1 0); a class absent from the labels gets recall 0; no warnings."""
    labels = np.array([0, 1, 1, 2])
    predicted = np.array([0, 0, 0, 2])  # class 1 never predicted; class 3 neither present nor predicted
    with warnings.catch_warnings(), np.errstate(all="raise"):
        warnings.simplefilter("error")
        result = precision_recall_f1(confusion_matrix(labels, predicted, num_classes=4))
    np.testing.assert_allclose(result["precision"], [1 / 3, 0.0, 1.0, 0.0], rtol=1e-15)
    np.testing.assert_allclose(result["recall"], [1.0, 0.0, 1.0, 0.0], rtol=1e-15)
    np.testing.assert_allclose(result["f1"], [0.5, 0.0, 1.0, 0.0], rtol=1e-15)


def test_misclassified_indices():
    """Indices of wrong predictions, increasing; empty when everything is right."""
    np.testing.assert_array_equal(misclassified_indices(LABELS, PREDICTED), [1, 4])
    assert misclassified_indices(LABELS, LABELS).size == 0


def test_accuracy():
    """Fraction correct; empty input is 0; mismatched lengths are refused."""
    assert accuracy(PREDICTED, LABELS) == pytest.approx(4 / 6, rel=1e-15)
    assert accuracy(LABELS, LABELS) == 1.0
    assert isinstance(accuracy(PREDICTED, LABELS), float)
    assert accuracy(np.array([], dtype=int), np.array([], dtype=int)) == 0.0
    with pytest.raises(ValueError):
        accuracy(PREDICTED[:3], LABELS)
