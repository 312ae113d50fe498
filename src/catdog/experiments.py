"""The DVC experiments of this repository, as flat records: what `catdog leaderboard` and `catdog best` rank.

Read from `dvc exp show --json`, so every experiment DVC knows counts, whether it ran in the workspace, from the
queue or in parallel; its per-epoch history comes from the experiment's own commit (plots/history.csv is kept in
git, `cache: false`).
"""

import csv
import io
import json
import subprocess
from dataclasses import dataclass, field

from catdog import CatdogError
from catdog.config import flat
from catdog.paths import HISTORY_FILE, TEST_METRICS, TRAIN_METRICS, repo_root


@dataclass
class Experiment:
    name: str
    rev: str
    params: dict                                     # params.yaml, flattened: {"models.cnn.lr": 0.001, ...}
    baseline: dict                                   # the params of the commit it was run from, flattened
    test: dict = field(default_factory=dict)         # metrics/test.json
    train: dict = field(default_factory=dict)        # metrics/train.json

    @property
    def model(self) -> str:
        return self.params["model"]

    def settings(self) -> dict:
        """What this experiment changed from its commit's params.yaml (as `-S` did), with the model's own keys
        named without their `models.<model>.` prefix: {"lr": 0.001, "batch_size": 16}."""
        prefix = f"models.{self.model}."
        return {key.removeprefix(prefix): value for key, value in self.params.items()
                if key != "model" and value != self.baseline.get(key)
                and (key.startswith(prefix) or not key.startswith("models."))}


def _dvc_exp_show(all_commits: bool) -> list:
    command = ["dvc", "exp", "show", "--json"] + (["--all-commits"] if all_commits else [])
    result = subprocess.run(command, cwd=repo_root(), capture_output=True, text=True)
    if result.returncode != 0:
        raise CatdogError(f"`{' '.join(command)}` failed: {result.stderr.strip().splitlines()[-1:]}")
    return json.loads(result.stdout or "[]")


def _file(data: dict, group: str, path) -> dict:
    return (data.get(group) or {}).get(str(path), {}).get("data") or {}


def finished(all_commits: bool = False) -> tuple[list[Experiment], list[str]]:
    """(experiments that finished with test metrics, names of those that did not: queued, running or failed).
    Only the experiments of the current commit unless all_commits."""
    done, not_done = [], []
    for commit in _dvc_exp_show(all_commits):
        if commit["rev"] == "workspace":
            continue
        baseline = flat(_file(commit.get("data") or {}, "params", "params.yaml"))
        for experiment in commit.get("experiments") or []:
            latest = experiment["revs"][0]
            data, state = latest.get("data") or {}, (experiment.get("executor") or {}).get("state", "success")
            test = _file(data, "metrics", TEST_METRICS)
            if state != "success" or not test or latest.get("error"):
                not_done.append(f"{experiment['name']} ({state})")  # a running one shows its baseline's metrics
                continue
            done.append(Experiment(experiment["name"] or latest["rev"][:7], latest["rev"],
                                   flat(_file(data, "params", "params.yaml")), baseline, test,
                                   _file(data, "metrics", TRAIN_METRICS)))
    return done, not_done


def history(experiment: Experiment) -> list[dict]:
    """The experiment's per-epoch rows (epoch, train_loss, ..., val_accuracy) from its commit."""
    result = subprocess.run(["git", "show", f"{experiment.rev}:{HISTORY_FILE.as_posix()}"], cwd=repo_root(),
                            capture_output=True, text=True)
    if result.returncode != 0:
        return []
    return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(io.StringIO(result.stdout))]
