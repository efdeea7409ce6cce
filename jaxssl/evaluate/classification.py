"""Classifier accuracy: top-k, per-class accuracy, confusion matrix and its picture.

Host-side NumPy on gathered logits [N, C] and integer labels [N]. The
predicted class is the first index of the largest logit (as `jnp.argmax`).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


def top_k_predictions(logits: np.ndarray, k: int) -> np.ndarray:
    """int [N, min(k, C)]: class indices by decreasing logit, ties broken by the lower index."""
    logits = np.asarray(logits)
    return np.argsort(-logits, axis=1, kind="stable")[:, :min(k, logits.shape[1])]


def top_k_accuracy(logits: np.ndarray, labels: np.ndarray, k: int) -> float:
    """Fraction in [0, 1] of examples whose label is among their k largest logits."""
    labels = np.asarray(labels).reshape(-1, 1)
    return float(np.mean(np.any(top_k_predictions(logits, k) == labels, axis=1)))


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, num_classes: int) -> np.ndarray:
    """int64 [C, C] counts: entry (i, j) = examples of true class i predicted as class j."""
    pairs = np.asarray(labels, np.int64) * num_classes + np.asarray(predictions, np.int64)
    return np.bincount(pairs, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def per_class_accuracy(matrix: np.ndarray) -> np.ndarray:
    """float64 [C] recall of each true class from a confusion matrix (NaN for absent classes)."""
    totals = matrix.sum(axis=1).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(totals > 0, np.diag(matrix) / totals, np.nan)


def classification_report(logits: np.ndarray, labels: np.ndarray, num_classes: int) -> dict:
    """{'top1', 'top5': float, 'per_class': float64 [C], 'confusion': int64 [C, C]}."""
    matrix = confusion_matrix(labels, top_k_predictions(logits, 1)[:, 0], num_classes)
    return {"top1": top_k_accuracy(logits, labels, 1), "top5": top_k_accuracy(logits, labels, 5),
            "per_class": per_class_accuracy(matrix), "confusion": matrix}


def save_confusion_png(matrix: np.ndarray, path: str, class_names: Sequence[str] | None = None,
                       title: str = "") -> None:
    """Draws the confusion matrix (rows: true class, colour: fraction of the row) to a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    num_classes = matrix.shape[0]
    names = list(class_names) if class_names else [str(c) for c in range(num_classes)]
    rows = matrix.sum(axis=1, keepdims=True)
    fractions = np.divide(matrix, rows, out=np.zeros(matrix.shape), where=rows > 0)
    side = 1.0 + 0.5 * num_classes
    figure, axes = plt.subplots(figsize=(side + 1.5, side))
    image = axes.imshow(fractions, cmap="Blues", vmin=0.0, vmax=1.0)
    if num_classes <= 20:
        for (i, j), count in np.ndenumerate(matrix):
            axes.text(j, i, str(count), ha="center", va="center", fontsize=8,
                      color="white" if fractions[i, j] > 0.5 else "black")
    axes.set_xticks(range(num_classes), names, rotation=90 if num_classes > 10 else 0)
    axes.set_yticks(range(num_classes), names)
    axes.set_xlabel("predicted class")
    axes.set_ylabel("true class")
    axes.set_title(title)
    figure.colorbar(image, ax=axes, label="fraction of the true class")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
