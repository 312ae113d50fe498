"""The MLflow store the pipeline logs to, and what the commands read from it.

The store defaults to sqlite:///mlflow.db at the repository root with artifacts in mlartifacts/ beside it, the
layout `mlflow ui` reads when started there; MLFLOW_TRACKING_URI overrides it (a team's server, say).
"""

import contextlib
import os
import re
from pathlib import Path

from catdog import CatdogError
from catdog.paths import repo_root

EXPERIMENT = os.environ.get("MLFLOW_EXPERIMENT_NAME", "catdog")
CHECKPOINT_IN_MODEL = "artifacts/model.pt"  # where mlflow_model.log puts the checkpoint inside the MLflow Model
PROBE_TIMEOUT_S = 5  # the first request to a tracking server: one try, answered within this or reported


def store() -> tuple[str, str | None]:
    """(tracking URI, artifact location for a new experiment): the user's MLFLOW_TRACKING_URI, else the repo's.
    MLflow exports MLFLOW_TRACKING_URI once a process sets it: the repository's URI there is still the repository's
    store, with its artifact location (and, in tracking.runs, its lock file)."""
    root = repo_root()
    default = f"sqlite:///{root / 'mlflow.db'}"
    uri = os.environ.get("MLFLOW_TRACKING_URI") or default
    return uri, (root / "mlartifacts").as_uri() if uri == default else None  # else the server or store decides


@contextlib.contextmanager
def one_short_try():
    """MLflow's HTTP requests made once, with a PROBE_TIMEOUT_S timeout, inside the block: a server that does not
    answer is reported in seconds, not after MLflow's minutes of retries. Its own settings again after it."""
    names = ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT")
    saved = {name: os.environ.get(name) for name in names}
    os.environ.update(dict(zip(names, ("0", str(PROBE_TIMEOUT_S)))))
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _chosen() -> bool:
    """Whether the user chose the store rather than the repository's."""
    return store()[1] is None


def _elsewhere() -> str:
    """How to log without the store the user chose, or how to choose one."""
    if _chosen():
        return "unset MLFLOW_TRACKING_URI to log to the repository's mlflow.db"
    return "or set MLFLOW_TRACKING_URI to a store that works"


def store_problem(uri: str, error: BaseException) -> str | None:
    """What makes the store unusable and its fix, in one line, or None when the error says nothing about the store
    itself (a missing run, a bad name)."""
    text = f"{type(error).__name__}: {error}"
    code = getattr(error, "error_code", None)
    status = re.search(r"error code (\d{3}) != 200|too many (\d{3}) error responses", text)
    status = next(filter(None, status.groups())) if status else None
    chosen, elsewhere = _chosen(), _elsewhere()
    server = f"the MLflow tracking server {uri}"
    if "NameResolutionError" in text or "Name or service not known" in text or "Failed to resolve" in text:
        return f"cannot reach {server} (host unknown): correct MLFLOW_TRACKING_URI; {elsewhere}"
    if "NewConnectionError" in text or "Connection refused" in text:
        return f"cannot reach {server} (connection refused): start it, or correct MLFLOW_TRACKING_URI; {elsewhere}"
    if "Timeout" in text or "timed out" in text:
        return (f"cannot reach {server} (no answer within {PROBE_TIMEOUT_S} s): check that it runs and the network "
                f"to it; {elsewhere}")
    if code == "UNAUTHENTICATED" or status == "401":
        return (f"{server} refuses the request (HTTP 401, not authenticated): set MLFLOW_TRACKING_USERNAME and "
                f"MLFLOW_TRACKING_PASSWORD, or MLFLOW_TRACKING_TOKEN; {elsewhere}")
    if code == "PERMISSION_DENIED" or status == "403":
        return (f"{server} refuses the request (HTTP 403, permission denied): use an account that may log runs; "
                f"{elsewhere}")
    if status and status.startswith("5"):
        return f"{server} fails (HTTP {status}, a server error): see the server's log; {elsewhere}"
    if "ConnectionError" in text or "Max retries exceeded" in text:
        return (f"cannot reach {server} ({text.splitlines()[0][:200]}): start it, or correct MLFLOW_TRACKING_URI; "
                f"{elsewhere}")
    if uri.startswith("sqlite:"):
        path = uri.removeprefix("sqlite:///")
        if "file is not a database" in text:
            fix = (f"point MLFLOW_TRACKING_URI at an MLflow store, or {elsewhere}" if chosen
                   else f"move {path} away (a new store is made there)")
            return f"the MLflow store {uri} is not an SQLite database: {fix}"
        if isinstance(error, OSError) or "unable to open database file" in text or "readonly database" in text:
            reason = (error.strerror if isinstance(error, OSError) and error.strerror else text.splitlines()[0][:200])
            return f"the MLflow store {uri} cannot be written ({reason}): make its folder writable; {elsewhere}"
    return None


def first_line(error: BaseException) -> str:
    """The error as "Type: the first line of its message", at most 200 characters of the message."""
    return f"{type(error).__name__}: {(str(error).strip().splitlines() or [''])[0][:200]}"


def unusable(uri: str, error: BaseException) -> CatdogError:
    """The error of a store's first request as one line: what failed and the fix (store_problem), else MLflow's
    first line and how to log elsewhere."""
    return CatdogError(store_problem(uri, error)
                       or f"the MLflow store {uri} cannot be used ({first_line(error)}); {_elsewhere()}")


def new_sqlite_problem(uri: str) -> str | None:
    """For an SQLite store that does not exist yet (made when the first run opens, not by a stage that fails
    first): what keeps it from being made there, or None."""
    path = Path(uri.removeprefix("sqlite:///"))
    existing = next(p for p in (path.parent, *path.parent.parents) if p.exists())
    if existing.is_dir() and os.access(existing, os.W_OK):
        return None
    why = "not a folder" if not existing.is_dir() else "not writable"
    return f"the MLflow store {uri} cannot be written ({existing} is {why}): make its folder writable; {_elsewhere()}"


def probe(mlflow_client, uri: str) -> None:
    """One short request (one_short_try): a CatdogError naming the store, what failed and the fix, if it fails."""
    with one_short_try():
        try:
            mlflow_client.get_experiment_by_name(EXPERIMENT)
        except Exception as error:
            raise unusable(uri, error) from None


def client(create: bool = False):
    """A client of the store the pipeline logs to, which answered a first request; one line if it is missing or
    cannot be used. create: an SQLite store not made yet is made (for a command that logs, not one that reads)."""
    import mlflow
    from mlflow.tracking import MlflowClient

    # After the first request, a server that stops answering is said soon too, not after minutes of retries.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    uri, _ = store()
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).is_file():
        problem = new_sqlite_problem(uri) if create else \
            f"no MLflow store at {uri}: run from the repository root, or set MLFLOW_TRACKING_URI"  # MLflow would
        if problem:  # create an empty store there and then find nothing in it
            raise CatdogError(problem)
    # Parts of MLflow ignore a passed tracking_uri (runs:/ID/model looks the logged model up in the process-wide
    # store), so the process-wide store must be this one too.
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    try:
        mlflow_client = MlflowClient(uri, registry_uri=uri)
    except Exception as error:  # an SQLite file that is no store fails here already
        raise unusable(uri, error) from None
    probe(mlflow_client, uri)
    return mlflow_client, uri


def mlflow_error(error: Exception, uri: str, what: str) -> CatdogError:
    """One line for an MLflow or network error: what failed, MLflow's reason, what to do."""
    from mlflow.exceptions import MlflowException

    message = error.message if isinstance(error, MlflowException) else str(error)
    first = (message.strip().splitlines() or [type(error).__name__])[0][:300]
    return CatdogError(store_problem(uri, error) or f"{what}: {first}")


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


def store_lock():
    """Parallel queued experiments (`dvc queue start -j 2`) may both find no store yet: creating the SQLite tables
    and the experiment twice at once fails, so one process at a time does it (later writes wait on SQLite's own
    lock, for which MLflow sets a 20 s busy timeout). A server needs none."""
    from filelock import FileLock

    return FileLock(f"{repo_root() / 'mlflow.db'}.lock") if store()[1] else contextlib.nullcontext()


def experiment_id(client=None) -> str:
    """The id of the pipeline's MLflow experiment (EXPERIMENT), made with the store's artifact location if new.
    Without a client, one of MLflow's store is made under the lock: making it creates a new SQLite store's tables."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    _, artifact_location = store()
    with store_lock():
        client = client or MlflowClient()
        experiment = client.get_experiment_by_name(EXPERIMENT)
        if experiment is not None:
            return experiment.experiment_id
        # MLflow 3's experiment kind: model training, not GenAI (the 3.17 UI may still open on its GenAI view,
        # README says where to click).
        try:
            return client.create_experiment(EXPERIMENT, artifact_location=artifact_location,
                                            tags={"mlflow.experimentKind": "custom_model_development"})
        except MlflowException as error:
            # Two queued experiments on one tracking server (no file lock between machines): the other one made it.
            if error.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
            return client.get_experiment_by_name(EXPERIMENT).experiment_id
