"""`catdog repeat --seeds N -S model=cnn`: one experiment repeated over N training seeds, as N DVC experiments
through DVC's queue, on the same split and so the same test set.

    catdog repeat --seeds 5 -S model=cnn              cnn-seed0 .. cnn-seed4, one at a time
    catdog repeat --seeds 5 -S model=cnn -j 2         two at a time
    catdog repeat --seeds 3 --first 10 --name cnn-fast -S model=cnn -S models.cnn.lr=0.01 --queue-only

Each repeat is `dvc exp run --queue -n <name>-seed<k> -S train.seed=<k> -S ...`; `dvc exp run --run-all -j J` then
runs the queue (experiments queued earlier too). Only train, evaluate and plot run again: `seed`, which sets the
split, stays. `catdog leaderboard` and `catdog best` fold the repeats into one row: mean ± sd, min–max and n.
"""

import argparse
import hashlib
import re
import subprocess

from catdog import CatdogError
from catdog.analysis.experiments import finished
from catdog.analysis.leaderboard import SEED_KEY, fold, spread
from catdog.config import load_params
from catdog.paths import repo_root

EXP_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"  # a name DVC and git accept in <name>-seed<k>


def default_name(overrides: list[str]) -> str:
    """The model's name, and a short hash of the other overrides where there are any: cnn, cnn-3f2a9c."""
    settings = dict(override.split("=", 1) for override in overrides)
    model = settings.pop("model", None) or str(load_params().get("model"))
    if not settings:
        return model
    return f"{model}-{hashlib.sha1(' '.join(sorted(overrides)).encode()).hexdigest()[:6]}"


def existing_names() -> set[str]:
    """The names of this repository's experiments (refs/exps/.../<name>), of every commit."""
    out = subprocess.run(["git", "for-each-ref", "--format=%(refname)", "refs/exps"], cwd=repo_root(),
                         capture_output=True, text=True).stdout
    return {line.rsplit("/", 1)[-1] for line in out.splitlines()}


def dvc(*args: str, quiet: bool = True) -> None:
    result = subprocess.run(["dvc", *args], cwd=repo_root(), capture_output=quiet, text=True)
    if result.returncode != 0:
        last = (result.stderr or "").strip().splitlines()[-1:] if quiet else []
        raise CatdogError(f"`dvc {' '.join(args)}` failed{': ' + last[0] if last else ''}")


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="catdog repeat", description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, required=True, metavar="N", help="how many training seeds")
    parser.add_argument("--first", type=int, default=0, metavar="K", help="the first seed (default 0): K .. K+N-1")
    parser.add_argument("-S", "--set-param", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="a param of the experiment, as `dvc exp run -S` takes it; repeatable")
    parser.add_argument("--name", help="the experiments' names are NAME-seed<k> (default: the model, and a short "
                        "hash of the other -S values)")
    parser.add_argument("-j", "--jobs", type=int, default=1,
                        help="experiments run at once (default 1; on a CPU, 2 overlaps their fixed "
                        "costs, and more wait for the same cores: their trainings take turns)")
    parser.add_argument("--queue-only", action="store_true", help="queue them; run later with `dvc exp run "
                        "--run-all` or `dvc queue start`")
    args = parser.parse_args(argv)
    if args.seeds < 1 or args.first < 0 or args.jobs < 1:
        raise CatdogError("--seeds and --jobs must be at least 1, --first at least 0")
    bad = [o for o in args.overrides if "=" not in o or not o.split("=", 1)[0].strip()]
    if bad:
        raise CatdogError(f"-S {bad[0]!r} is not KEY=VALUE, e.g. -S model=cnn -S models.cnn.lr=0.01")
    if any(o.split("=", 1)[0].strip() == SEED_KEY for o in args.overrides):
        raise CatdogError(f"-S {SEED_KEY}=... is what catdog repeat sets: choose the seeds with --seeds and --first")
    name = args.name or default_name(args.overrides)
    if not re.match(EXP_NAME, name):
        raise CatdogError(f"--name {name!r} is not a valid experiment name: letters, digits, '.', '_' and '-'")
    seeds = range(args.first, args.first + args.seeds)
    names = [f"{name}-seed{seed}" for seed in seeds]
    taken = sorted(set(names) & existing_names())
    if taken:
        raise CatdogError(f"experiment {taken[0]} exists already: give the repeats another --name, or remove the "
                          f"old ones first (`dvc exp remove {' '.join(taken)}`)")
    extra = [arg for override in args.overrides for arg in ("-S", override)]
    for experiment, seed in zip(names, seeds):
        dvc("exp", "run", "--queue", "-n", experiment, "-S", f"{SEED_KEY}={seed}", *extra)
        print(f"queued {experiment}")
    if args.queue_only:
        print(f"run them with `dvc exp run --run-all -j {args.jobs}`; then `catdog leaderboard --match "
              f"'^{name}-seed'`")
        return
    dvc("exp", "run", "--run-all", "-j", str(args.jobs), quiet=False)
    done, _ = finished()
    runs = [e for e in done if e.name in names]
    rows = fold(runs)
    if len(runs) < len(names):
        missing = sorted(set(names) - {e.name for e in runs})
        raise CatdogError(f"{len(missing)} of {len(names)} repeats did not finish ({', '.join(missing)}): "
                          "`dvc queue status` and `dvc queue logs NAME` say why")
    for row in rows:
        print(f"{row.name}: test accuracy {spread(row.values('test', 'accuracy'))}, best val accuracy "
              f"{spread(row.values('train', 'best_val_accuracy'))}, n={len(row.runs)}")
    print(f"ranked with the others: catdog leaderboard --match '^{name}-seed'")
