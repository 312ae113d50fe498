"""Comparing experiments: the leaderboard's ranking and table, the choice of a grid search's best point, and an
end-to-end grid run as parallel queued DVC experiments, every one of them tracked in MLflow."""

import subprocess
import sys

import pytest
from mlflow.tracking import MlflowClient
from PIL import Image

from catdog.analysis import figures
from catdog.analysis.experiments import Experiment
from catdog.analysis.leaderboard import best, fold, ranked, swept_keys, table
from conftest import copy_repo, pipeline_env, run

BASE = {"model": "logistic", "models.logistic.lr": 0.01, "models.logistic.epochs": 10, "train.sweep": "",
        "models.mlp.lr": 0.001, "data.train_fraction": 1.0}


def experiment(name, test_accuracy, val_accuracy, val_loss=0.5, **params):
    return Experiment(name, name * 4, {**BASE, **params}, BASE, {"accuracy": test_accuracy, "f1": 0.5},
                      {"best_val_accuracy": val_accuracy, "best_val_loss": val_loss, "best_epoch": 3,
                       "train_seconds": 12.3})


def test_settings_name_what_an_experiment_changed_without_the_model_prefix():
    assert experiment("a", 0.5, 0.5).settings() == {}
    changed = experiment("b", 0.5, 0.5, **{"models.logistic.lr": 0.001, "data.train_fraction": 0.1})
    assert changed.settings() == {"lr": 0.001, "data.train_fraction": 0.1}
    # Another model's entry is not this experiment's business, even where params.yaml differs.
    assert experiment("c", 0.5, 0.5, model="mlp", **{"models.logistic.lr": 1.0}).settings() == {}


def test_leaderboard_ranks_by_test_accuracy_then_validation_then_name():
    experiments = [experiment("low", 0.55, 0.9), experiment("tie-b", 0.8, 0.7), experiment("top", 0.95, 0.6),
                   experiment("tie-a", 0.8, 0.7), experiment("tie-val", 0.8, 0.75)]
    assert [r.name for r in ranked(fold(experiments))] == ["top", "tie-val", "tie-a", "tie-b", "low"]
    lines = table(ranked(fold(experiments))).splitlines()[:2 + len(experiments)]
    assert all(line.count("|") == 14 for line in lines)
    assert lines[2].startswith("| 1 | top | `logistic` | defaults | **0.950** | top |") and "0.600 (3)" in lines[2]
    assert lines[2].endswith("| – | – | 12 s |")  # measured without animal boxes: no localisation figures
    located = experiment("boxes", 0.5, 0.5)
    located.test.update(pointing_game=0.25, attribution_in_box=0.31, box_area_share=0.17)
    assert table(fold([located])).splitlines()[2].endswith("| 0.250 | 0.310 (0.170) | 12 s |")


def test_best_grid_point_is_chosen_on_validation_never_on_test():
    points = [experiment("a", 0.99, 0.70, 0.40, **{"models.logistic.lr": 0.001}),
              experiment("b", 0.50, 0.80, 0.60, **{"models.logistic.epochs": 5}),
              experiment("c", 0.60, 0.80, 0.55, **{"models.logistic.lr": 0.001, "models.logistic.epochs": 5})]
    assert best(points).name == "c"  # a has the best test accuracy: it must not matter; c wins b on val loss
    assert swept_keys(points) == ["models.logistic.epochs", "models.logistic.lr"]
    assert best(points[:1] + [experiment("a2", 0.1, 0.70, 0.40)]).name == "a"  # full tie: by name


def test_validation_curves_png_overlays_runs_of_any_length(tmp_path):
    short = [{"epoch": e, "val_accuracy": 0.5 + e / 40} for e in range(1, 11)]
    long = [{"epoch": e, "val_accuracy": 0.6} for e in range(1, 2001)]
    path = tmp_path / "curves.png"
    figures.validation_curves([("cnn: 0.958", short), ("numpy_deep: 0.529", long), ("no history", [])], "t", path)
    with Image.open(path) as png:
        assert png.format == "PNG" and png.width > 800 and png.height > 400


@pytest.mark.slow
def test_parallel_grid_search_leaderboard_and_best(tmp_path):
    repo = copy_repo(tmp_path / "repo")
    # A grid of two points (two values of one key) and one experiment outside it: three queued experiments, two at a
    # time, prove the queue, the shared store, the choice and the ranking (five took 207 s in CI, three about 60%).
    run(["dvc", "exp", "run", "--queue", "-S", "model=logistic", "-S", "models.logistic.lr=0.01,0.0001",
         "-S", "train.sweep=grid"], repo)
    run(["dvc", "exp", "run", "--queue", "-n", "plain-mlp", "-S", "model=mlp"], repo)
    run(["dvc", "exp", "run", "--run-all", "-j", "2"], repo)  # two at once, on one SQLite store

    client = MlflowClient(f"sqlite:///{repo / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("catdog").experiment_id])
    assert len(runs) == 3 and {r.info.status for r in runs} == {"FINISHED"}
    assert all("test_accuracy" in r.data.metrics and r.info.run_name == r.data.tags["dvc_exp_name"] for r in runs)
    grid = {r.info.run_name: r for r in runs if r.data.tags.get("sweep") == "grid"}
    assert len(grid) == 2 and "plain-mlp" not in grid

    python = [sys.executable, "-m", "catdog"]
    chosen = run(python + ["best", "--sweep", "grid"], repo).stdout
    by_validation = max(grid.values(), key=lambda r: r.data.metrics["best_val_accuracy"])
    winner = chosen.split("best of 2 by validation accuracy: ")[1].split(" ")[0]
    assert grid[winner].data.metrics["best_val_accuracy"] == by_validation.data.metrics["best_val_accuracy"]
    assert f"test accuracy {grid[winner].data.metrics['test_accuracy']:.4f}" in chosen

    result = run(python + ["leaderboard"], repo)
    rows = [line for line in (repo / "leaderboard/leaderboard.md").read_text().splitlines() if line.startswith("| ")]
    assert len(rows) == 1 + 3
    names = [row.split(" | ")[1] for row in rows[1:]]
    accuracy = {r.info.run_name: r.data.metrics["test_accuracy"] for r in runs}
    assert sorted(names) == sorted(accuracy) and [accuracy[n] for n in names] == sorted(accuracy.values(),
                                                                                       reverse=True)
    assert (repo / "leaderboard/leaderboard.png").read_bytes()[:4] == b"\x89PNG" and "wrote" in result.stdout

    missing = subprocess.run(python + ["best", "--sweep", "nope"], cwd=repo, env=pipeline_env(),
                             capture_output=True, text=True)
    assert missing.returncode == 1 and missing.stderr.startswith("catdog: error: no finished DVC experiment")
