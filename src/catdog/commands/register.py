"""`catdog register`: the champion in the MLflow Model Registry, chosen by validation accuracy.

    catdog register                       the best finished DVC experiment of any commit
    catdog register --sweep grid1         the best point of a grid search (train.sweep)
    catdog register --match '^cnn-'       the best experiment whose name matches

The choice is `catdog best`'s: best_val_accuracy, then lower best_val_loss, then the name; the test set never
takes part. The experiment's MLflow Model becomes a new version of the registered model `catdog` and the alias
`champion` points at it (tracking.model_registry): `catdog predict --model models:/catdog@champion`,
`mlflow models serve -m models:/catdog@champion`.

Before it moves the alias, the candidate's test predictions are paired with the current champion's (McNemar's
exact test): a candidate significantly worse on the test set is refused, with one line; --force moves it anyway.
"""

import argparse

from catdog import CatdogError
from catdog.analysis.experiments import finished
from catdog.analysis.leaderboard import best, select
from catdog.tracking.model_registry import ALIAS, REGISTERED_MODEL, against_champion, register


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="catdog register", description=__doc__.splitlines()[0])
    parser.add_argument("--sweep", metavar="NAME", help="only the experiments run with -S train.sweep=NAME")
    parser.add_argument("--match", metavar="REGEX", help="only experiments whose name matches")
    parser.add_argument("--name", default=REGISTERED_MODEL, help=f"the registered model (default {REGISTERED_MODEL})")
    parser.add_argument("--alias", default=ALIAS, help=f"the alias set on the new version (default {ALIAS})")
    parser.add_argument("--force", action="store_true", help="move the alias even to a candidate significantly "
                        "worse than the current champion on the test set")
    args = parser.parse_args(argv)
    done, _ = finished(all_commits=True)
    candidates = [e for e in select(done, args.match, args.sweep) if "best_val_accuracy" in e.train]
    if not candidates:
        raise CatdogError("no finished DVC experiment" + (f" with train.sweep={args.sweep!r}" if args.sweep else "")
                          + (f" matching {args.match!r}" if args.match else "")
                          + "; run one with `dvc exp run -S model=...` (a plain `dvc repro` is not an experiment)")
    champion = best(candidates)
    comparison, why_not = against_champion(champion, args.name, args.alias)
    if comparison is None:
        print(why_not)
    else:
        print("\n".join(comparison.summary_lines(params=False)))  # the champion's side has no params.yaml
        if comparison.regression and not args.force:
            raise CatdogError(f"not registered: {champion.name} is significantly worse than {args.name}@{args.alias} "
                              f"on the test set (McNemar p = {comparison.test.p_value:.3g}); --force moves "
                              "the alias anyway")
    run, version = register(champion, args.name, args.alias)
    print(f"registered {args.name} version {version.version}: DVC experiment {champion.name} ({champion.model}), "
          f"MLflow run {run.info.run_id}, best of {len(candidates)} by validation accuracy "
          f"{champion.train['best_val_accuracy']:.4f} (test accuracy {champion.test.get('accuracy', float('nan')):.4f})"
          f"\nalias {args.alias} -> version {version.version}: "
          f"catdog predict --model models:/{args.name}@{args.alias} FILES")
