"""MLflow: one run per `train`, reopened by `evaluate` and `plot` to add test metrics and figures.

The store defaults to sqlite:///mlflow.db at the repository root with artifacts in mlartifacts/ beside it, the
layout `mlflow ui` reads when started there; MLFLOW_TRACKING_URI overrides it (a team's server, say).
"""

import contextlib
import json
import os
import subprocess

import mlflow
from filelock import FileLock
from mlflow.tracking import MlflowClient

from catdog.io import write_json
from catdog.paths import RUN_FILE, repo_root

EXPERIMENT = os.environ.get("MLFLOW_EXPERIMENT_NAME", "catdog")


def store() -> tuple[str, str | None]:
    """(tracking URI, artifact location for a new experiment): the user's MLFLOW_TRACKING_URI, else the repo's."""
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri, None  # the server or store decides where artifacts go
    root = repo_root()
    return f"sqlite:///{root / 'mlflow.db'}", (root / "mlartifacts").as_uri()


def _experiment_id() -> str:
    uri, artifact_location = store()
    mlflow.set_tracking_uri(uri)
    # Parallel queued experiments (`dvc queue start -j 2`) may both find no store yet: creating the SQLite tables
    # and the experiment twice at once fails, so one process at a time does it (later writes wait on SQLite's own
    # lock, for which MLflow sets a 20 s busy timeout).
    lock = FileLock(f"{repo_root() / 'mlflow.db'}.lock") if artifact_location else contextlib.nullcontext()
    with lock:
        client = MlflowClient()
        experiment = client.get_experiment_by_name(EXPERIMENT)
        if experiment is not None:
            return experiment.experiment_id
        # MLflow 3's experiment kind: model training, not GenAI (the 3.17 UI may still open on its GenAI view,
        # README says where to click).
        return client.create_experiment(EXPERIMENT, artifact_location=artifact_location,
                                        tags={"mlflow.experimentKind": "custom_model_development"})


def _git_commit() -> str:
    result = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True)
    return result.stdout.strip() if result.returncode == 0 else "unknown"


@contextlib.contextmanager
def _marked_killed_on_interrupt():
    """Ctrl-C or SIGTERM ends the active run as KILLED (MLflow itself would say FAILED, or leave it RUNNING)."""
    try:
        yield
    except KeyboardInterrupt:
        mlflow.end_run("KILLED")
        raise


@contextlib.contextmanager
def training_run(model_name: str, params: dict, sweep: str = ""):
    """A new run tagged with the model, the git commit, the DVC experiment and the sweep (train.sweep, so that
    the MLflow UI filters a grid search with `tags.sweep = '...'`); its id goes to RUN_FILE."""
    experiment_name = os.environ.get("DVC_EXP_NAME", "")
    commit = _git_commit()
    tags = {"model": model_name, "git_commit": commit, "mlflow.source.git.commit": commit,
            "dvc_exp_name": experiment_name, "dvc_exp_baseline_rev": os.environ.get("DVC_EXP_BASELINE_REV", "")}
    if sweep:
        tags["sweep"] = sweep
    with mlflow.start_run(experiment_id=_experiment_id(), run_name=experiment_name or model_name, tags=tags) as run, \
            _marked_killed_on_interrupt():
        mlflow.log_params(params)
        write_json(RUN_FILE, {"run_id": run.info.run_id, "experiment_id": run.info.experiment_id})
        yield run


@contextlib.contextmanager
def resumed_run():
    """The run that trained the current model, reopened; None (with a warning) if the store does not hold it."""
    run_id = json.loads(RUN_FILE.read_text())["run_id"]
    uri, _ = store()
    mlflow.set_tracking_uri(uri)
    try:
        MlflowClient().get_run(run_id)
    except mlflow.exceptions.MlflowException:
        print(f"catdog: warning: MLflow run {run_id} is not in {uri}; not logging to MLflow")
        yield None
        return
    with mlflow.start_run(run_id=run_id) as run, _marked_killed_on_interrupt():
        yield run
