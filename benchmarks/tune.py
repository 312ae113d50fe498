"""`catdog tune` as a user runs it, in a scratch clone of this checkout (HEAD plus the working tree's params.yaml)
on the embedded dataset, default params; prints what RESULTS.md records. Inside the activated .venv:

    python benchmarks/tune.py overhead --model logistic --trials 4   # trials per minute at --jobs 1 and 2, and
                                                                     # what a trial costs beyond its training
    python benchmarks/tune.py pruning --model mlp --trials 8         # the same study with and without the pruner
    python benchmarks/tune.py tuned --model cnn --trials 8           # the chosen trial's test accuracy beside the
                                                                     # committed defaults'
"""

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def sh(args, cwd, **kwargs) -> str:
    result = subprocess.run(args, cwd=cwd, capture_output=True, text=True, **kwargs)
    if result.returncode != 0:
        sys.exit(f"{args} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result.stdout


def scratch(folder: Path) -> Path:
    """A clone with this checkout's params.yaml, sharing its DVC cache (prepare comes from DVC's run cache)."""
    repo = folder / "repo"
    sh(["git", "clone", "-q", str(ROOT), str(repo)], folder)
    shutil.copy(ROOT / "params.yaml", repo / "params.yaml")
    sh(["dvc", "config", "--local", "cache.dir", str(ROOT / ".dvc" / "cache")], repo)
    sh(["dvc", "repro", "prepare"], repo)
    sh(["git", "-c", "user.name=bench", "-c", "user.email=b@b", "commit", "-qam", "bench", "--allow-empty"], repo)
    return repo


def set_tune(repo: Path, **values) -> None:
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["tune"].update(values)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    sh(["git", "-c", "user.name=bench", "-c", "user.email=b@b", "commit", "-qam", "tune settings"], repo)


def tune(repo: Path, model: str, trials: int, study: str, jobs: int = 1) -> tuple[float, str]:
    start = time.perf_counter()
    out = sh([sys.executable, "-m", "catdog", "tune", "--model", model, "--trials", str(trials), "--study", study,
              "--jobs", str(jobs)], repo)
    return time.perf_counter() - start, out


def metrics(repo: Path, name: str, path: str) -> dict:
    ref = next(r for r in sh(["git", "for-each-ref", "--format=%(refname)", "refs/exps"], repo).split()
               if r.endswith(f"/{name}"))
    return json.loads(sh(["git", "show", f"{ref}:{path}"], repo))


def overhead(repo: Path, args) -> None:
    for jobs in (1, 2):
        study = f"overhead-j{jobs}"
        seconds, out = tune(repo, args.model, args.trials, study, jobs)
        walls = [float(s) for s in re.findall(r"val accuracy \S+ in (\d+) s", out)]
        trains = [metrics(repo, f"{study}-{n}", "metrics/train.json")["train_seconds"] for n in range(args.trials)]
        print(f"--jobs {jobs}: {args.trials} trials in {seconds:.0f} s = {60 * args.trials / seconds:.2f} trials/min; "
              f"per trial: wall {sum(walls) / len(walls):.1f} s, of it training {sum(trains) / len(trains):.1f} s, "
              f"overhead {(sum(walls) - sum(trains)) / len(walls):.1f} s")


def pruning(repo: Path, args) -> None:
    for pruner in ("median", "none"):
        set_tune(repo, pruner=pruner)
        seconds, out = tune(repo, args.model, args.trials, f"pruning-{pruner}")
        best = re.search(r"best val accuracy so far: (\S+)", out).group(1)
        pruned = len(re.findall(r": pruned at epoch", out))
        print(f"pruner {pruner}: {args.trials} trials in {seconds / 60:.1f} min, {pruned} pruned, best val accuracy "
              f"{best}", flush=True)
        print(sh([sys.executable, "-m", "catdog", "best", "--sweep", f"pruning-{pruner}"], repo), flush=True)


def tuned(repo: Path, args) -> None:
    start = time.perf_counter()
    sh(["dvc", "exp", "run", "--temp", "-n", f"default-{args.model}", "-S", f"model={args.model}"], repo)
    default_seconds = time.perf_counter() - start
    train = metrics(repo, f"default-{args.model}", "metrics/train.json")
    test = metrics(repo, f"default-{args.model}", "metrics/test.json")
    print(f"defaults ({default_seconds / 60:.1f} min): val accuracy {train['best_val_accuracy']:.4f}, "
          f"test accuracy {test['accuracy']:.4f}", flush=True)
    seconds, out = tune(repo, args.model, args.trials, f"tuned-{args.model}")
    print(out)
    print(f"tune: {args.trials} trials in {seconds / 60:.1f} min")
    print(sh([sys.executable, "-m", "catdog", "best", "--sweep", f"tuned-{args.model}"], repo))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("what", choices=("overhead", "pruning", "tuned"))
    parser.add_argument("--model", default="logistic")
    parser.add_argument("--trials", type=int, default=4)
    args = parser.parse_args()
    print(f"{sh(['git', 'rev-parse', '--short', 'HEAD'], ROOT).strip()}: {args.what} --model {args.model} "
          f"--trials {args.trials}")
    with tempfile.TemporaryDirectory(prefix="catdog-tune-bench-") as folder:
        {"overhead": overhead, "pruning": pruning, "tuned": tuned}[args.what](scratch(Path(folder)), args)


if __name__ == "__main__":
    main()
