"""Classification metrics as the EMGAxO pipeline reports them: accuracy and macro averages."""

from __future__ import annotations

import numpy as np

METRICS = ("accuracy", "precision_macro", "recall_macro", "f1_macro")


def classification_metrics(predictions: np.ndarray, labels: np.ndarray, n_classes: int = 10) -> dict:
    """Accuracy and macro-averaged precision, recall and F1 (a class never predicted has
    precision 0, like scikit-learn's ``zero_division=0``)."""
    predictions = np.asarray(predictions)
    labels = np.asarray(labels)
    confusion = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(confusion, (labels, predictions), 1)
    tp = np.diag(confusion).astype(np.float64)
    predicted = confusion.sum(axis=0)
    actual = confusion.sum(axis=1)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = np.divide(tp, actual, out=np.zeros_like(tp), where=actual > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(tp), where=denom > 0)
    return {
        "accuracy": float(tp.sum() / len(labels)),
        "precision_macro": float(precision.mean()),
        "recall_macro": float(recall.mean()),
        "f1_macro": float(f1.mean()),
    }
