"""Error analysis: calibration metrics, the near-threshold count, the gallery's choice, and the figures."""

import math

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.calibration import calibration_curve as sklearn_calibration_curve

from catdog.analysis import figures
from catdog.analysis.metrics import binary_metrics, calibration_bins, expected_calibration_error, near_threshold_count

CLASSES = ["cat", "dog"]


def logits_of(probabilities):
    return torch.tensor([math.log(p / (1 - p)) for p in probabilities], dtype=torch.float32)


def row(file, actual, probability):
    return {"file": file, "actual": actual, "predicted": "dog" if probability > 0.5 else "cat",
            "probability": str(probability)}  # as read back from predictions.csv


def assert_png(path):
    with Image.open(path) as image:
        assert image.format == "PNG" and min(image.size) > 100
        image.verify()


def test_perfectly_calibrated_predictions():
    # P(dog) 0.25 for four images of which one is a dog, 0.75 for four of which three are
    probabilities = [0.25] * 4 + [0.75] * 4
    y = torch.tensor([1, 0, 0, 0, 1, 1, 1, 0], dtype=torch.float32)
    metrics = binary_metrics(logits_of(probabilities), y)
    assert metrics["ece"] == 0
    assert metrics["brier"] == pytest.approx((3 * 0.25**2 + 0.75**2) * 2 / 8, abs=1e-6)  # 0.1875
    assert metrics["near_threshold"] == 0


def test_all_predictions_at_one_half():
    y = torch.tensor([0, 0, 1, 1], dtype=torch.float32)
    metrics = binary_metrics(torch.zeros(4), y)
    assert (metrics["brier"], metrics["ece"], metrics["near_threshold"]) == (0.25, 0, 1)
    only_dogs = binary_metrics(torch.zeros(4), torch.ones(4))
    assert (only_dogs["brier"], only_dogs["ece"]) == (0.25, 0.5)


def test_ece_weights_each_bin_by_its_count():
    # bin [0, 0.1]: mean 0.05, half dogs, gap 0.45; bin (0.9, 1]: mean 0.95, all dogs, gap 0.05
    assert expected_calibration_error([0.05, 0.05, 0.95, 0.95], [0, 1, 1, 1]) == pytest.approx((2 * .45 + 2 * .05) / 4)
    assert expected_calibration_error([0.05, 0.95, 0.95, 0.95], [1, 1, 1, 1]) == pytest.approx((0.95 + 3 * .05) / 4)


def test_near_threshold_band_is_closed():
    assert near_threshold_count([0.4, 0.6, 0.5, 0.399, 0.601, 0.0, 1.0]) == 3
    metrics = binary_metrics(logits_of([0.45, 0.55, 0.1, 0.9]), torch.tensor([0.0, 1.0, 0.0, 1.0]))
    assert metrics["near_threshold"] == 0.5


def test_calibration_bins_agree_with_sklearn():
    rng = np.random.default_rng(0)
    probability = np.concatenate([rng.random(500), [0.0, 0.1, 0.5, 0.9, 1.0]])  # edges belong to the lower bin
    truth = (rng.random(len(probability)) < probability).astype(int)
    bins = calibration_bins(probability, truth)
    fraction, mean = sklearn_calibration_curve(truth, probability, n_bins=10, strategy="uniform")
    assert [b["fraction_of_positives"] for b in bins] == pytest.approx(fraction)
    assert [b["mean_predicted_probability"] for b in bins] == pytest.approx(mean)
    assert sum(b["count"] for b in bins) == len(probability)
    assert [b["count"] for b in calibration_bins([0.1, 0.10001, 1.0], [0, 0, 1])] == [1, 1, 1]


def test_most_confident_errors_picks_the_wrong_rows_farthest_from_one_half():
    rows = [row("cat/a.jpg", "cat", 0.7),    # wrong, 0.2 from 0.5
            row("cat/b.jpg", "cat", 0.99),   # wrong, 0.49
            row("dog/c.jpg", "dog", 0.999),  # right, however confident
            row("dog/d.jpg", "dog", 0.05),   # wrong, 0.45
            row("dog/e.jpg", "dog", 0.3),    # wrong, 0.2: ties keep the rows' order
            row("cat/f.jpg", "cat", 0.01)]   # right
    assert figures.most_confident_errors(rows) == [1, 3, 0, 4]
    assert figures.most_confident_errors(rows, 2) == [1, 3]
    assert figures.most_confident_errors([r for r in rows if r["actual"] == r["predicted"]]) == []


def test_short_name_keeps_the_start_and_the_extension():
    assert figures.short_name("dog/dog.00012.jpg") == "dog.00012.jpg"
    short = figures.short_name("cat/a_very_long_name_straight_from_a_phone_IMG_20230101_123456.jpeg", width=26)
    assert len(short) == 26 and short.startswith("a_very_long") and short.endswith("123456.jpeg") and "…" in short


@pytest.fixture
def predictions():
    rng = np.random.default_rng(1)
    probability = np.round(rng.random(30), 6)
    return [row(f"{c}/{c}.{i:05d}.jpg", c, p) for i, (c, p) in enumerate(zip(["cat", "dog"] * 15, probability))]


def test_each_figure_is_a_valid_png(tmp_path, predictions):
    images = np.random.default_rng(2).integers(0, 256, (len(predictions), 3, 32, 32), dtype=np.uint8)
    figures.misclassified_gallery(predictions, images, CLASSES, "test set", tmp_path / "misclassified.png", n=5)
    figures.probability_histogram(predictions, CLASSES, "test set", tmp_path / "histogram.png")
    figures.calibration_curve(predictions, CLASSES, "test set", tmp_path / "calibration.png")
    for name in ("misclassified.png", "histogram.png", "calibration.png"):
        assert_png(tmp_path / name)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["calibration.png", "histogram.png", "misclassified.png"]


def test_gallery_without_any_error_still_writes_a_png(tmp_path, predictions):
    correct = [dict(r, predicted=r["actual"]) for r in predictions]
    figures.misclassified_gallery(correct, np.zeros((0, 3, 8, 8), np.uint8), CLASSES, "test set", tmp_path / "g.png")
    assert_png(tmp_path / "g.png")


def test_calibration_points_cover_every_prediction(predictions):
    points = figures.calibration_points(predictions, CLASSES)
    assert all(set(p) == set(figures.CALIBRATION_COLUMNS) for p in points)
    assert sum(p["count"] for p in points) == len(predictions)
    assert all(p["bin_low"] <= p["mean_predicted_probability"] <= p["bin_high"] for p in points)


@pytest.mark.parametrize("seed", range(6))
def test_metrics_agree_with_sklearn(seed):
    from sklearn import metrics as sk

    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 300))
    y = rng.integers(0, 2, n).astype(np.float32)
    y[:2] = [0, 1]  # both classes
    # rounded logits: many tied scores, as a model that saturates or a tiny test set gives
    logits = torch.from_numpy(np.round(rng.normal(0.3 * (2 * y - 1), 1.5), int(rng.integers(0, 3))).astype(np.float32))
    ours = binary_metrics(logits, torch.from_numpy(y))
    truth, predicted, p = y.astype(int), (logits > 0).numpy().astype(int), torch.sigmoid(logits).numpy()
    expected = {"accuracy": sk.accuracy_score(truth, predicted), "roc_auc": sk.roc_auc_score(truth, p),
                **{name: getattr(sk, f"{name}_score")(truth, predicted, zero_division=0)
                   for name in ("precision", "recall", "f1")}}
    assert {k: ours[k] for k in expected} == pytest.approx(expected, abs=1e-6)


def test_metrics_with_no_positive_prediction_or_one_class():
    none_predicted = binary_metrics(torch.full((4,), -2.0), torch.tensor([0.0, 1.0, 0.0, 1.0]))
    assert (none_predicted["precision"], none_predicted["recall"], none_predicted["f1"]) == (0, 0, 0)
    assert none_predicted["roc_auc"] == 0.5  # every score tied
    assert binary_metrics(torch.tensor([1.0, -1.0]), torch.ones(2))["roc_auc"] is None


def test_roc_auc_ranks_confident_predictions_by_their_logits():
    # float32 sigmoid is exactly 1.0 above a logit of about 17: by probabilities, the negative at 20 would tie with
    # the positives at 25 and 30 (AUC 0.75); their logits order them, and every positive scores above every negative
    logits, y = torch.tensor([20.0, 30.0, -1.0, 25.0]), torch.tensor([0.0, 1.0, 0.0, 1.0])
    assert torch.sigmoid(logits)[[0, 1, 3]].eq(1.0).all()
    assert binary_metrics(logits, y)["roc_auc"] == 1.0
