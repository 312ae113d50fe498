"""`catdog tune --model NAME`: a Bayesian search over params.yaml's `tune.space.NAME`, each trial a DVC experiment.

    catdog tune --model cnn --trials 20                 20 trials in all: run it again to go on after a stop
    catdog tune --model mlp --trials 30 --jobs 2        two trials at a time
    catdog tune --model cnn --storage postgresql+psycopg://tune@db/optuna --push origin   one worker per machine

Optuna's TPE sampler (seeded by tune.seed) picks each trial's values; the pruner stops a trial whose validation
accuracy falls below the median of the earlier trials at the same epoch. Trial n is the DVC experiment
`<study>-<n>`, run with `-S train.sweep=<study>`, so `catdog best --sweep <study>` ranks the study, and its
MLflow run is a child of the study's run. docs/tuning.md has the rest.
"""

import argparse

from catdog import CatdogError
from catdog.config import load_params
from catdog.tuning.worker import EXP_NAME, Worker


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="catdog tune", description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n".join(__doc__.splitlines()[2:]))
    parser.add_argument("--model", required=True, help="the entry of `models` to tune")
    parser.add_argument("--trials", type=int, default=20, metavar="N",
                        help="the study's total, counting every worker's finished and pruned trials (default 20)")
    parser.add_argument("--jobs", type=int, default=1, metavar="J",
                        help="trials at a time on this machine (on a CPU, 2 overlaps their fixed costs, and "
                        "more wait for the same cores: their trainings take turns)")
    parser.add_argument("--study", metavar="NAME", help="the study (default tune-MODEL); its trials: NAME-0, NAME-1")
    parser.add_argument("--storage", metavar="URL", help="Optuna's storage (default sqlite:///optuna.db in the "
                        "repository); postgresql+psycopg://... for workers on several machines")
    parser.add_argument("--timeout", type=float, metavar="S", help="start no trial after S seconds")
    parser.add_argument("--push", metavar="REMOTE", help="`dvc exp push REMOTE` each finished trial (a cluster's "
                        "workers share their experiments through the git remote)")
    args = parser.parse_args(argv)
    study = args.study or f"tune-{args.model}"
    import re

    if not re.match(EXP_NAME, study):
        raise CatdogError(f"--study {study!r} cannot name DVC experiments: use letters, digits, - and _")
    if args.trials < 1 or args.jobs < 1:
        raise CatdogError(f"--trials {args.trials} and --jobs {args.jobs} must be at least 1")
    if args.timeout is not None and args.timeout <= 0:
        raise CatdogError(f"--timeout {args.timeout} must be a positive number of seconds")
    Worker(load_params(), args.model, args.trials, args.jobs, study, args.storage, args.timeout, args.push).run()
