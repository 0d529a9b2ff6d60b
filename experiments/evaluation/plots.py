"""Figures of the test report: the confusion matrix and a grid of misclassified images.

Built on `matplotlib.figure.Figure` directly (no pyplot), so no GUI backend or global figure state
is involved: it works headless and in a long-running process. The caller saves or logs them.
"""

from __future__ import annotations

import math
from typing import Protocol

import numpy as np
from matplotlib.figure import Figure

from experiments.evaluation.metrics import TestReport


class Images(Protocol):
    """Images by index: an array, or a view that decodes only the images it is asked for."""

    def __getitem__(self, index: int, /) -> np.ndarray: ...


def confusion_matrix_figure(report: TestReport, class_names: list[str]) -> Figure:
    """Counts per (true, predicted) class, with the row-normalized share as the colour."""
    counts = report.confusion
    n = len(class_names)
    size = max(4.0, 0.45 * n + 2.0)
    fig = Figure(figsize=(size, size * 0.9), layout="constrained")
    ax = fig.add_subplot()
    rows = counts.sum(axis=1, keepdims=True)
    share = np.divide(counts, rows, out=np.zeros(counts.shape, dtype=float), where=rows > 0)
    image = ax.imshow(share, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of the true class")
    ticks = np.arange(n)
    ax.set_xticks(ticks, labels=class_names, rotation=90 if n > 12 else 0)
    ax.set_yticks(ticks, labels=class_names)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    accuracy = report.metrics["test_accuracy"]
    ax.set_title(f"test confusion matrix (accuracy {accuracy:.3f}, n={int(counts.sum())})")
    if n <= 30:  # counts stay readable up to about 30 classes
        for i in range(n):
            for j in range(n):
                if counts[i, j]:
                    color = "white" if share[i, j] > 0.5 else "black"
                    ax.text(
                        j, i, str(counts[i, j]), ha="center", va="center", fontsize=8, color=color
                    )
    return fig


def misclassified_figure(
    report: TestReport, images: Images, class_names: list[str], limit: int = 25
) -> Figure:
    """The most confident mistakes on the test split, each titled 'true -> predicted (p)'."""
    chosen = report.misclassified[: max(0, limit)]
    columns = max(1, min(5, len(chosen)))
    rows = max(1, math.ceil(len(chosen) / columns))
    fig = Figure(figsize=(2.2 * columns, 2.4 * rows), layout="constrained")
    if len(chosen) == 0:
        ax = fig.add_subplot()
        ax.axis("off")
        ax.text(0.5, 0.5, "no misclassified test images", ha="center", va="center")
        return fig
    wrong = int((report.y_pred != report.y_true).sum())
    fig.suptitle(f"{len(chosen)} of {wrong} misclassified test images (most confident first)")
    for slot, index in enumerate(chosen):
        ax = fig.add_subplot(rows, columns, slot + 1)
        image = np.clip(images[index], 0, 255).astype("uint8")
        if image.shape[-1] == 1:
            ax.imshow(image[..., 0], cmap="gray", vmin=0, vmax=255)
        else:
            ax.imshow(image[..., :3])
        true, pred = report.y_true[index], report.y_pred[index]
        confidence = report.probabilities[index, pred]
        ax.set_title(f"{class_names[true]} -> {class_names[pred]} ({confidence:.2f})", fontsize=8)
        ax.axis("off")
    return fig
