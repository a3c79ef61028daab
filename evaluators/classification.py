"""Classification metrics as the EMGAxO pipeline reports them: accuracy and macro averages."""

from __future__ import annotations

import numpy as np

METRICS = ("accuracy", "precision_macro", "recall_macro", "f1_macro")
TOP5 = "top5_accuracy"
TOP5_FROM = 100
"""Classes from which ``logits_metrics`` also reports top-5 accuracy (CIFAR-100, ImageNet)."""


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


def logits_metrics(logits: np.ndarray, labels: np.ndarray, classes: int) -> dict:
    """``classification_metrics`` of the arg-max predictions, plus top-5 accuracy (a label among
    the five largest outputs) for data of at least ``TOP5_FROM`` classes."""
    metrics = classification_metrics(logits.argmax(axis=1), labels, classes)
    if classes >= TOP5_FROM:
        top5 = np.argpartition(-logits, 5, axis=1)[:, :5]
        metrics[TOP5] = float((top5 == np.asarray(labels)[:, None]).any(axis=1).mean())
    return metrics
