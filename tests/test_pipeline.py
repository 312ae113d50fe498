"""End to end: `dvc repro`, `dvc exp run -S model=...` and a queued experiment, in a throw-away copy of the repo."""

import json

import pytest
from mlflow.tracking import MlflowClient

from conftest import copy_repo, run

pytestmark = pytest.mark.slow


def runs_by_model(repo):
    client = MlflowClient(f"sqlite:///{repo / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("catdog")
    return client, {r.data.tags["model"]: r for r in client.search_runs([experiment.experiment_id])}


def test_repro_then_experiments_are_all_tracked(tmp_path, monkeypatch):
    repo = copy_repo(tmp_path / "repo")
    result = run(["dvc", "repro"], repo)
    for stage in ("generate", "prepare", "train", "evaluate", "plot"):
        assert f"Running stage '{stage}'" in result.stdout

    metrics = json.loads((repo / "metrics/test.json").read_text())
    assert {"accuracy", "precision", "recall", "f1", "roc_auc", "loss", "n_test"} <= set(metrics)
    assert metrics["n_test"] == 4 and 0 <= metrics["accuracy"] <= 1
    assert all(0 <= metrics[k] <= 1 for k in ("brier", "ece", "near_threshold"))
    # generate's animal boxes reach evaluate through prepare: where the model looks is scored
    assert metrics["n_boxes"] == 4 and all(0 <= metrics[k] <= 1 for k in ("pointing_game", "attribution_in_box"))
    assert 0 < metrics["box_area_share"] < 1
    history = (repo / "plots/history.csv").read_text().splitlines()
    assert history[0] == "epoch,train_loss,train_accuracy,val_loss,val_accuracy" and len(history) == 3
    pngs = {"plots/training_curves.png", "plots/confusion_matrix.png", "plots/misclassified.png",
            "plots/probability_histogram.png", "plots/calibration.png", "plots/learned.png", "plots/heatmaps.png"}
    for png in pngs:
        assert (repo / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    calibration = (repo / "plots/calibration.csv").read_text().splitlines()
    assert calibration[0] == "bin_low,bin_high,mean_predicted_probability,fraction_of_positives,count"
    assert sum(int(line.rsplit(",", 1)[1]) for line in calibration[1:]) == 4
    shown = run(["dvc", "plots", "show", "--json"], repo).stdout
    assert "Confusion matrix" in shown and "Calibration (test)" in shown
    assert run(["dvc", "status", "--json"], repo).stdout.strip() == "{}"

    client, runs = runs_by_model(repo)
    logistic = runs["logistic"]
    assert logistic.info.status == "FINISHED"
    assert logistic.data.params["lr"] == "0.01" and logistic.data.params["optimizer"] == "sgd"
    assert [m.step for m in client.get_metric_history(logistic.info.run_id, "val_accuracy")] == [1, 2]
    assert logistic.data.metrics["test_accuracy"] == metrics["accuracy"]
    assert logistic.data.metrics["test_ece"] == metrics["ece"]
    head = run(["git", "rev-parse", "HEAD"], repo).stdout.strip()
    assert logistic.data.tags["git_commit"] == head
    artifacts = {a.path for a in client.list_artifacts(logistic.info.run_id, "plots")}
    assert artifacts == pngs
    assert logistic.outputs.model_outputs  # the MLflow Model `model`, which holds the checkpoint
    from catdog.tracking.store import download_checkpoint
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{repo / 'mlflow.db'}")
    checkpoint = download_checkpoint(f"runs:/{logistic.info.run_id}/model", str(tmp_path / "model"))
    assert checkpoint.read_bytes() == (repo / "models/model.pt").read_bytes()

    # Switching models trains again without preparing the data again.
    result = run(["dvc", "exp", "run", "-n", "try-multitask", "-S", "model=multitask"], repo)
    assert "Running stage 'train'" in result.stdout and "Running stage 'prepare'" not in result.stdout
    assert 0 <= json.loads((repo / "metrics/test.json").read_text())["brightness_mae"] < 1
    assert "train_brightness_loss" in (repo / "plots/history.csv").read_text().splitlines()[0]
    client, runs = runs_by_model(repo)
    multitask = runs["multitask"]
    assert multitask.data.tags["dvc_exp_name"] == "try-multitask" and multitask.info.run_name == "try-multitask"
    assert {"train_class_loss", "val_brightness_loss", "test_brightness_mae"} <= set(multitask.data.metrics)
    assert {"test_pointing_game", "test_attribution_in_box", "test_box_area_share"} <= set(multitask.data.metrics)

    # Queued experiments run in .dvc/tmp/exps/..., yet their runs land in the repository's store.
    run(["dvc", "exp", "run", "--queue", "-n", "queued-numpy", "-S", "model=numpy_deep"], repo)
    run(["dvc", "exp", "run", "--run-all"], repo)
    client, runs = runs_by_model(repo)
    numpy_run = runs["numpy_deep"]
    assert numpy_run.data.tags["dvc_exp_name"] == "queued-numpy" and "test_accuracy" in numpy_run.data.metrics
    assert [m.step for m in client.get_metric_history(numpy_run.info.run_id, "train_loss")] == [1, 2]
    assert not list((repo / ".dvc").rglob("mlflow.db"))
