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
from catdog.analysis.evidence import Predictions
from catdog.config import flat
from catdog.paths import HISTORY_FILE, PREDICTIONS_FILE, RUN_FILE, TEST_METRICS, TRAIN_METRICS, repo_root


@dataclass
class Experiment:
    name: str
    rev: str
    params: dict                                     # params.yaml, flattened: {"models.cnn.lr": 0.001, ...}
    baseline: dict                                   # the params of the commit it was run from, flattened
    test: dict = field(default_factory=dict)         # metrics/test.json
    train: dict = field(default_factory=dict)        # metrics/train.json
    baseline_rev: str = ""                           # the commit it was run from

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


def _dvc(*args: str) -> str:
    result = subprocess.run(["dvc", *args], cwd=repo_root(), capture_output=True, text=True)
    if result.returncode != 0:
        raise CatdogError(f"`dvc {' '.join(args)}` failed: {' '.join(result.stderr.strip().splitlines()[-1:])}")
    return result.stdout


def _dvc_exp_show(all_commits: bool) -> list:
    if not all_commits:
        return json.loads(_dvc("exp", "show", "--json") or "[]")
    # `exp show -A` reads every commit of the history; only those that have experiments matter (`exp list -A`
    # prints each as "<sha>:" above its experiments), which makes it several times faster.
    commits = [line[:-1] for line in _dvc("exp", "list", "--all-commits").splitlines() if line.endswith(":")]
    revs = [arg for commit in commits for arg in ("--rev", commit)]
    return json.loads(_dvc("exp", "show", "--json", *revs) or "[]") if commits else []


def _file(data: dict, group: str, path) -> dict:
    return (data.get(group) or {}).get(str(path), {}).get("data") or {}


def finished(all_commits: bool = False) -> tuple[list[Experiment], list[Experiment]]:
    """(experiments that finished with test metrics, those that did not: queued, running or failed, named with
    their state, "cnn-try (failed)"). Only the experiments of the current commit unless all_commits."""
    done, not_done = [], []
    for commit in _dvc_exp_show(all_commits):
        if commit["rev"] == "workspace":
            continue
        baseline = flat(_file(commit.get("data") or {}, "params", "params.yaml"))
        for experiment in commit.get("experiments") or []:
            latest = experiment["revs"][0]
            data, state = latest.get("data") or {}, (experiment.get("executor") or {}).get("state", "success")
            test = _file(data, "metrics", TEST_METRICS)
            name, params = experiment["name"] or latest["rev"][:7], flat(_file(data, "params", "params.yaml"))
            if state != "success" or not test or latest.get("error"):  # a running one shows its baseline's metrics
                not_done.append(Experiment(f"{name} ({state})", latest["rev"], params, baseline))
                continue
            done.append(Experiment(name, latest["rev"], params, baseline, test, _file(data, "metrics", TRAIN_METRICS),
                                   commit["rev"]))
    return done, not_done


def committed(rev: str, path) -> str | None:
    """A file as committed at rev (the `cache: false` outputs are in git), or None where it is not there."""
    result = subprocess.run(["git", "show", f"{rev}:{path.as_posix()}"], cwd=repo_root(), capture_output=True,
                            text=True)
    return result.stdout if result.returncode == 0 else None


def history(experiment: Experiment) -> list[dict]:
    """The experiment's per-epoch rows (epoch, train_loss, ..., val_accuracy) from its commit."""
    text = committed(experiment.rev, HISTORY_FILE)
    return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(io.StringIO(text or ""))]


def predictions(experiment: Experiment) -> Predictions | None:
    """The experiment's test predictions (plots/predictions.csv) from its commit."""
    text = committed(experiment.rev, PREDICTIONS_FILE)
    return Predictions.from_csv(text) if text else None


def trained_by(experiment: Experiment) -> str | None:
    """The id of the MLflow run that trained the experiment's model, from its models/run.json at its revision
    (DVC's cache holds it): the run of another experiment or commit where DVC skipped or restored `train`. None
    where the revision, the file or its cached copy is missing (an experiment pulled without its outputs)."""
    import dvc.api  # late: a second to import, for `catdog register` alone
    from dvc.exceptions import DvcException

    try:
        return json.loads(dvc.api.read(RUN_FILE.as_posix(), repo=str(repo_root()), rev=experiment.rev))["run_id"]
    except (DvcException, OSError, ValueError, KeyError, TypeError):
        return None
