"""A team's tracking server, for real: PostgreSQL (Debian's `postgresql`) as MLflow's backend store, `mlflow
server` serving the artifacts itself, two queued DVC experiments run at once against it, and the champion
registered and loaded through it. The commands are docs/scaling-out.md's ("A team's tracking server and storage")."""

import json
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import time
from glob import glob
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from conftest import TINY, copy_repo, free_port, pipeline_env, stop_process_group, wait_for_http, write_image

pytestmark = pytest.mark.slow  # PostgreSQL, a server and two experiments: about 2-3 minutes on 2 cores
DEADLINE = 180  # s for PostgreSQL or the MLflow server to answer


def _as_user(user: str | None) -> list[str]:
    return ["runuser", "-u", user, "--"] if user else []


@pytest.fixture(scope="module")
def postgres():
    """A PostgreSQL cluster of its own in a temporary folder, on 127.0.0.1 only; its URL for the database."""
    binaries = sorted(glob("/usr/lib/postgresql/*/bin/initdb"))
    if not binaries:
        pytest.skip("PostgreSQL is not installed: `apt-get install postgresql` (`.ci/run` does)")
    bin_dir = Path(binaries[-1]).parent
    # PostgreSQL refuses to run as root: as root, run it as Debian's `postgres` user, in a folder it owns.
    user = None
    if os.geteuid() == 0:
        try:
            user = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no `postgres` user to run PostgreSQL as")
    folder = Path(tempfile.mkdtemp(prefix="catdog-pg-"))
    if user:
        os.chown(folder, user.pw_uid, user.pw_gid)
    name = user.pw_name if user else None
    port = free_port()
    subprocess.run([*_as_user(name), str(bin_dir / "initdb"), "-D", str(folder / "data"), "-U", "mlflow",
                    "--auth=trust", "-E", "UTF8"], check=True, capture_output=True)
    server = subprocess.Popen([*_as_user(name), str(bin_dir / "postgres"), "-D", str(folder / "data"),
                               "-c", "listen_addresses=127.0.0.1", "-p", str(port), "-k", str(folder)],
                              stdout=subprocess.DEVNULL, stderr=open(folder / "postgres.log", "wb"),
                              start_new_session=True)
    try:
        deadline = time.monotonic() + DEADLINE
        while subprocess.run([str(bin_dir / "pg_isready"), "-h", "127.0.0.1", "-p", str(port)],
                             capture_output=True).returncode != 0:
            assert server.poll() is None and time.monotonic() < deadline, (folder / "postgres.log").read_text()
            time.sleep(0.5)
        subprocess.run([str(bin_dir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "mlflow", "mlflow"],
                       check=True, capture_output=True)
        yield f"postgresql+psycopg://mlflow@127.0.0.1:{port}/mlflow"
    finally:
        stop_process_group(server)
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def tracking_server(postgres, tmp_path_factory):
    """`mlflow server` on PostgreSQL, artifacts in a folder only the server writes; (URL, that folder)."""
    folder = tmp_path_factory.mktemp("server")
    artifacts, port = folder / "artifacts", free_port()
    env = {**pipeline_env(), "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    command = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", postgres,
               "--artifacts-destination", str(artifacts), "--host", "127.0.0.1", "--port", str(port),
               "--workers", "2"]
    with open(folder / "server.log", "wb") as log:
        server = subprocess.Popen(command, cwd=folder, env=env, stdout=log, stderr=subprocess.STDOUT,
                                  start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(server, f"{base}/health", folder / "server.log", DEADLINE)
        yield base, artifacts
    finally:
        stop_process_group(server)


def test_two_parallel_experiments_and_the_champion_through_a_postgresql_server(tracking_server, tmp_path):
    base, artifacts = tracking_server
    repo = copy_repo(tmp_path / "repo")
    env = {**pipeline_env(), "MLFLOW_TRACKING_URI": base}

    def run(*args):
        result = subprocess.run(args, cwd=repo, env=env, capture_output=True, text=True, timeout=900)
        assert result.returncode == 0, f"{args}:\n{result.stdout}\n{result.stderr}"
        return result.stdout

    run("dvc", "exp", "run", "--queue", "-n", "team-logistic")
    run("dvc", "exp", "run", "--queue", "-n", "team-mlp", "-S", "model=mlp")
    run("dvc", "exp", "run", "--run-all", "-j", "2")  # two at once, both logging to the server

    client = MlflowClient(base)
    runs = client.search_runs([client.get_experiment_by_name("catdog").experiment_id])
    assert sorted(r.info.run_name for r in runs) == ["team-logistic", "team-mlp"]
    for logged in runs:
        run_id = logged.info.run_id
        assert logged.info.status == "FINISHED" and "test_accuracy" in logged.data.metrics
        assert [m.step for m in client.get_metric_history(run_id, "val_accuracy")] == list(range(1, TINY["epochs"] + 1))
        plots = {a.path for a in client.list_artifacts(run_id, "plots")}
        assert {"plots/training_curves.png", "plots/confusion_matrix.png"} <= plots
        assert logged.outputs.model_outputs, "no MLflow Model"
    # The server wrote every artifact; the clients wrote none beside them.
    assert list(artifacts.rglob("training_curves.png")) and list(artifacts.rglob("MLmodel"))
    assert not (repo / "mlartifacts").exists() and not (repo / "mlflow.db").exists()

    out = run(sys.executable, "-m", "catdog", "register")
    version = client.get_model_version_by_alias("catdog", "champion")
    assert f"registered catdog version {version.version}" in out
    image = tmp_path / "photo.jpg"  # the queued runs' data stayed in their temporary copies
    write_image(image, (180, 150, 120), size=(90, 70))
    code = f"""
import base64, mlflow, pandas as pd
mlflow.set_tracking_uri({base!r})
model = mlflow.pyfunc.load_model("models:/catdog@champion")
print(model.predict(pd.DataFrame({{"image": [base64.b64encode(open({str(image)!r}, "rb").read()).decode()]}}))
      .to_json(orient="records"))
"""
    served = json.loads(subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True,
                                       text=True, check=True, timeout=300).stdout.strip().splitlines()[-1])
    predicted = json.loads(run(sys.executable, "-m", "catdog", "predict", "--json", "--model",
                               "models:/catdog@champion", str(image)))
    assert served[0]["label"] == predicted[0]["label"]
    assert served[0]["p_dog"] == pytest.approx(predicted[0]["probabilities"]["dog"], abs=1e-6)
