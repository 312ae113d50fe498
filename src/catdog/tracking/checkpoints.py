"""A trained model from wherever it lives: a checkpoint file, an MLflow run, or an MLflow Model URI (models:/NAME@ALIAS,
models:/NAME/VERSION, runs:/ID/model) in the store the pipeline logs to."""

import tempfile
from pathlib import Path

from catdog import CatdogError
from catdog.models.architectures import load_checkpoint
from catdog.paths import MODEL_FILE, repo_root
from catdog.tracking.store import client, download_checkpoint, mlflow_error

RUN_ARTIFACT = "model/model.pt"  # where src/stages/train.py logged the checkpoint before it logged an MLflow Model


def read_checkpoint(path: Path) -> tuple[dict, object]:
    if not path.is_file():
        raise CatdogError(f"no checkpoint at {path}: train one with `dvc repro`, or pass --model PATH or --run-id ID")
    return load_checkpoint(path)


def run_checkpoint(run_id: str) -> tuple[dict, object]:
    """The checkpoint an MLflow run logged, from the store the pipeline logs to."""
    from mlflow.exceptions import MlflowException  # late: mlflow takes seconds to import

    mlflow_client, uri = client()
    try:
        mlflow_client.get_run(run_id)
    except MlflowException as error:
        raise mlflow_error(error, uri, f"cannot find MLflow run {run_id} in {uri}") from None
    with tempfile.TemporaryDirectory() as tmp:
        try:  # the run's MLflow Model, which holds the checkpoint
            checkpoint = download_checkpoint(f"runs:/{run_id}/model", tmp)
        except CatdogError:
            checkpoint = None  # no MLflow Model: a run logged before catdog logged them, or not a training run
        if checkpoint is not None:  # found: why it cannot be loaded is the answer, not the older layout's absence
            try:
                return read_checkpoint(checkpoint)
            except CatdogError as error:
                raise CatdogError(f"MLflow run {run_id}'s model cannot be loaded: {error}") from None
        try:  # a run logged before catdog logged MLflow Models
            path = mlflow_client.download_artifacts(run_id, RUN_ARTIFACT, tmp)
        except (MlflowException, OSError):
            raise CatdogError(f"MLflow run {run_id} has no artifact {RUN_ARTIFACT} and no MLflow Model: "
                              "it is not a training run, or it did not finish") from None
        return read_checkpoint(Path(path))


def model_checkpoint(model_uri: str) -> tuple[dict, object]:
    """The checkpoint inside an MLflow Model: what the served model runs, so the same predictions."""
    with tempfile.TemporaryDirectory() as tmp:
        return read_checkpoint(download_checkpoint(model_uri, tmp))


def load_model(model: str | None, run_id: str | None) -> tuple[dict, object]:
    """The checkpoint and model of --model (a file or an MLflow Model URI) or --run-id, else this repository's."""
    if run_id:
        return run_checkpoint(run_id)
    if model and model.startswith(("models:/", "runs:/")):
        return model_checkpoint(model)
    return read_checkpoint(Path(model) if model else repo_root() / MODEL_FILE)
