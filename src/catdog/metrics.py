"""Test-set metrics of a binary classifier from its logits (positive class: index 1, `dog` by default)."""

import torch
from sklearn.metrics import accuracy_score, f1_score, precision_score, recall_score, roc_auc_score
from torch.nn.functional import binary_cross_entropy_with_logits


def binary_metrics(logits: torch.Tensor, y: torch.Tensor) -> dict:
    probabilities = torch.sigmoid(logits).numpy()
    truth, predicted = y.numpy().astype(int), (logits > 0).numpy().astype(int)  # logit > 0 <=> probability > 0.5
    both_classes = len(set(truth)) == 2
    metrics = {
        "accuracy": accuracy_score(truth, predicted),
        "precision": precision_score(truth, predicted, zero_division=0),
        "recall": recall_score(truth, predicted, zero_division=0),
        "f1": f1_score(truth, predicted, zero_division=0),
        "roc_auc": roc_auc_score(truth, probabilities) if both_classes else None,  # undefined with one class
        "loss": binary_cross_entropy_with_logits(logits, y).item(),
    }
    metrics = {k: None if v is None else round(float(v), 6) for k, v in metrics.items()}
    return {**metrics, "n_test": len(truth)}
