"""Ranking DVC experiments: by test accuracy for the leaderboard, by validation accuracy to choose the best point
of a sweep (the test set never takes part in that choice)."""

import re

from catdog.analysis.experiments import Experiment


def ranked(experiments: list[Experiment]) -> list[Experiment]:
    """Best test accuracy first; ties go to the better validation accuracy, then to the name (a stable order)."""
    return sorted(experiments, key=lambda e: (-e.test["accuracy"], -e.train.get("best_val_accuracy", 0), e.name))


def settings_text(settings: dict) -> str:
    return " ".join(f"{k}={v}" for k, v in sorted(settings.items())) or "defaults"


def _number(value, digits=3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def table(experiments: list[Experiment]) -> str:
    lines = ["| rank | experiment | model | changed params | test accuracy | F1 | ROC AUC "
             "| best val accuracy (epoch) | pointing game | attribution in box (chance) | train time |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for rank, e in enumerate(experiments, 1):
        val = f"{_number(e.train.get('best_val_accuracy'))} ({e.train.get('best_epoch', '–')})"
        seconds = e.train.get("train_seconds")
        in_box = "–" if e.test.get("attribution_in_box") is None else \
            f"{_number(e.test['attribution_in_box'])} ({_number(e.test.get('box_area_share'))})"
        lines.append(f"| {rank} | {e.name} | `{e.model}` | {settings_text(e.settings())} "
                     f"| **{_number(e.test['accuracy'])}** | {_number(e.test.get('f1'))} "
                     f"| {_number(e.test.get('roc_auc'))} | {val} | {_number(e.test.get('pointing_game'))} "
                     f"| {in_box} | {'–' if seconds is None else f'{seconds:.0f} s'} |")
    return "\n".join(lines) + "\n"


def select(experiments: list[Experiment], match: str | None, sweep: str | None) -> list[Experiment]:
    if match:
        experiments = [e for e in experiments if re.search(match, e.name)]
    if sweep:
        experiments = [e for e in experiments if str(e.params.get("train.sweep") or "") == sweep]
    return experiments


def best(experiments: list[Experiment]) -> Experiment:
    """Best validation accuracy, then lower validation loss, then the name."""
    return min(experiments, key=lambda e: (-e.train["best_val_accuracy"], e.train["best_val_loss"], e.name))


def swept_keys(experiments: list[Experiment]) -> list[str]:
    """The params whose values differ between the points of the grid (lr, batch_size, epochs, ...)."""
    keys = {k for e in experiments for k in e.params if k != "train.sweep"}
    return sorted(k for k in keys if len({repr(e.params.get(k)) for e in experiments}) > 1)
