"""Repeats over training seeds: train.seed apart from the split's seed, `catdog repeat` queueing one experiment
per seed, and the leaderboard folding them into one row, on the same test set."""

import subprocess
import sys

import pytest

from catdog import CatdogError
from catdog.commands import repeat
from catdog.config import training_seed
from conftest import copy_repo, pipeline_env, run


def test_train_seed_follows_seed_unless_set():
    assert training_seed({"seed": 42, "train": {"seed": None}}) == 42  # the default: today's runs, byte for byte
    assert training_seed({"seed": 42, "train": {}}) == 42
    assert training_seed({"seed": 42, "train": {"seed": 3}}) == 3
    for bad in (-1, 1.5, "1", True, 2**32):
        with pytest.raises(CatdogError, match=r"^train\.seed=.* must be an integer from 0 to 2\*\*32 - 1, or null"):
            training_seed({"seed": 42, "train": {"seed": bad}})
    with pytest.raises(CatdogError, match=r"^seed=-1 must be an integer"):
        training_seed({"seed": -1, "train": {}})


@pytest.mark.parametrize("argv, message", [
    (["--seeds", "0", "-S", "model=cnn"], "--seeds and --jobs must be at least 1"),
    (["--seeds", "2", "-S", "model"], "-S 'model' is not KEY=VALUE"),
    (["--seeds", "2", "-S", "train.seed=3"], "-S train.seed=... is what catdog repeat sets"),
    (["--seeds", "2", "--name", "a b"], "--name 'a b' is not a valid experiment name"),
])
def test_bad_arguments_are_one_line(argv, message):
    with pytest.raises(CatdogError) as error:
        repeat.main(argv)
    assert str(error.value).startswith(message) and "\n" not in str(error.value)


def test_default_names_show_the_model_and_a_hash_of_the_other_params():
    assert repeat.default_name(["model=cnn"]) == "cnn"
    named = repeat.default_name(["model=cnn", "models.cnn.lr=0.01"])
    assert named.startswith("cnn-") and len(named) == 10
    assert named == repeat.default_name(["models.cnn.lr=0.01", "model=cnn"])  # the order of -S does not matter
    assert named != repeat.default_name(["model=cnn", "models.cnn.lr=0.1"])


@pytest.mark.slow
def test_repeats_keep_the_split_rerun_only_training_and_fold_into_one_row(tmp_path):
    repo = copy_repo(tmp_path / "repo")
    run(["dvc", "repro"], repo)
    before = (repo / "plots/predictions.csv").read_text().splitlines()
    catdog = [sys.executable, "-m", "catdog"]
    out = run([*catdog, "repeat", "--seeds", "2", "-S", "model=logistic"], repo).stdout
    assert "queued logistic-seed0" in out and "queued logistic-seed1" in out
    assert "logistic-seed* (2 seeds): test accuracy" in out and "n=2" in out

    # Each repeat re-ran train, evaluate and plot, never prepare: the same test images, in the same order.
    assert "Running stage 'train'" in out and "Running stage 'prepare'" not in out
    refs = dict(reversed(line.split()) for line in run(["git", "for-each-ref", "--format=%(objectname) %(refname)",
                                                        "refs/exps"], repo).stdout.splitlines())
    revs = [next(sha for ref, sha in refs.items() if ref.endswith(f"/{name}"))
            for name in ("logistic-seed0", "logistic-seed1")]
    models = set()
    for seed, rev in enumerate(revs):
        text = run(["git", "show", f"{rev}:plots/predictions.csv"], repo).stdout.splitlines()
        assert [row.split(",")[0] for row in text] == [row.split(",")[0] for row in before]
        params = run(["git", "show", f"{rev}:params.yaml"], repo).stdout
        assert f"seed: {seed}" in params and "seed: 42" in params  # train.seed, and the split's seed kept
        models.add(run(["git", "show", f"{rev}:dvc.lock"], repo).stdout.split("path: models/model.pt")[1][:60])
    assert len(models) == 2  # another initialisation and batch order: another model

    board = run([*catdog, "leaderboard", "--match", "^logistic-seed"], repo).stdout
    rows = [line for line in board.splitlines() if line.startswith("| 1 |")]
    assert len(rows) == 1 and "logistic-seed* (2 seeds)" in rows[0] and " ± " in rows[0]

    again = subprocess.run([*catdog, "repeat", "--seeds", "1", "-S", "model=logistic"], cwd=repo,
                           env=pipeline_env(), capture_output=True, text=True)
    assert again.returncode == 1 and again.stderr.startswith("catdog: error: experiment logistic-seed0 exists")
