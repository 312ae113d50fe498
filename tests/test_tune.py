"""`catdog tune`, for real: Optuna studies whose trials are DVC experiments and MLflow child runs, in a copy of the
repository with tiny params and an easy dataset (bright cats, dark dogs: a trained logistic regression separates
them within a few epochs, while the seeded initial weights get every image wrong, so that a trial which does not
learn stays at 0)."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import optuna
import pytest
from mlflow.tracking import MlflowClient

from conftest import copy_repo, pipeline_env, run, set_params, write_image
from test_team_server import postgres, tracking_server  # noqa: F401  (fixtures: a PostgreSQL and MLflow server)

DEADLINE = 300  # s for a trial of the tiny study to show up, on a busy 2-core machine
SPACE = {"lr": {"low": 0.003, "high": 0.03, "log": True}, "batch_size": {"choices": [16, 32]}}


def catdog(repo, *args, check=True) -> subprocess.CompletedProcess:
    return run([sys.executable, "-m", "catdog", *args], repo, check=check)


@pytest.fixture(scope="module")
def base_repo(tmp_path_factory):
    """The tiny repository, its data prepared, pushed to a DVC remote (a local folder, a real DVC remote type) and
    committed: each test copies it."""
    repo = copy_repo(tmp_path_factory.mktemp("tune-base"))
    run(["dvc", "remote", "add", "-d", "storage", str(tmp_path_factory.mktemp("tune-dvc-storage"))], repo)
    for i in range(30):
        write_image(repo / "images" / "cat" / f"{i}.png", (205, 205, 205), size=(32, 32))
        write_image(repo / "images" / "dog" / f"{i}.png", (50, 50, 50), size=(32, 32))
    set_params(repo, **{"data.images": "images", "tune.space": {"logistic": SPACE}, "tune.startup_trials": 2,
                        "tune.warmup_epochs": 0})
    run(["dvc", "repro", "prepare"], repo)
    run(["dvc", "push"], repo)
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-q", "-m", "easy data"], repo)
    return repo


@pytest.fixture
def repo(base_repo, tmp_path):
    """A copy of the base repository, its git history and DVC cache included."""
    dest = tmp_path / "repo"
    shutil.copytree(base_repo, dest, symlinks=True)
    return dest


def trials(repo, study) -> list:
    return optuna.load_study(study_name=study, storage=f"sqlite:///{repo / 'optuna.db'}").get_trials()


def experiments(repo) -> list[str]:
    return run(["dvc", "exp", "ls", "--name-only"], repo).stdout.split()


def mlflow_runs(repo) -> list:
    client = MlflowClient(f"sqlite:///{repo / 'mlflow.db'}")
    return client.search_runs([e.experiment_id for e in client.search_experiments()])


@pytest.mark.parametrize("change, message", [
    ({}, "--model 'nope' is not an entry of `models`"),
    ({"tune.space": {"logistic": {"momentum": {"low": 0.1, "high": 0.9}}}}, "models.logistic has no param 'momentum'"),
    ({"tune.space": {"logistic": {"lr": {"low": 0.1, "high": 0.01}}}}, "is empty or inverted"),
    ({"tune.space": {"logistic": {"lr": {"low": 0.1, "high": 0.1}}}}, "is empty or inverted"),
    ({"tune.space": {"logistic": {"batch_size": {"choices": []}}}}, "choices must be a non-empty list"),
    ({"tune.space": {"logistic": {"epochs": {"low": 0, "high": 5}}}}, "epochs=0 must be a positive integer"),
])
def test_bad_search_space_is_one_line_and_creates_nothing(repo, change, message):
    set_params(repo, **change)
    result = catdog(repo, "tune", "--model", "nope" if not change else "logistic", "--trials", "2", check=False)
    assert result.returncode == 1 and message in result.stderr, result.stderr
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("catdog: error: ")
    assert not (repo / "optuna.db").exists() and not (repo / "mlflow.db").exists() and experiments(repo) == []


def test_unreachable_storage_and_a_study_of_another_model_are_one_line(repo):
    result = catdog(repo, "tune", "--model", "logistic", "--storage", "sqlite:///no/such/folder/o.db", check=False)
    assert result.returncode == 1 and "cannot be written" in result.stderr and "--storage" in result.stderr
    refused = catdog(repo, "tune", "--model", "logistic", "--storage",
                     "postgresql+psycopg://nobody@127.0.0.1:1/optuna", check=False)
    assert refused.returncode == 1 and "cannot be used" in refused.stderr, refused.stderr
    assert refused.stderr.count("\n") == 1
    study = optuna.create_study(study_name="taken", storage=f"sqlite:///{repo / 'optuna.db'}")
    study.set_user_attr("model", "cnn")
    other = catdog(repo, "tune", "--model", "logistic", "--study", "taken", check=False)
    assert other.returncode == 1 and "tunes cnn, not logistic" in other.stderr, other.stderr
    assert trials(repo, "taken") == [] and experiments(repo) == [] and not (repo / "mlflow.db").exists()


def test_two_workers_share_one_sqlite_study(repo):
    """Two `catdog tune` processes on one study: 4 trials in all, each number run once, each an experiment."""
    args = [sys.executable, "-m", "catdog", "tune", "--model", "logistic", "--trials", "4", "--study", "pair"]
    workers = [subprocess.Popen(args, cwd=repo, env=pipeline_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True) for _ in range(2)]
    outputs = [w.communicate(timeout=DEADLINE * 4) for w in workers]
    assert all(w.returncode == 0 for w in workers), outputs
    done = trials(repo, "pair")
    assert sorted(t.number for t in done) == [0, 1, 2, 3]
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in done)
    ran = [line.split()[1] for out, _ in outputs for line in out.splitlines() if line.endswith(" s")]
    assert sorted(ran) == ["0:", "1:", "2:", "3:"]  # each trial reported by one worker only
    assert sorted(experiments(repo)) == [f"pair-{n}" for n in range(4)]
    # Again: the study is done, nothing runs.
    again = catdog(repo, "tune", "--model", "logistic", "--trials", "4", "--study", "pair")
    assert "trial" not in again.stdout.split("\n", 1)[1].split("study pair:")[0]
    assert len(trials(repo, "pair")) == 4


@pytest.mark.slow
def test_small_study_end_to_end(repo):
    """3 trials: experiments with their params and metrics, nested MLflow runs, catdog best/leaderboard/register on
    the study, and a trial reproduced byte for byte by dvc exp apply and dvc repro."""
    result = catdog(repo, "tune", "--model", "logistic", "--trials", "3", "--study", "small")
    done = trials(repo, "small")
    assert [t.state.name for t in done] == ["COMPLETE"] * 3 and len({t.params["lr"] for t in done}) == 3
    assert sorted(experiments(repo)) == ["small-0", "small-1", "small-2"]
    shown = json.loads(run(["dvc", "exp", "show", "--json"], repo).stdout)
    revs = {r["name"]: r["data"] for c in shown for e in c.get("experiments") or [] for r in e["revs"]}
    for trial in done:
        data = revs[f"small-{trial.number}"]
        params = data["params"]["params.yaml"]["data"]
        assert params["models"]["logistic"]["lr"] == pytest.approx(trial.params["lr"])
        assert params["train"]["sweep"] == "small" and params["model"] == "logistic"
        assert data["metrics"]["metrics/train.json"]["data"]["best_val_accuracy"] == pytest.approx(trial.value)
    # MLflow: the study's run is the parent of the three training runs.
    runs = mlflow_runs(repo)
    parent = next(r for r in runs if r.info.run_name == "small")
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert sorted(r.data.tags["dvc_exp_name"] for r in children) == ["small-0", "small-1", "small-2"]
    assert parent.info.status == "FINISHED" and parent.data.params["model"] == "logistic"
    assert parent.data.params["n_trials"] == "3" and "space.lr" in parent.data.params
    client = MlflowClient(f"sqlite:///{repo / 'mlflow.db'}")
    best_so_far = [m.value for m in client.get_metric_history(parent.info.run_id, "best_value")]
    assert best_so_far == sorted(best_so_far) and best_so_far[-1] == max(t.value for t in done)
    assert {"optimization_history.png", "intermediate_values.png"} <= \
        {a.path for a in client.list_artifacts(parent.info.run_id)}
    # The sweep commands work on the study.
    best = catdog(repo, "best", "--sweep", "small").stdout
    winner = best.split("best of 3 by validation accuracy: ")[1].split()[0]
    assert winner in ("small-0", "small-1", "small-2") and "test accuracy" in best
    assert catdog(repo, "leaderboard", "--sweep", "small").stdout.count("| small-") == 3
    registered = catdog(repo, "register", "--sweep", "small").stdout
    assert f"DVC experiment {winner}" in registered
    assert "small-" in result.stdout and "catdog best --sweep small" in result.stdout
    # Reproduced: apply the winner, force a repro outside tune, same metrics (train_seconds aside).
    metrics = revs[winner]["metrics"]
    run(["dvc", "exp", "apply", winner], repo)
    run(["dvc", "repro", "-f", "train", "evaluate"], repo)
    train = json.loads((repo / "metrics" / "train.json").read_text())
    expected = metrics["metrics/train.json"]["data"]
    assert {k: v for k, v in train.items() if k != "train_seconds"} == \
        {k: v for k, v in expected.items() if k != "train_seconds"}
    assert json.loads((repo / "metrics" / "test.json").read_text()) == metrics["metrics/test.json"]["data"]


@pytest.mark.slow
def test_a_trial_made_bad_on_purpose_is_pruned(repo):
    """Two trials that learn, then one whose step is too small to move (lr 1e-12): pruned as soon as the others are
    ahead at an epoch, PRUNED in Optuna, KILLED and tagged in MLflow, no experiment, no record left in DVC's
    queue."""
    set_params(repo, **{"models.logistic.epochs": 4})
    study = optuna.create_study(study_name="bad", storage=f"sqlite:///{repo / 'optuna.db'}", direction="maximize")
    for lr in (0.01, 0.01, 1e-12):
        study.enqueue_trial({"lr": lr, "batch_size": 16}, skip_if_exists=False)
    result = catdog(repo, "tune", "--model", "logistic", "--trials", "3", "--study", "bad")
    done = trials(repo, "bad")
    assert [t.state.name for t in done] == ["COMPLETE", "COMPLETE", "PRUNED"], [t.intermediate_values for t in done]
    assert done[0].value == 1.0 and set(done[2].intermediate_values.values()) == {0.0}
    epoch = max(done[2].intermediate_values)
    assert epoch < 4 and f"trial 2: pruned at epoch {epoch}" in result.stdout
    assert sorted(experiments(repo)) == ["bad-0", "bad-1"]
    pruned = next(r for r in mlflow_runs(repo) if r.data.tags.get("optuna_trial") == "2")
    assert pruned.info.status == "KILLED" and pruned.data.tags["optuna_state"] == "PRUNED"
    assert "No experiment tasks" in run(["dvc", "queue", "status"], repo).stdout
    assert not list((repo / ".dvc" / "tmp" / "exps").glob("standalone/tmp*"))
    assert "bad-2" not in "".join(p.read_text() for p in (repo / ".dvc" / "tmp" / "exps").glob("run/*/*.run"))


@pytest.mark.slow
@pytest.mark.parametrize("how", [signal.SIGINT, signal.SIGKILL])
def test_resume_after_a_stop(repo, how):
    """Stopped during its second trial, then run again: the finished trial is not re-run, the interrupted one is
    FAIL and does not count, and the study reaches its 3 trials."""
    set_params(repo, **{"models.logistic.epochs": 300})  # a trial long enough to be stopped in
    args = [sys.executable, "-m", "catdog", "tune", "--model", "logistic", "--trials", "3", "--study", "stop"]
    worker = subprocess.Popen(args, cwd=repo, env=pipeline_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + DEADLINE
        while not [t for t in _safe_trials(repo, "stop") if t.number == 1 and t.intermediate_values]:
            assert worker.poll() is None and time.monotonic() < deadline, worker.stdout.read()
            time.sleep(0.5)
        os.killpg(worker.pid, how) if how == signal.SIGKILL else worker.send_signal(how)
        worker.wait(timeout=120)
    finally:
        if worker.poll() is None:
            os.killpg(worker.pid, signal.SIGKILL)
    if how == signal.SIGINT:
        assert worker.returncode == 130
        assert trials(repo, "stop")[1].state.name == "FAIL"
    set_params(repo, **{"models.logistic.epochs": 2})
    catdog(repo, "tune", "--model", "logistic", "--trials", "3", "--study", "stop")
    done = trials(repo, "stop")
    assert [t.state.name for t in done] == ["COMPLETE", "FAIL", "COMPLETE", "COMPLETE"]
    assert sorted(experiments(repo)) == ["stop-0", "stop-2", "stop-3"]


def _safe_trials(repo, study) -> list:
    try:
        return trials(repo, study)
    except KeyError:  # not created yet
        return []


@pytest.mark.slow
def test_two_workers_in_two_clones_share_a_postgresql_study(base_repo, tracking_server, postgres, tmp_path):  # noqa: F811
    """Two machines, as a cluster runs it: each worker in its own clone of a shared git remote, one Optuna study on
    a PostgreSQL server, the runs on a team's MLflow server. 4 trials in all, no number twice, every trial pushed,
    so that `catdog best --sweep` ranks them all after `dvc exp pull`."""
    import psycopg
    from sqlalchemy.engine import make_url

    url = make_url(postgres)
    with psycopg.connect(host=url.host, port=url.port, user=url.username, dbname=url.database,
                         autocommit=True) as connection:
        connection.execute("CREATE DATABASE optuna")
    storage = url.set(database="optuna").render_as_string(hide_password=False)
    remote = tmp_path / "remote.git"
    run(["git", "init", "-q", "--bare", str(remote)], tmp_path)
    run(["git", "push", "-q", str(remote), "HEAD:refs/heads/main"], base_repo)
    clones = []
    for name in ("a", "b"):
        clone = tmp_path / name
        run(["git", "clone", "-q", "-b", "main", str(remote), str(clone)], tmp_path)
        run(["dvc", "pull", "-q", "check", "generate", "prepare"], clone)  # from the DVC remote, as a machine would
        clones.append(clone)
    base, _ = tracking_server
    env = {**pipeline_env(), "MLFLOW_TRACKING_URI": base}
    args = [sys.executable, "-m", "catdog", "tune", "--model", "logistic", "--trials", "4", "--study", "team",
            "--storage", storage, "--push", "origin"]
    workers = [subprocess.Popen(args, cwd=clone, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True) for clone in clones]
    outputs = [w.communicate(timeout=DEADLINE * 4) for w in workers]
    assert all(w.returncode == 0 for w in workers), outputs
    study = optuna.load_study(study_name="team", storage=storage)
    assert sorted(t.number for t in study.trials) == [0, 1, 2, 3]
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    ran = [line.split()[1] for out, _ in outputs for line in out.splitlines() if line.endswith(" s")]
    assert sorted(ran) == ["0:", "1:", "2:", "3:"]
    run(["dvc", "exp", "pull", "origin", "-A"], clones[0])
    assert sorted(experiments(clones[0])) == [f"team-{n}" for n in range(4)]
    best = run([sys.executable, "-m", "catdog", "best", "--sweep", "team"], clones[0]).stdout
    assert "best of 4 by validation accuracy" in best
    # A trial that the other machine trained comes with its outputs, through the DVC remote: its model applies.
    by = [[line.split()[1].rstrip(":") for line in out.splitlines() if line.endswith(" s")] for out, _ in outputs]
    trainer = 1 if by[1] else 0  # one of the two trained some; the other clone pulls them
    other = clones[1 - trainer]
    run(["dvc", "exp", "pull", "origin", "-A"], other)
    run(["dvc", "exp", "apply", f"team-{by[trainer][0]}"], other)
    assert (other / "models/model.pt").is_file()
    client = MlflowClient(base)
    runs = client.search_runs([client.get_experiment_by_name("catdog").experiment_id])
    parent = [r for r in runs if r.info.run_name == "team"]
    assert len(parent) == 1 and parent[0].info.status == "FINISHED"
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent[0].info.run_id]
    assert sorted(r.data.tags["dvc_exp_name"] for r in children) == [f"team-{n}" for n in range(4)]
