"""Determinism, interruption and atomic outputs: what lets a user trust a run and kill one safely."""

import os
import signal
import subprocess
import sys
import time

import pytest
from mlflow.tracking import MlflowClient

from catdog.files import atomic_dir, atomic_path, write_npz
from conftest import copy_repo, pipeline_env, run, set_params


@pytest.fixture(scope="module")
def prepared_repo(tmp_path_factory):
    repo = copy_repo(tmp_path_factory.mktemp("robust") / "repo")
    run(["dvc", "repro", "prepare"], repo)
    return repo


def stage(repo, name, check=True):
    return run([sys.executable, f"src/stages/{name}.py"], repo, check=check)


@pytest.mark.slow
@pytest.mark.parametrize("model", ["deep", "cnn"])
def test_same_params_give_byte_identical_metrics_and_history(prepared_repo, model):
    set_params(prepared_repo, model=model, **{f"models.{model}.epochs": 3})
    outputs = []
    for _ in range(2):
        stage(prepared_repo, "train")
        stage(prepared_repo, "evaluate")
        files = ("metrics/test.json", "plots/history.csv", "plots/predictions.csv", "models/model.pt",
                 "plots/drawn.npz")
        outputs.append([(prepared_repo / f).read_bytes() for f in files])
    assert outputs[0] == outputs[1]


def running_run(repo, timeout=60):
    """The MLflow run in progress, once it has logged a first epoch."""
    client = MlflowClient(f"sqlite:///{repo / 'mlflow.db'}")
    deadline = time.time() + timeout
    while time.time() < deadline:
        if (repo / "mlflow.db").exists():
            experiment = client.get_experiment_by_name("catdog")
            runs = client.search_runs([experiment.experiment_id], "attributes.status = 'RUNNING'") if experiment else []
            if runs and "val_accuracy" in client.get_run(runs[0].info.run_id).data.metrics:
                return client, runs[0].info.run_id
        time.sleep(0.2)
    raise AssertionError("no MLflow run started")


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_killed_training_leaves_no_output_and_marks_the_run_killed(prepared_repo, signum):
    set_params(prepared_repo, model="deep", **{"models.deep.epochs": 100000})
    for leftover in ("models/model.pt", "plots/history.csv", "metrics/train.json"):
        (prepared_repo / leftover).unlink(missing_ok=True)
    # stderr to a file, not an unread pipe: the progress bars fill a pipe's 64 KiB in seconds, and then the stage
    # and its MLflow helper (which shares stderr) block on their next write, the helper before logging an epoch.
    # SIGINT as in a terminal: a shell's background job (`cmd &` in a script, as CI may run) inherits it ignored,
    # and Python then leaves it so, as any program does.
    with open(prepared_repo / "stderr.txt", "w") as stderr:
        process = subprocess.Popen([sys.executable, "src/stages/train.py"], cwd=prepared_repo, env=pipeline_env(),
                                   stdout=subprocess.DEVNULL, stderr=stderr,
                                   preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        client, run_id = running_run(prepared_repo)
        process.send_signal(signum)
        process.wait(timeout=60)
    finally:  # a failure here must not leave 100000 epochs running beside the rest of the suite
        if process.poll() is None:
            process.kill()
            process.wait()
    stderr = (prepared_repo / "stderr.txt").read_text()
    assert process.returncode == 130 and "interrupted" in stderr
    assert client.get_run(run_id).info.status == "KILLED"
    for path in ("models/model.pt", "plots/history.csv", "metrics/train.json"):
        assert not (prepared_repo / path).exists()
    assert not [p for p in prepared_repo.rglob("*.tmp") if ".dvc" not in p.parts]

    set_params(prepared_repo, **{"models.deep.epochs": 1})
    run(["dvc", "repro"], prepared_repo)  # the next run completes normally
    assert (prepared_repo / "metrics/test.json").exists()


@pytest.mark.slow
@pytest.mark.parametrize("key, value, message", [
    ("models.deep.lr", -1, "catdog: error: models.deep.lr=-1 must be a positive number"),
    ("model", "resnet9000", "catdog: error: model='resnet9000' is not an entry of `models`; valid: cnn, deep, "),
    ("train.device", "tpu", "catdog: error: train.device='tpu' is unknown; valid: auto, cpu, cuda, mps"),
    ("data.test_fraction", 0.95, "catdog: error: data.val_fraction=0.1 and data.test_fraction=0.95 must each"),
])
def test_a_bad_param_stops_dvc_repro_before_any_output_is_touched(prepared_repo, key, value, message):
    set_params(prepared_repo, model="deep", **{"models.deep.epochs": 1})
    run(["dvc", "repro"], prepared_repo)
    outputs = ("models/model.pt", "metrics/test.json", "plots/history.csv", "data/prepared/x64_train.npy")
    before = {f: (prepared_repo / f).read_bytes() for f in outputs}
    set_params(prepared_repo, **{key: value})
    result = run(["dvc", "repro"], prepared_repo, check=False)
    assert result.returncode != 0 and message in result.stderr
    assert "Running stage 'train'" not in result.stdout and "Running stage 'prepare'" not in result.stdout
    assert {f: (prepared_repo / f).read_bytes() for f in outputs} == before
    set_params(prepared_repo, **{key: {"models.deep.lr": 0.01, "model": "deep", "train.device": "auto",
                                      "data.test_fraction": 0.1}[key]})


def test_atomic_writes_leave_the_old_output_when_interrupted(tmp_path):
    target, folder = tmp_path / "model.pt", tmp_path / "prepared"
    target.write_text("old")
    folder.mkdir()
    (folder / "x.npy").write_text("old")
    for context, path in ((atomic_path, target), (atomic_dir, folder)):
        with pytest.raises(KeyboardInterrupt), context(path) as tmp:
            (tmp / "x.npy" if tmp.is_dir() else tmp).write_text("half")
            raise KeyboardInterrupt
    assert target.read_text() == "old" and (folder / "x.npy").read_text() == "old"
    assert sorted(os.listdir(tmp_path)) == ["model.pt", "prepared"]


def test_npz_outputs_are_the_same_bytes_whenever_written(tmp_path, monkeypatch):
    """evaluate's plots/drawn.npz: a zip stamped with the time of writing would change its DVC hash every run."""
    import numpy as np

    arrays = {"maps": np.arange(12, dtype=np.float32).reshape(3, 2, 2), "kind": np.array("template")}
    written = []
    for hour in (0, 5):
        monkeypatch.setattr(time, "time", lambda hour=hour: 1.8e9 + 3600 * hour)
        write_npz(tmp_path / "drawn.npz", arrays)
        written.append((tmp_path / "drawn.npz").read_bytes())
    assert written[0] == written[1]
    with np.load(tmp_path / "drawn.npz", allow_pickle=False) as loaded:
        assert str(loaded["kind"]) == "template" and np.array_equal(loaded["maps"], arrays["maps"])
