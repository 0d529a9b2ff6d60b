"""The one evaluation of the chosen model on the test split: scores, per-class report, confusion.

The search never reads the test split; this runs once per sweep on the best model, so the figures
it gives are an unbiased estimate of how that model does on new images of the same source.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class TestReport:
    """Test-split predictions and the scores computed from them."""

    metrics: dict[str, float]  # test_accuracy, test_{precision,recall,f1}_{macro,weighted}
    report_text: str  # scikit-learn's classification_report, one line per class
    report: dict  # the same as a dict (per class: precision, recall, f1-score, support)
    confusion: np.ndarray  # (classes, classes): row = true class, column = predicted class
    y_true: np.ndarray
    y_pred: np.ndarray
    probabilities: np.ndarray  # (N, classes)

    @property
    def misclassified(self) -> np.ndarray:
        """Indices of the wrongly predicted test images, most confident mistakes first."""
        wrong = np.flatnonzero(self.y_pred != self.y_true)
        confidence = self.probabilities[wrong, self.y_pred[wrong]]
        return wrong[np.argsort(-confidence, kind="stable")]


def evaluate_predictions(
    probabilities: np.ndarray, y_true: np.ndarray, class_names: list[str]
) -> TestReport:
    """Score class probabilities (N, classes) against integer labels (N,)."""
    from sklearn.metrics import (
        accuracy_score,
        classification_report,
        confusion_matrix,
        precision_recall_fscore_support,
    )

    y_true = np.asarray(y_true).astype("int64")
    y_pred = np.asarray(probabilities).argmax(axis=1).astype("int64")
    labels = list(range(len(class_names)))
    metrics = {"test_accuracy": float(accuracy_score(y_true, y_pred))}
    for average in ("macro", "weighted"):
        precision, recall, f1, _ = precision_recall_fscore_support(
            y_true, y_pred, labels=labels, average=average, zero_division=0
        )
        metrics[f"test_precision_{average}"] = float(precision)
        metrics[f"test_recall_{average}"] = float(recall)
        metrics[f"test_f1_{average}"] = float(f1)
    options = {"labels": labels, "target_names": class_names, "zero_division": 0, "digits": 4}
    return TestReport(
        metrics=metrics,
        report_text=classification_report(y_true, y_pred, **options),
        report=classification_report(y_true, y_pred, output_dict=True, **options),
        confusion=confusion_matrix(y_true, y_pred, labels=labels),
        y_true=y_true,
        y_pred=y_pred,
        probabilities=np.asarray(probabilities),
    )


def evaluate_model(model, x: np.ndarray, y: np.ndarray, class_names: list[str]) -> TestReport:
    """Predict the test images (raw pixels) with a Keras model and score the result."""
    probabilities = model.predict(x, batch_size=256, verbose=0)
    return evaluate_predictions(probabilities, y, class_names)
