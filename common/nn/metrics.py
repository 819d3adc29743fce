"""Metrics on predicted labels: accuracy, confusion matrix, per-class precision / recall / F1."""
from __future__ import annotations

import numpy as np


def accuracy(predicted: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of ``predicted (N,)`` equal to ``labels (N,)``."""
    if len(predicted) != len(labels):
        raise ValueError(f"{len(predicted)} predictions for {len(labels)} labels")
    return float(np.mean(predicted == labels)) if len(labels) else 0.0


def confusion_matrix(labels: np.ndarray, predicted: np.ndarray, num_classes: int = 10) -> np.ndarray:
    """``(K, K)`` int64 counts: row = true class, column = predicted class."""
    flat = np.asarray(labels, dtype=np.int64) * num_classes + np.asarray(predicted, dtype=np.int64)
    return np.bincount(flat, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def precision_recall_f1(matrix: np.ndarray) -> dict[str, np.ndarray | float]:
    """Per-class precision, recall, F1 and support ``(K,)`` from a confusion matrix, plus macro averages.

    A class never predicted has precision 0; a class absent from the labels has recall 0.
    """
    matrix = np.asarray(matrix, dtype=np.float64)
    true_positives = np.diag(matrix)
    predicted_counts = matrix.sum(axis=0)
    support = matrix.sum(axis=1)
    precision = np.divide(true_positives, predicted_counts, out=np.zeros_like(true_positives),
                          where=predicted_counts > 0)
    recall = np.divide(true_positives, support, out=np.zeros_like(true_positives), where=support > 0)
    denominator = precision + recall
    f1 = np.divide(2 * precision * recall, denominator, out=np.zeros_like(denominator),
                   where=denominator > 0)
    return {"precision": precision, "recall": recall, "f1": f1, "support": support.astype(np.int64),
            "macro_precision": float(precision.mean()), "macro_recall": float(recall.mean()),
            "macro_f1": float(f1.mean())}


def misclassified_indices(labels: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """Indices ``(M,)`` of the examples whose prediction is wrong, in increasing order."""
    return np.flatnonzero(np.asarray(labels) != np.asarray(predicted))
