"""The MLflow life cycle after comparing: every run's MLflow Model, the champion registered by validation
accuracy, `catdog predict --model models:/catdog@champion`, and `mlflow models serve` answering over HTTP with
exactly `catdog predict`'s predictions. Two real DVC experiments in a temporary copy of the repository."""

import base64
import json
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest
from mlflow.tracking import MlflowClient

from catdog import CatdogError
from catdog.analysis.experiments import Experiment, finished
from conftest import copy_repo, free_port, pipeline_env, run, stop_process_group, wait_for_http

pytestmark = pytest.mark.slow  # two DVC experiments, a model server: about 2-3 minutes on 2 cores
SERVER_DEADLINE = 240  # s for `mlflow models serve` to answer /ping (it imports MLflow, then loads the model)
IMAGES = ["data/synthetic/cat/cat.00000.jpg", "data/synthetic/dog/dog.00001.jpg", "data/synthetic/dog/dog.00003.jpg"]


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    """Two trained experiments (logistic, cnn), a third with nothing changed since logi (DVC skips every stage, so
    it has no MLflow run of its own), and the champion registered among them."""
    repo = copy_repo(tmp_path_factory.mktemp("registry"))
    catdog = [sys.executable, "-m", "catdog"]
    run(["dvc", "exp", "run", "-n", "logi"], repo)
    run(["dvc", "exp", "run", "-n", "same"], repo)
    run(["dvc", "exp", "run", "-n", "conv", "-S", "model=cnn"], repo)
    registered = run([*catdog, "register"], repo)
    return {"path": repo, "uri": f"sqlite:///{repo / 'mlflow.db'}", "catdog": catdog, "out": registered.stdout}


def predict_json(repo, *model_args) -> list[dict]:
    result = run([*repo["catdog"], "predict", "--json", *model_args, *IMAGES], repo["path"])
    return json.loads(result.stdout)


def test_every_run_logs_an_mlflow_model_that_loads_outside_the_repository(repo, tmp_path):
    client = MlflowClient(repo["uri"])
    runs = client.search_runs([client.get_experiment_by_name("catdog").experiment_id])
    assert sorted(r.info.run_name for r in runs) == ["conv", "logi"]
    for logged in runs:
        assert logged.outputs.model_outputs, f"{logged.info.run_name} has no MLflow Model"
    conv = next(r for r in runs if r.info.run_name == "conv")
    # A fresh Python in an empty folder: the model's own copy of catdog (code_paths) is what runs.
    code = f"""
import base64, json, sys, mlflow, pandas as pd
mlflow.set_tracking_uri({repo['uri']!r})
model = mlflow.pyfunc.load_model("runs:/{conv.info.run_id}/model")
import catdog
assert "/code/catdog/" in catdog.__file__, catdog.__file__
images = [base64.b64encode(open(f, "rb").read()).decode() for f in sys.argv[1:]]
print(model.predict(pd.DataFrame({{"image": images}})).to_json(orient="records"))
print(json.dumps(model.metadata.get_input_schema().to_dict()))
"""
    result = subprocess.run([sys.executable, "-c", code, *(str(repo["path"] / f) for f in IMAGES)], cwd=tmp_path,
                            env=pipeline_env(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    predictions, schema = (json.loads(line) for line in result.stdout.strip().splitlines()[-2:])
    assert schema == [{"type": "string", "name": "image", "required": True}]
    expected = predict_json(repo, "--run-id", conv.info.run_id)
    assert [p["label"] for p in predictions] == [e["label"] for e in expected]
    for p, e in zip(predictions, expected):
        assert p["p_dog"] == pytest.approx(e["probabilities"]["dog"], abs=1e-6)


def test_the_champion_is_chosen_by_validation_accuracy_and_tagged(repo, monkeypatch):
    monkeypatch.setenv("DVC_ROOT", str(repo["path"]))
    monkeypatch.setenv("PATH", pipeline_env()["PATH"])  # the venv's dvc
    done = {e.name: e for e in finished(all_commits=True)[0]}
    assert sorted(done) == ["conv", "logi", "same"]
    # By hand what registry must do: validation accuracy, then the lower validation loss; test plays no part.
    expected = min(done.values(), key=lambda e: (-e.train["best_val_accuracy"], e.train["best_val_loss"], e.name))
    client = MlflowClient(repo["uri"])
    version = client.get_model_version_by_alias("catdog", "champion")
    assert version.tags["dvc_exp_name"] == expected.name
    assert float(version.tags["test_accuracy"]) == expected.test["accuracy"]
    assert version.tags["git_commit"] == run(["git", "rev-parse", "HEAD"], repo["path"]).stdout.strip()
    assert client.get_run(version.run_id).info.run_name == ("logi" if expected.name == "same" else expected.name)
    assert f"registered catdog version {version.version}: DVC experiment {expected.name}" in repo["out"]


def test_predict_with_the_registered_champion(repo):
    version = MlflowClient(repo["uri"]).get_model_version_by_alias("catdog", "champion")
    assert predict_json(repo, "--model", "models:/catdog@champion") == predict_json(repo, "--run-id", version.run_id)


@pytest.mark.parametrize("uri, message", [
    ("models:/catdog@nobody", "cannot load models:/catdog@nobody from sqlite:///"),
    ("models:/no-such-model@champion", "cannot load models:/no-such-model@champion from sqlite:///"),
])
def test_an_unknown_model_or_alias_is_one_line(repo, uri, message):
    result = run([*repo["catdog"], "predict", "--model", uri, IMAGES[0]], repo["path"], check=False)
    assert result.returncode == 1 and result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith(f"catdog: error: {message}")


def test_an_unreachable_tracking_server_is_one_line_and_quick(repo):
    env = {**pipeline_env(), "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{free_port()}"}
    started = time.monotonic()
    result = subprocess.run([*repo["catdog"], "register"], cwd=repo["path"], env=env, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 1 and result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("catdog: error: cannot reach the MLflow tracking server http://127.0.0.1:")
    assert time.monotonic() - started < 120  # not MLflow's default minutes of retries


def test_a_run_without_an_mlflow_model_is_refused_and_nothing_registered(repo, monkeypatch):
    from catdog.tracking import model_registry

    client = MlflowClient(repo["uri"])
    experiment_id = client.get_experiment_by_name("catdog").experiment_id
    old = client.create_run(experiment_id, tags={"dvc_exp_name": "old-run", "git_commit": "abc"}).info.run_id
    client.set_terminated(old, "FINISHED")
    versions = len(client.search_model_versions("name = 'catdog'"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", repo["uri"])
    experiment = Experiment("old-run", "0" * 40, {"model": "logistic"}, {}, {"accuracy": 0.5},
                            {"best_val_accuracy": 0.99}, "abc")
    with pytest.raises(CatdogError, match=f"MLflow run {old} \\(old-run\\) has no MLflow Model: it was logged "
                                          "before catdog logged one"):
        model_registry.register(experiment)
    assert len(client.search_model_versions("name = 'catdog'")) == versions


def test_an_experiment_whose_stages_dvc_skipped_registers_the_run_that_trained_its_model(repo):
    result = run([*repo["catdog"], "register", "--match", "^same$", "--alias", "skipped"], repo["path"])
    client = MlflowClient(repo["uri"])
    version = client.get_model_version_by_alias("catdog", "skipped")
    trained = client.get_run(version.run_id)
    assert version.tags["dvc_exp_name"] == "same" and "DVC experiment same" in result.stdout
    assert trained.info.run_name == "logi" and trained.data.tags["dvc_exp_name"] == "logi"  # its own tag kept


def test_an_unknown_run_and_a_store_without_it_are_one_line_each(repo, monkeypatch, tmp_path):
    from catdog.tracking import model_registry

    monkeypatch.setenv("DVC_ROOT", str(repo["path"]))
    monkeypatch.setenv("PATH", pipeline_env()["PATH"])
    same = next(e for e in finished(all_commits=True)[0] if e.name == "same")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", repo["uri"])
    # No models/run.json at that revision and no run tagged with its name: the run id is unknown.
    unknown = Experiment("never-trained", "0" * 40, {"model": "logistic"}, {}, {"accuracy": 0.5},
                         {"best_val_accuracy": 0.99}, "abc")
    with pytest.raises(CatdogError, match=r"^the MLflow run of DVC experiment never-trained is unknown: no "
                                          r"models/run.json at its revision 0000000 .*`dvc exp pull"):
        model_registry.register(unknown)
    # Its run.json names a run that another store lacks.
    empty = f"sqlite:///{tmp_path / 'other.db'}"
    MlflowClient(empty).create_experiment("catdog")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", empty)
    with pytest.raises(CatdogError, match=r"^MLflow run [0-9a-f]{32}, which trained DVC experiment same \(its "
                                          r"models/run.json\), is not in sqlite:///.*other.db: set "
                                          r"MLFLOW_TRACKING_URI to the store it logged to$"):
        model_registry.register(same)


def post(url: str, payload: bytes) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=payload, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_the_champion_served_over_http_answers_as_catdog_predict(repo):
    port = free_port()
    env = pipeline_env()  # the venv's bin first on PATH: `--env-manager local` starts uvicorn from PATH
    env["MLFLOW_TRACKING_URI"] = repo["uri"]
    log = repo["path"] / "serve.log"
    command = ["mlflow", "models", "serve", "-m", "models:/catdog@champion", "--env-manager", "local",
               "--host", "127.0.0.1", "--port", str(port)]
    with open(log, "wb") as output:
        server = subprocess.Popen(command, cwd=repo["path"], env=env, stdout=output, stderr=subprocess.STDOUT,
                                  start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(server, f"{base}/ping", log, SERVER_DEADLINE)

        encoded = [base64.b64encode((repo["path"] / f).read_bytes()).decode() for f in IMAGES]
        expected = predict_json(repo, "--model", "models:/catdog@champion")
        single = json.dumps({"dataframe_split": {"columns": ["image"], "data": [[encoded[0]]]}}).encode()
        batch = json.dumps({"dataframe_records": [{"image": e} for e in encoded]}).encode()
        for payload, want in ((single, expected[:1]), (batch, expected)):
            status, answer = post(f"{base}/invocations", payload)
            assert status == 200, answer
            assert [p["label"] for p in answer["predictions"]] == [e["label"] for e in want]
            for p, e in zip(answer["predictions"], want):
                assert p["p_dog"] == pytest.approx(e["probabilities"]["dog"], abs=1e-6)

        not_an_image = base64.b64encode(b"GIF89a but truncated").decode()
        for bad, named in ((not_an_image, "image 0 is not a readable image"),
                           ("%%%not base64", "image 0 is not base64")):
            status, answer = post(f"{base}/invocations", json.dumps({"dataframe_records": [{"image": bad}]}).encode())
            assert 400 <= status < 500 and named in answer["message"], (status, answer)
        status, answer = post(f"{base}/invocations", single)  # still serving
        assert status == 200 and answer["predictions"][0]["label"] == expected[0]["label"]
    finally:
        stop_process_group(server)
