"""The evidence behind a comparison of classifiers scored on a test set: the interval of an accuracy, the exact
paired test between two models' predictions on the same images, the test against the majority-class rate, and
how large a difference a test set of n images can show at all.

Each test is scipy's exact binomial test (scipy.stats.binomtest), not a formula written here:
- an accuracy's 95 % interval is the Wilson score interval of k right out of n;
- two models on the same images: McNemar's exact test, the binomial test of the images only A gets right against
  those only B gets right (the images both get right or both wrong say nothing about which is better);
- repeats over training seeds (several runs of each side on the same images): the same sign test on each image's
  share of runs that get it right; one run a side, it is McNemar's exact test.
"""

import csv
import io
import math
from dataclasses import dataclass

import numpy as np

ALPHA = 0.05        # two-sided significance level of every test here
CONFIDENCE = 0.95   # of every interval
WILSON_Z = 1.959963984540054  # scipy.special.ndtri(0.5 + CONFIDENCE / 2), the normal quantile of the interval


def _binomtest(k: int, n: int, p: float = 0.5, alternative: str = "two-sided"):
    from scipy.stats import binomtest  # late: scipy.stats costs half a second to import

    return binomtest(int(k), int(n), p, alternative=alternative)


def wilson_interval(correct: int, n: int) -> tuple[float, float]:
    """The 95 % Wilson score interval of an accuracy of `correct` right out of `n`: scipy's
    binomtest(correct, n).proportion_ci(0.95, method="wilson"), float for float (tests/test_evidence.py), by its
    formula (Newcombe 1998), without importing scipy.stats, which costs `evaluate` half a second."""
    if n <= 0:
        raise ValueError("an interval needs at least one test image")
    p, q, z = correct / n, 1 - correct / n, WILSON_Z
    denominator = 2 * (n + z**2)
    centre = (2 * n * p + z**2) / denominator
    delta = z / denominator * math.sqrt(4 * n * p * q + z**2)
    return 0.0 if correct == 0 else centre - delta, 1.0 if correct == n else centre + delta


def mcnemar_p(only_a: int, only_b: int) -> float:
    """Exact two-sided McNemar p-value from the discordant pairs: images only A gets right, images only B does.
    No discordant pair: nothing tells the two apart, p = 1."""
    if only_a + only_b == 0:
        return 1.0
    return float(_binomtest(only_a, only_a + only_b).pvalue)


def above_rate_p(correct: int, n: int, rate: float) -> float:
    """One-sided exact binomial p-value that an accuracy of correct/n is above `rate` (the majority class's share
    of the test set: what always answering that class scores)."""
    return float(_binomtest(correct, n, rate, alternative="greater").pvalue)


def smallest_significant_split(discordant: int) -> int | None:
    """The fewest images of `discordant` disagreements that must go one way for McNemar's test to give
    p < ALPHA (k against discordant - k); None where no split can."""
    return next((k for k in range((discordant + 1) // 2, discordant + 1)
                 if mcnemar_p(k, discordant - k) < ALPHA), None)


def detectable_text(n: int, accuracy: float) -> str:
    """One line on how large a difference n test images can show: the interval's half-width at `accuracy`, the
    floor of McNemar's test (every disagreement one way), and the difference needed where two models disagree on
    a tenth of the images."""
    low, high = wilson_interval(round(accuracy * n), n)
    floor = next(m for m in range(1, n + 7) if mcnemar_p(m, 0) < ALPHA)  # 6: every disagreement one way
    tenth = max(6, round(n / 10))
    k = smallest_significant_split(tenth)
    needed = f"{100 * (2 * k - tenth) / n:.1f} points" if k else "more than they can"
    return (f"{n} test images: an accuracy near {accuracy:.3f} is known to {low:.3f}–{high:.3f} (95 % Wilson); "
            f"a paired difference is significant (McNemar, p < {ALPHA}) only from {100 * floor / n:.1f} points "
            f"({floor} images, all one way), and two models that disagree on {tenth} images must differ by {needed}.")


@dataclass(frozen=True)
class Predictions:
    """One model's test predictions (plots/predictions.csv): per image its file, true and predicted class, and
    the probability of the positive class."""
    files: tuple
    actual: tuple
    predicted: tuple
    probability: np.ndarray

    @classmethod
    def from_csv(cls, text: str) -> "Predictions":
        rows = list(csv.DictReader(io.StringIO(text)))
        return cls(tuple(r["file"] for r in rows), tuple(r["actual"] for r in rows),
                   tuple(r["predicted"] for r in rows), np.array([float(r["probability"]) for r in rows]))

    @property
    def correct(self) -> np.ndarray:
        return np.array([a == p for a, p in zip(self.actual, self.predicted)], dtype=bool)

    @property
    def accuracy(self) -> float:
        return float(self.correct.mean()) if self.files else float("nan")

    def majority_rate(self) -> float:
        """The share of the most common true class: the accuracy of always answering it."""
        _, counts = np.unique(np.array(self.actual), return_counts=True)
        return float(counts.max() / len(self.actual))


def unpaired_reason(a: Predictions, b: Predictions) -> str | None:
    """Why two sets of predictions cannot be paired image by image, or None where they can: the same files with
    the same true classes, in any order."""
    if not a.files or not b.files:
        return "one side has no test predictions"
    if sorted(zip(a.files, a.actual)) == sorted(zip(b.files, b.actual)):
        return None
    shared = len(set(a.files) & set(b.files))
    return (f"their test sets differ ({len(a.files)} and {len(b.files)} images, {shared} in common): another "
            "split (seed, data.val_fraction, data.test_fraction) or other data (data.images)")


def aligned_correct(reference: Predictions, other: Predictions) -> np.ndarray:
    """other's right/wrong per image, in reference's order of files (the two must be paired)."""
    where = dict(zip(other.files, other.correct))
    return np.array([where[f] for f in reference.files], dtype=bool)


@dataclass(frozen=True)
class PairedTest:
    only_a: float      # images A gets right more often than B (one run a side: only A gets right)
    only_b: float
    p_value: float

    @property
    def significant(self) -> bool:
        return self.p_value < ALPHA


def sign_test(correct_a: np.ndarray, correct_b: np.ndarray) -> PairedTest:
    """The paired exact test between two sides scored on the same images, in the same order. Each side is a
    (runs, images) or (images,) array of right/wrong; an image counts for the side whose runs get it right more
    often. One run a side: McNemar's exact test."""
    share_a = np.atleast_2d(np.asarray(correct_a, dtype=float)).mean(axis=0)
    share_b = np.atleast_2d(np.asarray(correct_b, dtype=float)).mean(axis=0)
    only_a, only_b = int((share_a > share_b).sum()), int((share_b > share_a).sum())
    return PairedTest(only_a, only_b, mcnemar_p(only_a, only_b))
