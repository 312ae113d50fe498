"""Test-set metrics of a binary classifier from its logits (positive class: index 1, `dog` by default)."""

import numpy as np

from catdog.analysis.evidence import wilson_interval

CALIBRATION_BINS = 10
# Predictions this close to the 0.5 threshold flip with a small change of the weights: a model whose loss falls
# while its accuracy stalls is often only pushing many of them a little towards the right side.
NEAR_THRESHOLD = (0.4, 0.6)


def near_threshold_count(probability) -> int:
    low, high = NEAR_THRESHOLD
    probability = np.asarray(probability)
    return int(((probability >= low) & (probability <= high)).sum())


def calibration_bins(probability, truth, n_bins: int = CALIBRATION_BINS) -> list[dict]:
    """The reliability diagram's points, one per non-empty equal-width bin of the predicted probability.

    Bins are assigned exactly as sklearn.calibration.calibration_curve(strategy="uniform") does (a value on an
    edge belongs to the lower bin), so its curve and these points agree; the count per bin comes with them.
    """
    probability, truth = np.asarray(probability, dtype=float), np.asarray(truth, dtype=float)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    bin_of = np.searchsorted(edges[1:-1], probability)
    count = np.bincount(bin_of, minlength=n_bins)
    probability_sum = np.bincount(bin_of, weights=probability, minlength=n_bins)
    positive_sum = np.bincount(bin_of, weights=truth, minlength=n_bins)
    return [{"bin_low": round(float(edges[b]), 6), "bin_high": round(float(edges[b + 1]), 6),
             "mean_predicted_probability": float(probability_sum[b] / count[b]),
             "fraction_of_positives": float(positive_sum[b] / count[b]), "count": int(count[b])}
            for b in np.flatnonzero(count)]


def expected_calibration_error(probability, truth, n_bins: int = CALIBRATION_BINS) -> float:
    """Gap between mean P(positive) and the fraction of positives in each bin, weighted by the bin's count."""
    bins = calibration_bins(probability, truth, n_bins)
    total = sum(b["count"] for b in bins)
    return sum(b["count"] * abs(b["mean_predicted_probability"] - b["fraction_of_positives"]) for b in bins) / total


def brier_score(probability, truth) -> float:
    return float(np.mean((np.asarray(probability, dtype=float) - np.asarray(truth, dtype=float)) ** 2))


def roc_auc(score, truth) -> float:
    """Area under the ROC curve as the Mann-Whitney statistic: the chance that a random positive scores above a
    random negative, a tie counting one half; the value of sklearn's roc_auc_score (tests/test_analysis.py), here
    in numpy because importing sklearn.metrics costs `evaluate` about a second."""
    score, truth = np.asarray(score, dtype=float), np.asarray(truth).astype(bool)
    order = np.argsort(score, kind="stable")
    _, first, count = np.unique(score[order], return_index=True, return_counts=True)
    rank = np.empty(len(score))
    rank[order] = np.repeat(first + (count + 1) / 2, count)  # 1-based, tied scores share their mean rank
    positives, negatives = truth.sum(), (~truth).sum()
    return float((rank[truth].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def binary_metrics(logits, y) -> dict:
    """Test metrics of the positive class from logits and labels (torch tensors), each 0 where its denominator is
    (sklearn's zero_division=0); the accuracy with its 95 % Wilson interval (accuracy_ci_low, accuracy_ci_high)."""
    import torch  # here: plot draws the calibration with this module's numpy functions, and never imports torch
    from torch.nn.functional import binary_cross_entropy_with_logits

    probabilities = torch.sigmoid(logits).numpy()
    truth, predicted = y.numpy().astype(bool), (logits > 0).numpy()  # logit > 0 <=> probability > 0.5
    tp, fp, fn = (truth & predicted).sum(), (~truth & predicted).sum(), (truth & ~predicted).sum()
    both_classes = truth.any() and not truth.all()
    ci_low, ci_high = wilson_interval(int((truth == predicted).sum()), len(truth))
    metrics = {
        "accuracy": (truth == predicted).mean(),
        "accuracy_ci_low": ci_low,
        "accuracy_ci_high": ci_high,
        "precision": tp / (tp + fp) if tp + fp else 0,
        "recall": tp / (tp + fn) if tp + fn else 0,
        "f1": 2 * tp / (2 * tp + fp + fn) if tp else 0,
        # ranked by the logits: float32 probabilities saturate at 1.0 above a logit of about 17, tying confident
        # predictions the logits still order (the sigmoid is monotonic, so the area is otherwise the same)
        "roc_auc": roc_auc(logits.double().numpy(), truth) if both_classes else None,  # undefined with one class
        "loss": binary_cross_entropy_with_logits(logits, y).item(),
        "brier": brier_score(probabilities, truth),
        "ece": expected_calibration_error(probabilities, truth),
        "near_threshold": near_threshold_count(probabilities) / len(truth),
    }
    metrics = {k: None if v is None else round(float(v), 6) for k, v in metrics.items()}
    return {**metrics, "n_test": len(truth)}
