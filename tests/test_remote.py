"""A DVC remote used as a team uses one (docs/scaling-out.md), with a local-path remote, a real DVC remote type:
clone A runs the pipeline and pushes its outputs; clone B pulls them and has a working model without training; an
experiment pushed from A is pulled in B with its outputs; the MLflow run of A names the data version dvc.lock
records; `catdog register` tags and describes where the version came from; and `catdog tune --push` refuses a
remote that cannot be reached or written, in one line, before any trial."""

import hashlib
import json
import sys
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from conftest import copy_repo, free_port, run

pytestmark = pytest.mark.slow  # two pipelines' worth of tiny trainings: 2-4 minutes on 2 loaded cores

OUTPUTS = ("models/model.pt", "metrics/test.json", "plots/predictions.csv", "plots/heatmaps.png")


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def lock_md5(repo: Path) -> str:
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    return next(o["md5"] for o in lock["stages"]["prepare"]["outs"] if o["path"] == "data/prepared")


@pytest.fixture(scope="module")
def team(tmp_path_factory):
    """A: the pipeline run and pushed, to the DVC remote `storage` and the git remote `origin` (a bare repository,
    as on a git server); B: a clone of origin that has run nothing."""
    root = tmp_path_factory.mktemp("team")
    storage, origin = root / "dvc-storage", root / "origin.git"
    a = copy_repo(root / "a")
    run(["dvc", "remote", "add", "-d", "storage", str(storage)], a)
    run(["dvc", "repro"], a)
    run(["dvc", "push"], a)
    run(["git", "add", "-A"], a)
    run(["git", "commit", "-q", "-m", "trained, outputs pushed"], a)
    run(["git", "init", "-q", "--bare", str(origin)], root)
    run(["git", "remote", "add", "origin", str(origin)], a)
    run(["git", "push", "-q", "origin", "HEAD:refs/heads/main"], a)
    b = root / "b"
    run(["git", "clone", "-q", "-b", "main", str(origin), str(b)], root)
    return {"a": a, "b": b, "storage": storage, "outputs": {f: md5(a / f) for f in OUTPUTS}}


def test_a_teammate_pulls_the_outputs_and_trains_nothing(team):
    b = team["b"]
    assert not (b / "models/model.pt").exists()  # in the DVC remote, not in git
    run(["dvc", "pull"], b)
    assert {f: md5(b / f) for f in OUTPUTS} == team["outputs"]
    assert "Data and pipelines are up to date." in run(["dvc", "status"], b).stdout
    image = sorted((b / "data/synthetic/dog").iterdir())[0]
    predicted = run([sys.executable, "-m", "catdog", "predict", "--json", str(image)], b).stdout
    assert json.loads(predicted)[0]["label"] in ("cat", "dog")
    repro = run(["dvc", "repro"], b).stdout
    assert "Running stage" not in repro, repro
    assert not (b / "mlflow.db").exists()  # no stage ran, so no run was logged
    assert {f: md5(b / f) for f in OUTPUTS} == team["outputs"]


def test_the_training_run_names_the_data_version_dvc_lock_records(team):
    a = team["a"]
    client = MlflowClient(f"sqlite:///{a / 'mlflow.db'}")
    run_id = json.loads((a / "models/run.json").read_text())["run_id"]
    logged = client.get_run(run_id)
    inputs = {i.dataset.name: i for i in logged.inputs.dataset_inputs}
    assert sorted(inputs) == ["data/synthetic:test", "data/synthetic:train", "data/synthetic:val"]
    assert {i.dataset.digest for i in inputs.values()} == {lock_md5(a)}
    # No system metrics asserted: this tiny training is open for less than MLflow's first 1 s sample
    # (tests/test_lineage.py keeps a run open until one arrives).


@pytest.fixture(scope="module")
def shared_experiment(team):
    """An experiment run in A and pushed to origin and the DVC remote: its name and its outputs' md5s."""
    a = team["a"]
    run(["dvc", "exp", "run", "-n", "shallow-shared", "-S", "model=shallow"], a)
    run(["dvc", "exp", "push", "origin", "shallow-shared"], a)
    return "shallow-shared", {f: md5(a / f) for f in OUTPUTS}


def test_an_experiment_pushed_from_one_clone_is_pulled_in_another_with_its_outputs(team, shared_experiment):
    name, outputs = shared_experiment
    b = team["b"]
    run(["dvc", "exp", "pull", "origin", name], b)
    assert name in run(["dvc", "exp", "ls", "--name-only"], b).stdout.split()
    run(["dvc", "exp", "apply", name], b)  # its outputs from B's cache: exp pull fetched them
    assert {f: md5(b / f) for f in OUTPUTS} == outputs
    assert outputs["models/model.pt"] != team["outputs"]["models/model.pt"]
    assert "Data and pipelines are up to date." in run(["dvc", "status"], b).stdout


def test_register_tags_the_version_with_its_lineage_and_how_to_reproduce_it(team, shared_experiment):
    name, _ = shared_experiment
    a = team["a"]
    run([sys.executable, "-m", "catdog", "register", "--match", f"^{name}$"], a)
    client = MlflowClient(f"sqlite:///{a / 'mlflow.db'}")
    version = client.get_model_version_by_alias("catdog", "champion")
    test = json.loads((a / "metrics/test.json").read_text())
    tags = version.tags
    assert tags["dvc_exp_name"] == name and tags["data_digest"] == lock_md5(a) and tags["data"] == "data/synthetic"
    assert tags["git_commit"] == run(["git", "rev-parse", "HEAD"], a).stdout.strip() == tags["dvc_exp_baseline_rev"]
    assert tags["test_accuracy_95ci"] == f"{test['accuracy']} [{test['accuracy_ci_low']}, {test['accuracy_ci_high']}]"
    assert tags["test_pointing_game"] == str(test["pointing_game"])
    assert f"dvc exp pull origin {name} && dvc exp apply {name}" in version.description
    assert "dvc pull && dvc exp run -S model=shallow" in version.description


@pytest.mark.parametrize("remote, message", [
    ("git", "catdog: error: git remote nowhere cannot be reached ("),
    ("unreachable", "catdog: error: DVC remote storage (http://127.0.0.1:{port}/dvc) cannot be reached ("),
    ("unwritable", "catdog: error: DVC remote storage ({file}/dvc) cannot be written (NotADirectoryError: "),
    ("none", "catdog: error: DVC has no default remote to push the trials' outputs to: add one with `dvc remote "
             "add -d storage s3://BUCKET/dvc`"),
])
def test_tune_refuses_a_remote_it_cannot_push_to_before_any_trial(team, tmp_path, remote, message):
    a, port, file = team["a"], free_port(), tmp_path / "a-file"
    file.write_text("not a folder")
    config = (a / ".dvc/config").read_text()
    try:
        if remote == "unreachable":
            run(["dvc", "remote", "modify", "storage", "url", f"http://127.0.0.1:{port}/dvc"], a)
        elif remote == "unwritable":
            run(["dvc", "remote", "modify", "storage", "url", str(file / "dvc")], a)
        elif remote == "none":
            run(["dvc", "remote", "default", "--unset"], a)
        result = run([sys.executable, "-m", "catdog", "tune", "--model", "logistic", "--trials", "1",
                      "--push", "nowhere" if remote == "git" else "origin"], a, check=False)
    finally:
        (a / ".dvc/config").write_text(config)
    assert result.returncode == 1, result.stdout + result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(message.format(port=port, file=file)), last
    assert not (a / "optuna.db").exists()  # no study was opened, no trial ran
