"""A tracking store that cannot be used stops `train` before its first epoch, with one line naming the store, what
failed and the fix; the commands that read the store stop the same way; a server that goes away while a model
trains ends the stage with one line instead of hanging. Each check looks at what ran, not at the clock."""

import http.server
import re
import subprocess
import sys
import threading
import time

import pytest
from mlflow.tracking import MlflowClient

from conftest import copy_repo, free_port, pipeline_env, run, set_params, stop_process_group, wait_for_http
from test_tracking import stage_script

SERVER_DEADLINE = 240  # s for `mlflow server` to answer /health


class Refusing(http.server.BaseHTTPRequestHandler):
    """A server that answers every request with the status its server holds, in plain text, as a proxy or a load
    balancer in front of a tracking server does."""

    def _answer(self):
        self.send_response(self.server.status)
        self.send_header("Content-Type", "text/plain")
        self.end_headers()
        self.wfile.write(b"refused by the test")

    do_GET = do_POST = _answer

    def log_message(self, *args):
        pass


@pytest.fixture
def answering(request):
    """http://127.0.0.1:PORT of a server answering HTTP `request.param` to everything."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Refusing)
    server.status = request.param
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def not_a_database(tmp_path) -> str:
    (tmp_path / "garbage.db").write_text("not SQLite " * 100)
    return f"sqlite:///{tmp_path / 'garbage.db'}"


def under_a_file(tmp_path) -> str:
    """A store whose folder cannot be made: its parent is a file (root may write anywhere, so not chmod)."""
    (tmp_path / "a-file").write_text("")
    return f"sqlite:///{tmp_path / 'a-file' / 'mlflow.db'}"


BAD_STORES = {  # case: (the store's URI in tmp_path, what the error line must say)
    "connection refused": (lambda tmp_path: f"http://127.0.0.1:{free_port()}", r"\(connection refused\): start it"),
    "host unknown": (lambda tmp_path: "http://no-such-host.invalid:5000",
                     r"\(host unknown\): correct MLFLOW_TRACKING_URI"),
    "not a database": (not_a_database, r"is not an SQLite database: point MLFLOW_TRACKING_URI at an MLflow store"),
    "cannot be written": (under_a_file, r"cannot be written \(.*\): make its folder writable"),
}

TRAINING = """
    def main():
        with runs.training_run("deep", {"lr": 0.01}) as run:
            print("first epoch", flush=True)
            run.log_metrics({"val_accuracy": 0.5}, step=1)
    entrypoint.run(main)
"""


def assert_stopped_before_training(code, stdout, stderr, uri, fix):
    assert code == 1 and "first epoch" not in stdout, (stdout, stderr)
    lines = [line for line in stderr.splitlines() if line.startswith("catdog: ")]
    assert len(lines) == 1 and lines[0].startswith("catdog: error: "), stderr
    assert uri in lines[0] and "unset MLFLOW_TRACKING_URI" in lines[0], lines[0]
    assert re.search(fix, lines[0]), lines[0]


@pytest.mark.parametrize("case", sorted(BAD_STORES))
def test_an_unusable_store_stops_the_stage_before_its_first_epoch(tmp_path, case):
    make_uri, fix = BAD_STORES[case]
    uri = make_uri(tmp_path)
    code, stdout, stderr = stage_script(tmp_path, TRAINING, env={"MLFLOW_TRACKING_URI": uri})
    assert_stopped_before_training(code, stdout, stderr, uri, fix)
    assert not (tmp_path / "models" / "run.json").exists()


@pytest.mark.parametrize("answering, fix", [(401, r"HTTP 401, not authenticated\): set MLFLOW_TRACKING_USERNAME"),
                                            (403, r"HTTP 403, permission denied\)"),
                                            (503, r"fails \(HTTP 503, a server error\): see the server's log")],
                         indirect=["answering"])
def test_a_server_that_refuses_stops_the_stage_before_its_first_epoch(tmp_path, answering, fix):
    code, stdout, stderr = stage_script(tmp_path, TRAINING, env={"MLFLOW_TRACKING_URI": answering})
    assert_stopped_before_training(code, stdout, stderr, answering, fix)


@pytest.mark.slow
@pytest.mark.parametrize("answering", [503], indirect=True)
@pytest.mark.parametrize("command", [["ui", "--print-url"], ["predict", "--run-id", "0" * 32, "x.jpg"],
                                     ["predict", "--model", "models:/catdog@champion", "x.jpg"]])
def test_the_commands_stop_on_an_unusable_store_in_one_line(tmp_path, answering, command):
    for uri in (answering, f"http://127.0.0.1:{free_port()}", not_a_database(tmp_path)):
        result = subprocess.run([sys.executable, "-m", "catdog", *command], cwd=tmp_path, capture_output=True,
                                text=True, env={**pipeline_env(), "MLFLOW_TRACKING_URI": uri}, timeout=300)
        lines = [line for line in result.stderr.splitlines() if line.startswith("catdog: ")]
        assert result.returncode == 1 and len(lines) == 1, result.stderr
        assert lines[0].startswith("catdog: error: ") and uri in lines[0], lines[0]


# ------------------------------------------------------------------------------------ the real stage, a real server

@pytest.fixture(scope="module")
def prepared_repo(tmp_path_factory):
    repo = copy_repo(tmp_path_factory.mktemp("store") / "repo")
    run(["dvc", "repro", "prepare"], repo)
    return repo


@pytest.mark.slow
def test_train_against_a_server_that_is_not_there_trains_nothing(prepared_repo):
    uri = f"http://127.0.0.1:{free_port()}"
    for output in ("plots/history.csv", "metrics/train.json"):  # committed, as DVC keeps them in git
        (prepared_repo / output).unlink()
    result = subprocess.run([sys.executable, "src/stages/train.py"], cwd=prepared_repo, capture_output=True,
                            text=True, env={**pipeline_env(), "MLFLOW_TRACKING_URI": uri}, timeout=300)
    assert result.returncode == 1, result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith(f"catdog: error: cannot reach the MLflow tracking "
                                                            f"server {uri} (connection refused)")
    for output in ("plots/history.csv", "models/model.pt", "models/run.json", "metrics/train.json"):
        assert not (prepared_repo / output).exists(), output  # no epoch ran, nothing was written


@pytest.mark.slow
def test_a_server_that_goes_away_while_training_ends_the_stage_in_one_line(prepared_repo, tmp_path):
    port = free_port()
    log = tmp_path / "server.log"
    command = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{tmp_path / 'mlflow.db'}",
               "--artifacts-destination", str(tmp_path / "artifacts"), "--host", "127.0.0.1", "--port", str(port),
               "--workers", "1"]
    with open(log, "wb") as output:
        server = subprocess.Popen(command, cwd=tmp_path, env=pipeline_env(), stdout=output,
                                  stderr=subprocess.STDOUT, start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    stage = None
    try:
        wait_for_http(server, f"{uri}/health", log, SERVER_DEADLINE)
        set_params(prepared_repo, model="deep", **{"models.deep.epochs": 100000})
        # MLflow's retries made short, so that the test need not wait out its default minutes of them
        env = {**pipeline_env(), "MLFLOW_TRACKING_URI": uri, "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
               "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}
        with open(tmp_path / "stage.txt", "w") as stderr:
            stage = subprocess.Popen([sys.executable, "src/stages/train.py"], cwd=prepared_repo, env=env,
                                     stdout=subprocess.DEVNULL, stderr=stderr)
        client = MlflowClient(uri)
        deadline = time.monotonic() + 120
        while True:  # until the run has logged an epoch: the server answered, the model trains
            runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
            if runs and "val_accuracy" in runs[0].data.metrics:
                break
            assert time.monotonic() < deadline and stage.poll() is None, (tmp_path / "stage.txt").read_text()
            time.sleep(0.5)
        stop_process_group(server)
        code = stage.wait(timeout=600)  # bounded: MLflow's (shortened) retries, then the helper's one line
        lines = [line for line in (tmp_path / "stage.txt").read_text().splitlines() if line.startswith("catdog: ")]
        assert code == 1 and len(lines) == 1 and lines[0].startswith("catdog: error: "), lines
        assert uri in lines[0] or "MLflow" in lines[0], lines[0]
    finally:
        if stage is not None and stage.poll() is None:
            stage.kill()
        stop_process_group(server)
