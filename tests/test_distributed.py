"""Several processes (torchrun, gloo on the CPU) train the model that one process trains; only rank 0 writes."""

import contextlib
import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from mlflow.tracking import MlflowClient

from catdog import CatdogError
from catdog.config import processes
from catdog.data.images import discover
from catdog.data.prepared import prepare
from catdog.training import distributed
from conftest import ROOT, pipeline_env, run, write_image

# 48 images: 5 test, 12 validation and 31 training images in batches of 5, so that two processes split every
# batch unevenly (3 and 2 images, weighted 6/5 and 4/5) and the last batch holds one image, which leaves the second
# process nothing to train on (distributed.shard's zero-weight case).
MODEL = {"arch": "fc", "hidden": [8], "input_size": 16, "optimizer": "adam", "lr": 0.001, "batch_size": 5,
         "epochs": 3}


def params(**train) -> dict:
    return {"seed": 1, "model": "small", "models": {"small": MODEL, "numpy_small": {**MODEL, "arch": "numpy"}},
            "data": {"images": "images", "sizes": [16], "train_fraction": 1.0},
            "train": {"device": "cpu", "processes": 1, "sweep": "", **train}}


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """A working folder holding data/prepared: grey cats and grey dogs of overlapping brightness, so that the
    model is still learning after 3 epochs."""
    root = tmp_path_factory.mktemp("distributed")
    for i in range(24):
        write_image(root / "images" / "cat" / f"{i}.png", (100 + 3 * i % 40,) * 3, size=(20, 20))
        write_image(root / "images" / "dog" / f"{i}.png", (120 + 7 * i % 40,) * 3, size=(20, 20))
    files, labels, classes = discover(root / "images")
    prepare(files, labels, classes, root / "images", sizes=[16], val_fraction=0.25, test_fraction=0.1, seed=1,
            out_dir=root / "data" / "prepared", workers=1)
    # The training run logs DVC's md5 of data/prepared from dvc.lock: recorded as a user records data prepared
    # outside DVC, with `dvc commit` of a stage that declares it.
    (root / "dvc.yaml").write_text("stages:\n  prepare:\n    cmd: 'false'\n    outs: [data/prepared]\n")
    run(["dvc", "init", "-q", "--no-scm"], root)
    run(["dvc", "commit", "-q", "-f", "prepare"], root)
    return root


def workdir(prepared, name, **train):
    folder = prepared / name
    shutil.copytree(prepared / "data", folder / "data")
    shutil.copy(prepared / "dvc.lock", folder / "dvc.lock")
    (folder / "params.yaml").write_text(yaml.safe_dump(params(**train)))
    return folder


TRAIN = [sys.executable, str(ROOT / "src" / "stages" / "train.py")]


def mlflow_runs(folder):
    client = MlflowClient(f"sqlite:///{folder / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("catdog")
    return client, client.search_runs([experiment.experiment_id]) if experiment else []


def history(folder) -> list[dict]:
    with open(folder / "plots" / "history.csv") as f:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]


@pytest.mark.slow
def test_two_processes_train_what_one_process_trains_and_only_rank_0_writes(prepared):
    one, two = workdir(prepared, "one"), workdir(prepared, "two", processes=2)
    for folder in (one, two):  # in `two`, train.processes: 2 makes train.py start itself again under torchrun
        result = subprocess.run(TRAIN, cwd=folder, env=pipeline_env(), capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr

    # Each step sums the same per-image gradients in another order (two parts, then DDP's average), so the runs
    # agree to float32 rounding: measured 6e-9 for the weights, 1.2e-7 (one float32 step) for the losses. 1e-5
    # leaves a hundredfold margin for other BLAS builds and thread counts, and is a hundred times below what the
    # processes' unweighted mean losses give (measured: 3e-3 for the weights, 2e-3 for the losses).
    expected, got = (torch.load(f / "models" / "model.pt", weights_only=True) for f in (one, two))
    assert expected["best_epoch"] == got["best_epoch"]
    for name, tensor in expected["state_dict"].items():
        torch.testing.assert_close(got["state_dict"][name], tensor, rtol=0, atol=1e-5)
    for expected_row, row in zip(history(one), history(two), strict=True):
        assert row == pytest.approx(expected_row, rel=0, abs=1e-5)

    assert result.stdout.count("small: best val accuracy") == 1  # rank 0's summary alone
    client, runs = mlflow_runs(two)
    assert len(runs) == 1 and runs[0].data.params["processes"] == "2" and runs[0].info.status == "FINISHED"
    assert len(client.get_metric_history(runs[0].info.run_id, "val_accuracy")) == MODEL["epochs"]
    assert json.loads((two / "models" / "run.json").read_text())["run_id"] == runs[0].info.run_id
    assert not list(two.rglob("*.tmp"))


@pytest.mark.slow
def test_a_process_that_dies_stops_the_others_instead_of_hanging(prepared):
    folder = workdir(prepared, "dies", processes=2)
    params_file = folder / "params.yaml"
    params_file.write_text(params_file.read_text().replace("epochs: 3", "epochs: 100000"))
    with open(folder / "stderr.txt", "w") as stderr:
        process = subprocess.Popen(TRAIN, cwd=folder, env=pipeline_env(), stdout=subprocess.DEVNULL, stderr=stderr,
                                   start_new_session=True)  # its own group: torchrun and its workers, to clean up
    try:
        stop_one_and_check_the_run_ends(folder, process)
    finally:  # a failure must not leave 100000 epochs running beside the rest of the suite
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def stop_one_and_check_the_run_ends(folder: Path, process: subprocess.Popen) -> None:
    deadline = time.time() + 120
    while not (folder / "models" / "run.json").exists():  # rank 0 has opened its MLflow run
        assert time.time() < deadline and process.poll() is None, (folder / "stderr.txt").read_text()
        time.sleep(0.5)
    client, runs = mlflow_runs(folder)
    while not client.get_metric_history(runs[0].info.run_id, "val_accuracy"):  # both have trained an epoch
        assert time.time() < deadline and process.poll() is None, (folder / "stderr.txt").read_text()
        time.sleep(0.5)
    workers = subprocess.run(["pgrep", "-P", str(process.pid)], capture_output=True, text=True,
                             check=True).stdout.split()  # torchrun's children
    assert len(workers) == 2
    rank_1 = next(int(pid) for pid in workers if b"RANK=1" in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"))
    os.kill(rank_1, signal.SIGKILL)  # not rank 0, which holds the MLflow run
    assert process.wait(timeout=90) != 0  # torchrun stops the survivor and fails
    # Read at once: rank 0 ends its run (its helper has written the status) before it exits, and torchrun after it.
    assert client.get_run(runs[0].info.run_id).info.status in ("FAILED", "KILLED")


def test_a_short_last_batch_leaves_a_process_an_image_of_weight_zero(monkeypatch):
    monkeypatch.setattr(distributed, "size", lambda: 3)
    parts = []
    for rank in range(3):
        monkeypatch.setattr(distributed, "rank", lambda rank=rank: rank)
        parts.append(distributed.shard(torch.tensor([7, 8])))
    assert [(index.tolist(), n) for index, n in parts] == [([7], 1), ([8], 1), ([7], 0)]


def test_the_numpy_network_refuses_several_processes():
    with pytest.raises(CatdogError, match=r"models.numpy_small \(arch numpy\) trains in NumPy, in one process"):
        processes(params(processes=2), "numpy_small", params()["models"]["numpy_small"])
    assert processes(params(), "numpy_small", params()["models"]["numpy_small"]) == 1
