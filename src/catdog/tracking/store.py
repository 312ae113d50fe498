"""The MLflow store the pipeline logs to, and what the commands read from it.

The store defaults to sqlite:///mlflow.db at the repository root with artifacts in mlartifacts/ beside it, the
layout `mlflow ui` reads when started there; MLFLOW_TRACKING_URI overrides it (a team's server, say).
"""

import os
from pathlib import Path

from catdog import CatdogError
from catdog.paths import repo_root

EXPERIMENT = os.environ.get("MLFLOW_EXPERIMENT_NAME", "catdog")
CHECKPOINT_IN_MODEL = "artifacts/model.pt"  # where mlflow_model.log puts the checkpoint inside the MLflow Model


def store() -> tuple[str, str | None]:
    """(tracking URI, artifact location for a new experiment): the user's MLFLOW_TRACKING_URI, else the repo's."""
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri, None  # the server or store decides where artifacts go
    root = repo_root()
    return f"sqlite:///{root / 'mlflow.db'}", (root / "mlartifacts").as_uri()


def client():
    """A client of the store the pipeline logs to; one line if it is missing or unreachable."""
    import mlflow
    from mlflow.tracking import MlflowClient

    # A server that does not answer should be said at once, not after MLflow's default minutes of retries.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    uri, _ = store()
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).is_file():
        # MLflow would create an empty store there and then find nothing in it
        raise CatdogError(f"no MLflow store at {uri}: run from the repository root, or set MLFLOW_TRACKING_URI")
    # Parts of MLflow ignore a passed tracking_uri (runs:/ID/model looks the logged model up in the process-wide
    # store), so the process-wide store must be this one too.
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return MlflowClient(uri, registry_uri=uri), uri


def mlflow_error(error: Exception, uri: str, what: str) -> CatdogError:
    """One line for an MLflow or network error: what failed, MLflow's reason, what to do."""
    from mlflow.exceptions import MlflowException

    message = error.message if isinstance(error, MlflowException) else str(error)
    first = (message.strip().splitlines() or [type(error).__name__])[0][:300]
    if not isinstance(error, MlflowException) or "Max retries exceeded" in message or "onnection" in message:
        return CatdogError(f"cannot reach the MLflow tracking server {uri} ({first}); start it, or point "
                           "MLFLOW_TRACKING_URI at one that runs (unset it for the repository's mlflow.db)")
    return CatdogError(f"{what}: {first}")


def download_checkpoint(model_uri: str, dest: str) -> Path:
    """The catdog checkpoint inside an MLflow Model (models:/NAME@ALIAS, models:/NAME/VERSION, runs:/ID/model)."""
    import mlflow
    from mlflow.exceptions import MlflowException

    _, uri = client()
    try:
        folder = Path(mlflow.artifacts.download_artifacts(model_uri, dst_path=dest, tracking_uri=uri))
    except MlflowException as error:
        raise mlflow_error(error, uri, f"cannot load {model_uri} from {uri}") from None
    except OSError as error:
        raise mlflow_error(error, uri, f"cannot load {model_uri}") from None
    checkpoint = folder / CHECKPOINT_IN_MODEL
    if not checkpoint.is_file():
        raise CatdogError(f"{model_uri} is not a catdog MLflow Model (no {CHECKPOINT_IN_MODEL} in it)")
    return checkpoint
