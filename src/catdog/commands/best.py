"""`catdog best --sweep NAME`: the grid point of a sweep with the best validation accuracy, and its test accuracy.

A sweep is the set of DVC experiments queued with the same `-S train.sweep=NAME` (docs/experiments.md, "Grid
search"). The choice uses validation data only (best_val_accuracy, then lower best_val_loss, then the name); test
accuracy is reported for the chosen point alone, with its 95 % interval, as seed 002 did, so the test set never
takes part in the choice. Points repeated over training seeds (`catdog repeat`) are one point: the mean over their
seeds.
"""

import argparse

from catdog import CatdogError
from catdog.analysis.experiments import finished, predictions
from catdog.analysis.leaderboard import best, best_row, fold, select, spread, swept_keys


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="catdog best", description=__doc__.splitlines()[0])
    parser.add_argument("--sweep", required=True, metavar="NAME", help="the train.sweep label of the grid")
    args = parser.parse_args(argv)
    done, not_done = finished(all_commits=True)  # the label finds the sweep, whichever commit it ran from
    points = [e for e in select(done, None, args.sweep) if "best_val_accuracy" in e.train]
    not_done = [e.name for e in select(not_done, None, args.sweep)]
    if not points:
        raise CatdogError(f"no finished DVC experiment has train.sweep={args.sweep!r}"
                          + (f" (not finished: {', '.join(not_done)})" if not_done else "")
                          + "; queue the grid with `dvc exp run --queue -S train.sweep=NAME -S 'models.X.lr=a,b' "
                          "...` and `dvc queue start`")
    rows, keys = fold(points, {e.rev: predictions(e) for e in points}), swept_keys(points)
    winner = best_row(rows)
    short = [k.rsplit(".", 1)[-1] if k.startswith("models.") else k for k in keys]
    print(f"| experiment | {' | '.join(short)} | best val accuracy (epoch) | best val loss |")
    print("|---" * (len(keys) + 3) + "|")
    for row in sorted(rows, key=lambda r: (r is not winner, -r.mean("train", "best_val_accuracy"), r.name)):
        values = " | ".join(str(row.runs[0].params.get(k)) for k in keys)
        mark = " (best)" if row is winner else ""
        epoch = f" ({row.runs[0].train['best_epoch']})" if len(row.runs) == 1 else ""
        print(f"| {row.name}{mark} | {values} | {spread(row.values('train', 'best_val_accuracy'))}{epoch} "
              f"| {spread(row.values('train', 'best_val_loss'))} |")
    if not_done:
        print(f"\nnot finished, left out: {', '.join(not_done)}")
    chosen = " ".join(f"{s}={winner.runs[0].params.get(k)}" for s, k in zip(short, keys))
    n_points = f"{len(rows)}" + (f" ({len(points)} runs)" if len(points) > len(rows) else "")
    if len(winner.runs) == 1:
        test = winner.runs[0].test
        interval = f" [{test['accuracy_ci_low']:.4f}, {test['accuracy_ci_high']:.4f}] (95 % CI)" \
            if "accuracy_ci_low" in test else ""
        scores = (f"validation accuracy {winner.mean('train', 'best_val_accuracy'):.4f}, test accuracy "
                  f"{test['accuracy']:.4f}{interval}")
    else:
        scores = (f"validation accuracy {spread(winner.values('train', 'best_val_accuracy'))}, test accuracy "
                  f"{spread(winner.values('test', 'accuracy'))} over {len(winner.runs)} training seeds")
    print(f"\nbest of {n_points} by validation accuracy: {winner.name} ({chosen}): {scores}"
          f"\nits outputs in the workspace: dvc exp apply {best(winner.runs).name}")
