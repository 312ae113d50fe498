"""`catdog leaderboard`: the finished DVC experiments ranked by test accuracy, as a Markdown table and a PNG of
their validation-accuracy curves overlaid (reports/leaderboard.md and reports/leaderboard.png).

    catdog leaderboard                      the experiments of the current commit
    catdog leaderboard -A --match '^bench-' every commit's experiments whose name matches
"""

import argparse
import re
from pathlib import Path

from catdog import CatdogError, plots
from catdog.experiments import Experiment, finished, history
from catdog.io import write_text
from catdog.paths import repo_root


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


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="catdog leaderboard", description=__doc__.splitlines()[0])
    parser.add_argument("-A", "--all-commits", action="store_true", help="experiments of every commit, not only HEAD")
    parser.add_argument("--match", metavar="REGEX", help="only experiments whose name matches")
    parser.add_argument("--sweep", metavar="NAME", help="only the experiments run with -S train.sweep=NAME")
    parser.add_argument("--out", type=Path, default=Path("reports"), help="folder for leaderboard.md/.png")
    args = parser.parse_args(argv)
    done, not_done = finished(args.all_commits)
    experiments = ranked(select(done, args.match, args.sweep))
    not_done = [e.name for e in select(not_done, args.match, args.sweep)]
    if not experiments:
        raise CatdogError("no finished DVC experiment to rank" + (" matches" if args.match or args.sweep else "")
                          + "; run some first, e.g. `dvc exp run -S model=cnn`, or pass -A for older commits'")
    out = args.out if args.out.is_absolute() else repo_root() / args.out
    markdown, png = out / "leaderboard.md", out / "leaderboard.png"
    curves = [(f"{e.name} ({e.model}): {e.test['accuracy']:.3f}", history(e)) for e in experiments]
    plots.validation_curves(curves, f"Validation accuracy of {len(experiments)} experiments "
                            "(legend: test accuracy, best first)", png)
    text = table(experiments)
    write_text(markdown, f"# Leaderboard: test accuracy\n\n![validation accuracy]({png.name})\n\n{text}")
    print(text)
    if not_done:
        print(f"not ranked (no test metrics yet): {', '.join(not_done)}")
    print(f"wrote {markdown} and {png}")
