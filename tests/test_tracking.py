"""MLflow runs through catdog.tracking.runs' helper process: what is logged, how a run ends, and what a user sees
when the store fails. Each case runs as a stage would, in a process of its own in an empty folder."""

import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from conftest import pipeline_env

SRC = Path(__file__).resolve().parents[1] / "src"


def stage_script(tmp_path, body: str, env=None, wait=True):
    """Run `body` (with catdog.tracking.runs imported as `runs`) as a stage would, in tmp_path."""
    code = (f"import sys; sys.path.insert(0, {str(SRC)!r})\n"
            "from catdog import entrypoint\nfrom catdog.tracking import runs\n" + textwrap.dedent(body))
    process = subprocess.Popen([sys.executable, "-c", code], cwd=tmp_path, env={**pipeline_env(), **(env or {})},
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if not wait:
        return process
    stdout, stderr = process.communicate(timeout=120)
    return process.returncode, stdout, stderr


def the_run(tmp_path):
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    run_id = json.loads((tmp_path / "models/run.json").read_text())["run_id"]
    return client, client.get_run(run_id)


def test_a_training_run_and_the_stages_that_reopen_it(tmp_path):
    (tmp_path / "history.csv").write_text("epoch,loss\n1,0.5\n")
    code, _, stderr = stage_script(tmp_path, """
        runs.start_helper()
        with runs.training_run("logistic", {"lr": 0.01, "epochs": 2}, sweep="grid1") as run:
            for epoch in (1, 2):
                run.log_metrics({"val_accuracy": 0.5 + epoch / 10}, step=epoch)
            run.log_artifact("history.csv")
            run.log_dict({"n_train": 3}, "data_report.json")
        with runs.resumed_run() as run:
            run.log_metrics({"test_accuracy": 0.75})
    """)
    assert code == 0, stderr
    client, run = the_run(tmp_path)
    assert run.info.status == "FINISHED" and run.info.run_name == "logistic"
    assert run.data.params == {"lr": "0.01", "epochs": "2"}
    assert run.data.tags["model"] == "logistic" and run.data.tags["sweep"] == "grid1"
    history = client.get_metric_history(run.info.run_id, "val_accuracy")
    assert [(m.step, m.value) for m in history] == [(1, 0.6), (2, 0.7)]
    assert run.data.metrics["test_accuracy"] == 0.75
    assert {a.path for a in client.list_artifacts(run.info.run_id)} == {"history.csv", "data_report.json"}
    experiment = client.get_experiment(run.info.experiment_id)
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"


@pytest.mark.parametrize("error, status", [("KeyboardInterrupt", "KILLED"), ("ValueError('bug')", "FAILED")])
def test_a_stage_that_stops_ends_its_run_as_killed_or_failed(tmp_path, error, status):
    code, _, stderr = stage_script(tmp_path, f"""
        with runs.training_run("deep", {{}}) as run:
            run.log_metrics({{"val_accuracy": 0.5}}, step=1)
            raise {error}
    """)
    assert code != 0
    assert the_run(tmp_path)[1].info.status == status


def test_a_signal_while_the_run_ends_waits_until_its_status_is_written(tmp_path):
    """torchrun stops a failing stage's siblings with SIGTERM: one that already failed and is waiting for its
    helper must still exit with its run ended, not leave it RUNNING for whoever reads it next."""
    code, _, stderr = stage_script(tmp_path, """
        import os, signal, threading
        def main():
            with runs.training_run("deep", {}) as run:
                for step in range(2000):  # a backlog: the helper writes these for seconds after the error
                    run.log_metrics({"val_accuracy": 0.5}, step=step)
                threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGTERM)).start()  # while close() waits
                raise ValueError("bug")
        entrypoint.run(main)
    """)
    assert code != 0 and "ValueError: bug" in stderr  # the stage's own error, not the signal
    client, run = the_run(tmp_path)  # read at once: the stage has exited
    assert run.info.status == "FAILED"
    # A failed run skips the calls still queued (the helper is told so): its status lands first.
    assert len(client.get_metric_history(run.info.run_id, "val_accuracy")) < 2000


def test_reopening_does_not_change_how_training_ended(tmp_path):
    code, _, stderr = stage_script(tmp_path, """
        with runs.training_run("deep", {}):
            pass
        with runs.resumed_run() as run:  # evaluate failing after it reopened the run
            raise ValueError("evaluate failed")
    """)
    assert "evaluate failed" in stderr
    assert the_run(tmp_path)[1].info.status == "FINISHED"


def test_a_stage_killed_outright_leaves_its_run_failed_not_running(tmp_path):
    process = stage_script(tmp_path, """
        import time
        with runs.training_run("deep", {}) as run:
            run.log_metrics({"val_accuracy": 0.5}, step=1)
            print("logging", flush=True)
            time.sleep(600)
    """, wait=False)
    assert process.stdout.readline() == "logging\n"
    deadline = time.time() + 60
    while not (tmp_path / "models/run.json").exists():  # the helper has opened the run
        assert time.time() < deadline, process.stderr.read()
        time.sleep(0.2)
    process.kill()  # SIGKILL: no clean-up in the stage at all
    process.wait()
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    run_id = json.loads((tmp_path / "models/run.json").read_text())["run_id"]
    while client.get_run(run_id).info.status == "RUNNING":  # the helper reads the end of its pipe
        assert time.time() < deadline
        time.sleep(0.2)
    assert client.get_run(run_id).info.status == "FAILED"


def test_a_store_that_fails_under_an_open_run_stops_the_stage_in_one_line(tmp_path):
    code, stdout, stderr = stage_script(tmp_path, """
        import time
        from pathlib import Path
        def main():
            with runs.training_run("deep", {}) as run:
                Path("mlflow.db").write_bytes(b"not SQLite " * 100000)  # the store breaks once the run is open
                for epoch in range(1, 600):  # one-second epochs: the helper fails during the first ones
                    time.sleep(1)
                    run.log_metrics({"val_accuracy": 0.5}, step=epoch)
            print("trained")
        entrypoint.run(main)
    """)
    assert code == 1 and "trained" not in stdout
    lines = [line for line in stderr.splitlines() if line.startswith("catdog: ")]
    assert len(lines) == 1 and lines[0].startswith("catdog: error: "), stderr  # the helper's error, said once


def test_reopening_a_run_the_store_lacks_warns_and_goes_on(tmp_path):
    (tmp_path / "models").mkdir()
    (tmp_path / "models/run.json").write_text(json.dumps({"run_id": "0" * 32, "experiment_id": "0"}))
    code, stdout, stderr = stage_script(tmp_path, """
        with runs.resumed_run() as run:
            run.log_metrics({"test_accuracy": 0.5})
        print("evaluated")
    """)
    assert code == 0 and "evaluated" in stdout, stderr
    assert f"catdog: warning: MLflow run {'0' * 32} is not in sqlite:///" in stderr


def test_reopening_before_training_names_the_fix(tmp_path):
    code, _, stderr = stage_script(tmp_path, """
        entrypoint.run(lambda: runs.resumed_run())
    """)
    assert code == 1
    assert stderr.strip() == "catdog: error: models/run.json is missing: train a model first (`dvc repro train`)"


def test_only_rank_0_starts_a_helper(tmp_path):
    code, stdout, stderr = stage_script(tmp_path, """
        runs.start_helper()
        print(runs._started is None)
    """, env={"RANK": "1"})
    assert (code, stdout) == (0, "True\n"), stderr
    assert not (tmp_path / "mlflow.db").exists()


def test_no_helper_is_left_behind(tmp_path):
    """A helper started for a stage that then fails before opening its run exits with the stage."""
    code, stdout, _ = stage_script(tmp_path, """
        runs.start_helper()
        print(runs._started.pid, flush=True)
        raise SystemExit(3)
    """)
    assert code == 3
    pid = int(stdout)
    deadline = time.time() + 30
    # started by the stage, or forked by the warm process (catdog.warm), whose command line a fork shows
    while Path(f"/proc/{pid}").exists() and any(
            name in Path(f"/proc/{pid}/cmdline").read_bytes() for name in (b"catdog.tracking.runs", b"catdog.warm")):
        assert time.time() < deadline, "the helper outlived its stage"
        time.sleep(0.2)
    assert not (tmp_path / "mlflow.db").exists()


def test_the_logged_model_names_the_positive_class_of_its_checkpoint(tmp_path):
    """The stage reads classes[1] from the checkpoint (the helper never imports torch) for the served column."""
    import mlflow
    import numpy as np
    import torch

    from test_export import save_checkpoint

    save_checkpoint(tmp_path / "model.pt", "fc")
    checkpoint = torch.load(tmp_path / "model.pt", weights_only=True)
    torch.save({**checkpoint, "classes": ["dog", "cat"]}, tmp_path / "model.pt")
    np.save(tmp_path / "example.npy", np.full((3, 16, 16), 128, dtype=np.uint8))
    code, _, stderr = stage_script(tmp_path, """
        import numpy as np
        runs.start_helper()
        with runs.training_run("shallow", {"lr": 0.01}) as run:
            run.log_model("model.pt", np.load("example.npy"))
    """)
    assert code == 0, stderr
    _, run = the_run(tmp_path)
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    info = mlflow.models.get_model_info(f"runs:/{run.info.run_id}/model")
    assert info.signature.outputs.input_names() == ["label", "p_cat"]
