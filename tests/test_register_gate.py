"""`catdog register` weighs the candidate against the current champion before it moves the alias: a candidate
significantly worse on the test set (McNemar's exact test on the paired predictions) is refused with one line,
--force moves the alias anyway, and a difference that is not significant never blocks. A real SQLite MLflow store
and a real git repository with committed predictions; the registration itself is recorded, not run."""

import subprocess

import pytest
from mlflow.tracking import MlflowClient

from catdog import CatdogError
from catdog.analysis.experiments import Experiment
from catdog.commands import register as register_command
from catdog.tracking import model_registry

N = 60


def predictions_csv(n_right: int) -> str:
    rows = ["file,actual,predicted,probability"]
    for i in range(N):
        actual = "dog" if i % 2 else "cat"
        predicted = actual if i < n_right else {"dog": "cat", "cat": "dog"}[actual]
        rows.append(f"img{i:03}.jpg,{actual},{predicted},{0.9 if predicted == 'dog' else 0.1}")
    return "\n".join(rows) + "\n"


@pytest.fixture
def repo(tmp_path, monkeypatch):
    """A git repository whose commits hold a candidate's predictions, and a champion registered in its store
    whose run logged 57 of 60 test images right."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DVC_ROOT", raising=False)
    subprocess.run(["git", "init", "-q"], check=True)
    (tmp_path / "params.yaml").write_text("model: logistic\n")
    (tmp_path / "plots").mkdir()
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.create_experiment("catdog", artifact_location=(tmp_path / "mlartifacts").as_uri())
    run = client.create_run(experiment, tags={"dvc_exp_name": "champ"})
    (tmp_path / "predictions.csv").write_text(predictions_csv(57))  # named as evaluate logs it
    client.log_artifact(run.info.run_id, str(tmp_path / "predictions.csv"))
    client.set_terminated(run.info.run_id)
    client.create_registered_model("catdog")
    version = client.create_model_version("catdog", f"runs:/{run.info.run_id}/model", run.info.run_id,
                                          tags={"dvc_exp_name": "champ"})
    client.set_registered_model_alias("catdog", "champion", version.version)
    registered = []
    monkeypatch.setattr(register_command, "register",
                        lambda e, name, alias: registered.append(e.name) or (run, version))
    return {"path": tmp_path, "client": client, "registered": registered}


def candidate(repo, monkeypatch, name: str, n_right: int) -> Experiment:
    """A finished experiment whose commit holds n_right of 60 right; the only one `catdog register` finds."""
    (repo["path"] / "plots" / "predictions.csv").write_text(predictions_csv(n_right))
    subprocess.run(["git", "add", "-A"], check=True)
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", name], check=True)
    rev = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    found = Experiment(name, rev, {"model": "logistic"}, {"model": "logistic"}, {"accuracy": n_right / N},
                       {"best_val_accuracy": 0.9, "best_val_loss": 0.3}, rev)
    monkeypatch.setattr(register_command, "finished", lambda all_commits: ([found], []))
    return found


def test_a_significantly_worse_candidate_is_refused_and_force_moves_the_alias(repo, monkeypatch, capsys):
    candidate(repo, monkeypatch, "worse", 47)  # 10 images only the champion gets right, none the other way
    with pytest.raises(CatdogError) as refused:
        register_command.main([])
    message = str(refused.value)
    assert "\n" not in message and message.startswith("not registered: worse is significantly worse than "
                                                       "catdog@champion on the test set (McNemar p = 0.00195)")
    assert "--force" in message and repo["registered"] == []
    out = capsys.readouterr().out
    assert "accuracy 0.950" in out and "accuracy 0.783" in out and "0 newly right, 10 newly wrong" in out
    register_command.main(["--force"])
    assert repo["registered"] == ["worse"]


def test_a_difference_that_is_not_significant_never_blocks(repo, monkeypatch, capsys):
    candidate(repo, monkeypatch, "slightly-worse", 53)  # 4 newly wrong: p = 0.125
    register_command.main([])
    assert repo["registered"] == ["slightly-worse"]
    assert "no significant difference" in capsys.readouterr().out


def test_without_a_champion_there_is_nothing_to_compare(repo, monkeypatch, capsys):
    repo["client"].delete_registered_model_alias("catdog", "champion")
    found = candidate(repo, monkeypatch, "first", 10)
    comparison, why = model_registry.against_champion(found)
    assert comparison is None and why == "catdog@champion does not exist yet: nothing to compare with"
    register_command.main([])
    assert repo["registered"] == ["first"]
