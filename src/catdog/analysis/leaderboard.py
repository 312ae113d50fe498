"""Ranking DVC experiments: by test accuracy for the leaderboard, by validation accuracy to choose the best point
of a sweep (the test set never takes part in that choice).

Experiments that differ only in train.seed (`catdog repeat`) fold into one row: their mean, sd, min-max and
number of seeds. The leaderboard says which rows the test set cannot tell from the top row (analysis.evidence:
McNemar's exact test on the paired test predictions) and which it cannot tell from always answering the majority
class (an exact binomial test).
"""

import os
import re
import statistics
from dataclasses import dataclass, field

import numpy as np

from catdog.analysis import evidence
from catdog.analysis.evidence import Predictions
from catdog.analysis.experiments import Experiment

SEED_KEY = "train.seed"


@dataclass
class Row:
    """One configuration of params: a single experiment, or its repeats over training seeds. predictions: each
    run's test predictions (None where its commit has none)."""
    runs: list[Experiment]
    predictions: list = field(default_factory=list)

    @property
    def name(self) -> str:
        if len(self.runs) == 1:
            return self.runs[0].name
        prefix = os.path.commonprefix([e.name for e in self.runs]).rstrip("-_")
        return f"{prefix or self.runs[0].name}* ({len(self.runs)} seeds)"

    @property
    def model(self) -> str:
        return self.runs[0].model

    def settings(self) -> dict:
        return {k: v for k, v in self.runs[0].settings().items() if k != SEED_KEY or len(self.runs) == 1}

    def values(self, group: str, key: str) -> list[float]:
        return [e.test.get(key) if group == "test" else e.train.get(key) for e in self.runs
                if (e.test if group == "test" else e.train).get(key) is not None]

    def mean(self, group: str, key: str, default=None):
        values = self.values(group, key)
        return statistics.fmean(values) if values else default

    def correct(self, reference: Predictions) -> np.ndarray:
        """(runs, images): each run right or wrong on each of reference's test images."""
        return np.stack([evidence.aligned_correct(reference, p) for p in self.predictions])

    def unpaired_reason(self, reference: Predictions | None) -> str | None:
        if reference is None or len(self.predictions) != len(self.runs) or None in self.predictions:
            return "no test predictions (plots/predictions.csv) at its commit"
        return next(filter(None, (evidence.unpaired_reason(reference, p) for p in self.predictions)), None)


def training_seed(e: Experiment):
    seed = e.params.get(SEED_KEY)
    return e.params.get("seed") if seed is None else seed


def fold(experiments: list[Experiment], predictions: dict | None = None) -> list[Row]:
    """One Row per configuration: the experiments of one commit whose params differ only in train.seed. A seed
    that runs again (the same params twice) is not another repeat: it stays a row of its own, as before repeats
    were folded. predictions: {experiment rev: Predictions or None}."""
    groups: dict[tuple, list[Experiment]] = {}
    rows = []
    for e in sorted(experiments, key=lambda e: e.name):
        key = (e.baseline_rev, tuple(sorted((k, repr(v)) for k, v in e.params.items() if k != SEED_KEY)))
        group = groups.setdefault(key, [])
        if training_seed(e) in {training_seed(other) for other in group}:
            rows.append([e])
        else:
            group.append(e)
    predictions = predictions or {}
    return [Row(runs, [predictions.get(e.rev) for e in runs]) for runs in [*groups.values(), *rows]]


def ranked(rows: list[Row]) -> list[Row]:
    """Best mean test accuracy first; ties go to the better validation accuracy, then to the name (stable)."""
    return sorted(rows, key=lambda r: (-r.mean("test", "accuracy"), -r.mean("train", "best_val_accuracy", 0), r.name))


def settings_text(settings: dict) -> str:
    return " ".join(f"{k}={v}" for k, v in sorted(settings.items())) or "defaults"


def _number(value, digits=3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def spread(values: list[float]) -> str:
    """One run: its value; several: mean ± sd (min–max)."""
    if len(values) == 1:
        return _number(values[0])
    return (f"{statistics.fmean(values):.3f} ± {statistics.stdev(values):.3f} "
            f"({min(values):.3f}–{max(values):.3f})")


def _test_accuracy(row: Row) -> str:
    e = row.runs[0]
    if len(row.runs) > 1:
        return f"**{spread(row.values('test', 'accuracy'))}**"
    low, high = e.test.get("accuracy_ci_low"), e.test.get("accuracy_ci_high")
    if low is None and row.predictions and row.predictions[0] is not None:  # scored before test.json had it
        low, high = evidence.wilson_interval(int(row.predictions[0].correct.sum()), len(row.predictions[0].files))
    interval = "" if low is None else f" [{low:.3f}, {high:.3f}]"
    return f"**{_number(e.test['accuracy'])}**{interval}"


@dataclass
class Evidence:
    """How each row stands against the top row and against chance, and the table's footnotes."""
    against_top: dict = field(default_factory=dict)   # row index: text for the "vs top" column
    above_chance: dict = field(default_factory=dict)  # row index: text for the "above chance" column
    notes: list = field(default_factory=list)


def weigh(rows: list[Row]) -> Evidence:
    """The tests of every ranked row: McNemar (sign test over seeds) against the top row where the two are scored
    on the same test images, the exact binomial test against the majority class's share."""
    out = Evidence()
    if not rows:
        return out
    top = rows[0]
    reference = top.predictions[0] if top.predictions else None
    top_reason = top.unpaired_reason(reference)
    unpaired = []
    for i, row in enumerate(rows):
        own = row.predictions[0] if row.predictions and row.predictions[0] is not None else None
        if own is not None and row.unpaired_reason(own) is None:
            n = len(own.files)
            k = round(row.mean("test", "accuracy") * n)
            p = evidence.above_rate_p(k, n, own.majority_rate())
            out.above_chance[i] = f"{'yes' if p < evidence.ALPHA else '**no**'}, p={p:.3g}"
        if row is top:
            out.against_top[i] = "top"
            continue
        reason = top_reason or row.unpaired_reason(reference)
        if reason:
            out.against_top[i] = "not paired"
            unpaired.append(f"{row.name}: {reason}")
            continue
        test = evidence.sign_test(top.correct(reference), row.correct(reference))
        verdict = "**tie**" if not test.significant else "below" if test.only_a > test.only_b else "above"
        out.against_top[i] = f"{verdict}, p={test.p_value:.3g}"
    if reference is not None:
        out.notes.append(
            f"vs top: McNemar's exact test of each row's test predictions against {top.name}'s (two-sided, "
            f"α = {evidence.ALPHA}; over several seeds, each image counts for the side whose runs get it right more "
            "often); **tie**: the test set cannot tell it from the top row. above chance: exact binomial test of the "
            f"test accuracy against the majority class's share ({reference.majority_rate():.3f}), one-sided.")
        out.notes.append(evidence.detectable_text(len(reference.files), top.mean("test", "accuracy")))
    if unpaired:
        out.notes.append("not paired, nothing compared: " + "; ".join(unpaired))
    return out


def table(rows: list[Row]) -> str:
    """The ranked rows as a Markdown table, the evidence of each row, and the footnotes under it."""
    weighed = weigh(rows)
    lines = ["| rank | experiment | model | changed params | test accuracy [95 % CI] | vs top | above chance | F1 "
             "| ROC AUC | best val accuracy (epoch) | pointing game | attribution in box (chance) | train time |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for rank, row in enumerate(rows, 1):
        e = row.runs[0]
        if len(row.runs) == 1:
            val = f"{_number(e.train.get('best_val_accuracy'))} ({e.train.get('best_epoch', '–')})"
        else:
            val = spread(row.values("train", "best_val_accuracy")) or "–"
        seconds = row.mean("train", "train_seconds")
        in_box = "–" if row.mean("test", "attribution_in_box") is None else \
            f"{_number(row.mean('test', 'attribution_in_box'))} ({_number(row.mean('test', 'box_area_share'))})"
        lines.append(f"| {rank} | {row.name} | `{row.model}` | {settings_text(row.settings())} "
                     f"| {_test_accuracy(row)} | {weighed.against_top.get(rank - 1, '–')} "
                     f"| {weighed.above_chance.get(rank - 1, '–')} | {_number(row.mean('test', 'f1'))} "
                     f"| {_number(row.mean('test', 'roc_auc'))} | {val} | {_number(row.mean('test', 'pointing_game'))} "
                     f"| {in_box} | {'–' if seconds is None else f'{seconds:.0f} s'} |")
    folded = [row for row in rows if len(row.runs) > 1]
    notes = list(weighed.notes)
    if folded:
        notes.append("A row of several seeds: experiments that differ only in train.seed, mean ± sd (min–max) over "
                     "their runs; F1, ROC AUC, pointing game and time are means.")
    return "\n".join(lines) + "\n" + "".join(f"\n{note}\n" for note in notes)


def select(experiments: list[Experiment], match: str | None, sweep: str | None) -> list[Experiment]:
    if match:
        experiments = [e for e in experiments if re.search(match, e.name)]
    if sweep:
        experiments = [e for e in experiments if str(e.params.get("train.sweep") or "") == sweep]
    return experiments


def best(experiments: list[Experiment]) -> Experiment:
    """Best validation accuracy, then lower validation loss, then the name."""
    return min(experiments, key=lambda e: (-e.train["best_val_accuracy"], e.train["best_val_loss"], e.name))


def best_row(rows: list[Row]) -> Row:
    """Best mean validation accuracy, then lower mean validation loss, then the name."""
    return min(rows, key=lambda r: (-r.mean("train", "best_val_accuracy"), r.mean("train", "best_val_loss"), r.name))


def swept_keys(experiments: list[Experiment]) -> list[str]:
    """The params whose values differ between the points of the grid (lr, batch_size, epochs, ...), the training
    seed aside (repeats fold into one point)."""
    keys = {k for e in experiments for k in e.params if k not in ("train.sweep", SEED_KEY)}
    return sorted(k for k in keys if len({repr(e.params.get(k)) for e in experiments}) > 1)
