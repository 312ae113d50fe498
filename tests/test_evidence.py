"""The evidence behind comparisons: intervals and exact tests against values worked out by hand, and the
leaderboard's tie marks, chance marks and folded seed repeats on experiments with known predictions."""

import numpy as np
import pytest

from catdog.analysis import evidence
from catdog.analysis.evidence import Predictions
from catdog.analysis.experiments import Experiment
from catdog.analysis.leaderboard import best_row, fold, ranked, swept_keys, table

BASE = {"model": "logistic", "seed": 42, "train.seed": None, "models.logistic.lr": 0.01, "train.sweep": ""}


def test_wilson_interval_matches_the_formula_worked_by_hand():
    # 8 of 10: centre (8 + z²/2) / (10 + z²), half-width z / (10 + z²) * sqrt(8 * 2 / 10 + z² / 4), z = 1.959964
    assert evidence.wilson_interval(8, 10) == pytest.approx((0.4902, 0.9433), abs=1e-4)
    assert evidence.wilson_interval(0, 10) == pytest.approx((0.0, 0.2775), abs=1e-4)  # never below 0
    assert evidence.wilson_interval(120, 240) == pytest.approx((0.4372, 0.5628), abs=1e-4)
    with pytest.raises(ValueError):
        evidence.wilson_interval(0, 0)


def test_wilson_interval_is_scipys_float_for_float():
    """The formula stands in for scipy.stats (half a second to import): the metrics' bytes must not change."""
    from scipy.special import ndtri
    from scipy.stats import binomtest

    assert evidence.WILSON_Z == ndtri(0.5 + evidence.CONFIDENCE / 2)
    for n in (1, 2, 3, 7, 10, 59, 60, 240, 241, 2400):
        for k in range(n + 1):
            scipy_ci = binomtest(k, n).proportion_ci(evidence.CONFIDENCE, method="wilson")
            assert evidence.wilson_interval(k, n) == (float(scipy_ci.low), float(scipy_ci.high)), (k, n)


def test_mcnemar_exact_p_values_worked_by_hand():
    assert evidence.mcnemar_p(0, 0) == 1.0                       # nothing tells the two apart
    assert evidence.mcnemar_p(1, 9) == pytest.approx(22 / 1024)  # 2 * (1 + 10) / 2**10 = 0.0215
    assert evidence.mcnemar_p(9, 1) == evidence.mcnemar_p(1, 9)  # two-sided
    assert evidence.mcnemar_p(5, 0) == pytest.approx(2 / 32)     # 0.0625: five one way is not enough
    assert evidence.mcnemar_p(6, 0) == pytest.approx(2 / 64)     # 0.031: six is
    assert evidence.smallest_significant_split(6) == 6 and evidence.smallest_significant_split(5) is None
    assert evidence.smallest_significant_split(24) == 18         # 18 v 6: p = 0.023; 17 v 7: p = 0.064


def test_above_the_majority_rate_is_a_one_sided_exact_binomial_test():
    assert evidence.above_rate_p(10, 10, 0.5) == pytest.approx(1 / 1024)
    assert evidence.above_rate_p(5, 10, 0.5) == pytest.approx(638 / 1024)  # P(X >= 5): half or more by chance
    assert evidence.above_rate_p(8, 10, 0.8) > 0.5                         # the majority's own rate is no win


def test_sign_test_over_seeds_is_mcnemar_with_one_run_a_side():
    a = np.array([1, 1, 1, 0, 1, 0, 0, 1, 1, 1, 1], dtype=bool)
    b = np.array([1, 0, 0, 0, 1, 1, 0, 0, 0, 0, 0], dtype=bool)
    one = evidence.sign_test(a, b)
    assert (one.only_a, one.only_b) == (6, 1) and one.p_value == pytest.approx(evidence.mcnemar_p(6, 1))
    runs_b = np.stack([b, a, b])  # image by image, b's runs are right as often as a, or less often
    several = evidence.sign_test(a[None, :], runs_b)
    assert (several.only_a, several.only_b) == (6, 1)


def predictions(files, correct, positive="dog", actual=None):
    actual = actual or ["dog" if i % 2 else "cat" for i in range(len(files))]
    other = {"dog": "cat", "cat": "dog"}
    predicted = [a if c else other[a] for a, c in zip(actual, correct)]
    return Predictions(tuple(files), tuple(actual), tuple(predicted), np.full(len(files), 0.5))


def experiment(name, correct, files=None, val=0.7, **params):
    files = files or [f"img{i:03}.jpg" for i in range(len(correct))]
    e = Experiment(name, f"rev-{name}", {**BASE, **params}, BASE,
                   {"accuracy": float(np.mean(correct)), "f1": 0.5},
                   {"best_val_accuracy": val, "best_val_loss": 0.5, "best_epoch": 1, "train_seconds": 1.0}, "base")
    return e, predictions(files, correct)


def leaderboard(*pairs):
    rows = ranked(fold([e for e, _ in pairs], {e.rev: p for e, p in pairs}))
    return rows, table(rows)


def test_leaderboard_marks_ties_with_the_top_row_and_rows_not_above_chance():
    n = 100
    top = [True] * 90 + [False] * 10
    # 1 image only it gets right, 9 only the top row gets right: p = 0.0215, significantly below
    below = [True] * 81 + [False] * 9 + [False] * 9 + [True]
    tie = list(top)  # one image only it gets right, one only the top row does: p = 1
    tie[0], tie[95] = False, True
    chance = [i % 20 < 11 for i in range(n)]  # 55 of 100 against a majority class of 50: p = 0.18
    rows, text = leaderboard(experiment("top", top, val=0.8), experiment("below", below, **{"models.logistic.lr": 0.1}),
                             experiment("tie", tie, **{"models.logistic.lr": 0.2}),
                             experiment("chance", chance, **{"models.logistic.lr": 0.3}))
    lines = {line.split(" | ")[1]: line for line in text.splitlines() if line.startswith("| ") and "---" not in line}
    assert [r.name for r in rows] == ["top", "tie", "below", "chance"]
    assert "| top | yes, p=" in lines["top"] and "[0.826, 0.945]" in lines["top"]  # Wilson of 90/100
    assert "| **tie**, p=1 |" in lines["tie"]
    assert "| below, p=0.0215 | yes," in lines["below"]
    assert "| below, p=" in lines["chance"] and f"**no**, p={evidence.above_rate_p(55, 100, 0.5):.3g}" in \
        lines["chance"]
    assert "100 test images" in text and "only from 6.0 points (6 images, all one way)" in text


def test_leaderboard_compares_nothing_across_different_test_sets():
    other_files = [f"other{i:03}.jpg" for i in range(100)]
    _, text = leaderboard(experiment("top", [True] * 90 + [False] * 10),
                          experiment("split7", [True] * 60 + [False] * 40, files=other_files, seed=7))
    split7 = next(line for line in text.splitlines() if line.startswith("| 2 | split7 |"))
    assert "| not paired |" in split7 and "p=" in split7.split("| not paired |")[1]  # chance is its own test
    assert "not paired, nothing compared: split7: their test sets differ (100 and 100 images, 0 in common)" in text


def test_repeats_over_training_seeds_fold_into_one_row_with_mean_sd_and_range():
    n = 40
    runs = [experiment(f"cnn-seed{s}", [i % 10 < 7 + s % 2 for i in range(n)], val=0.7 + s / 100,
                       model="cnn", **{"train.seed": s}) for s in range(3)]
    again = experiment("cnn-seed1-rerun", runs[1][1].correct.tolist(), val=0.71, model="cnn", **{"train.seed": 1})
    other = experiment("cnn-lr", [True] * n, model="cnn", **{"models.cnn.lr": 0.1, "train.seed": 0})
    rows, text = leaderboard(*runs, again, other)
    # another lr is a row of its own; seed 1 run again is not another repeat: a row of its own too
    assert [(r.name, len(r.runs)) for r in rows] == [("cnn-lr", 1), ("cnn-seed1-rerun", 1), ("cnn-seed* (3 seeds)", 3)]
    accuracies = [0.7, 0.8, 0.7]
    line = next(line for line in text.splitlines() if line.startswith("| 3 |"))
    assert f"**{np.mean(accuracies):.3f} ± {np.std(accuracies, ddof=1):.3f} (0.700–0.800)**" in line
    assert "0.710 ± 0.010 (0.700–0.720)" in line  # validation accuracy, folded too
    assert "train.seed" not in line and "several seeds" in text
    assert best_row(rows).name == "cnn-seed* (3 seeds)"  # mean validation 0.71 against cnn-lr's 0.70
    assert swept_keys([e for e, _ in runs]) == []         # the seed is not a grid's axis
