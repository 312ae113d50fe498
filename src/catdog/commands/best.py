"""`catdog best --sweep NAME`: the grid point of a sweep with the best validation accuracy, and its test accuracy.

A sweep is the set of DVC experiments queued with the same `-S train.sweep=NAME` (README, "Grid search"). The
choice uses validation data only (best_val_accuracy, then lower best_val_loss, then the name); test accuracy is
reported for the chosen point alone, as seed 002 did, so the test set never takes part in the choice.
"""

import argparse

from catdog import CatdogError
from catdog.analysis.experiments import finished
from catdog.analysis.leaderboard import best, select, swept_keys


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
    winner, keys = best(points), swept_keys(points)
    short = [k.rsplit(".", 1)[-1] if k.startswith("models.") else k for k in keys]
    print(f"| experiment | {' | '.join(short)} | best val accuracy (epoch) | best val loss |")
    print("|---" * (len(keys) + 3) + "|")
    for e in sorted(points, key=lambda e: (e is not winner, -e.train["best_val_accuracy"], e.name)):
        values = " | ".join(str(e.params.get(k)) for k in keys)
        mark = " (best)" if e is winner else ""
        print(f"| {e.name}{mark} | {values} | {e.train['best_val_accuracy']:.3f} ({e.train['best_epoch']}) "
              f"| {e.train['best_val_loss']:.4f} |")
    if not_done:
        print(f"\nnot finished, left out: {', '.join(not_done)}")
    chosen = " ".join(f"{s}={winner.params.get(k)}" for s, k in zip(short, keys))
    print(f"\nbest of {len(points)} by validation accuracy: {winner.name} ({chosen}): validation accuracy "
          f"{winner.train['best_val_accuracy']:.4f}, test accuracy {winner.test['accuracy']:.4f}"
          f"\nits outputs in the workspace: dvc exp apply {winner.name}")
