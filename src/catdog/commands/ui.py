"""`catdog ui`: the MLflow UI opened straight on the comparison of the runs.

    catdog ui                  start `mlflow ui` on 127.0.0.1:5000 over the repository's store, print the URL
    catdog ui --port 5001      another port
    catdog ui --print-url      only save the view and print its URL (for a team's server: MLFLOW_TRACKING_URI)

MLflow 3.17 opens an experiment on its GenAI view and shows no metric column until the user picks some. The URL
printed here asks for the "Model training" view (`workflowType=machine_learning`) and a saved view that the
server holds as an experiment tag (`mlflow.sharedViewState.<key>`, opened by `viewStateShareKey=<key>`): the
columns below, sorted by test accuracy. Nothing is stored in the browser, so it works in any browser, for anyone.
"""

import argparse
import json
import os
import sys

from catdog import CatdogError

VIEW_KEY = "catdog-compare"
VIEW_TAG = f"mlflow.sharedViewState.{VIEW_KEY}"
# What a user compares, in this order; the run name is always shown, pinned at the left.
COLUMNS = ["params.`model`", "metrics.`test_accuracy`", "metrics.`best_val_accuracy`", "metrics.`test_f1`",
           "metrics.`test_roc_auc`", "metrics.`train_seconds`"]
VIEW = {"selectedColumns": COLUMNS, "orderByKey": "metrics.`test_accuracy`", "orderByAsc": False,
        "runListHidden": False}


def save_view(mlflow_client, experiment_id: str) -> None:
    """The comparison view as the experiment's shared view (rewritten each time, so it follows this code)."""
    mlflow_client.set_experiment_tag(experiment_id, VIEW_TAG, json.dumps(VIEW))


def view_url(base: str, experiment_id: str) -> str:
    return (f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs"
            f"?workflowType=machine_learning&viewStateShareKey={VIEW_KEY}")


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="catdog ui", description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=5000, help="the port on 127.0.0.1 (default 5000)")
    parser.add_argument("--print-url", action="store_true", help="save the view and print the URL; start nothing")
    args = parser.parse_args(argv)
    from mlflow.exceptions import MlflowException

    from catdog.tracking.store import EXPERIMENT, client, mlflow_error, store

    mlflow_client, uri = client()
    try:
        experiment = mlflow_client.get_experiment_by_name(EXPERIMENT)
        if experiment is None:
            raise CatdogError(f"no MLflow experiment {EXPERIMENT!r} in {uri}: train a model first (`dvc repro`)")
        save_view(mlflow_client, experiment.experiment_id)
    except (MlflowException, OSError) as error:
        raise mlflow_error(error, uri, f"cannot save the view in {uri}") from None
    remote = uri.startswith(("http://", "https://"))
    base = uri if remote else f"http://127.0.0.1:{args.port}"
    print(f"Runs compared, sorted by test accuracy: {view_url(base, experiment.experiment_id)}", flush=True)
    if args.print_url or remote:
        return
    _, artifact_location = store()
    command = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri, "--host", "127.0.0.1",
               "--port", str(args.port), "--default-artifact-root", artifact_location]
    os.environ.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")  # no job workers: the pages need none
    os.execv(sys.executable, command)  # Ctrl-C reaches the server itself
