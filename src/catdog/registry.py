"""`catdog register`: the champion in the MLflow Model Registry, chosen by validation accuracy.

    catdog register                       the best finished DVC experiment of any commit
    catdog register --sweep grid1         the best point of a grid search (train.sweep)
    catdog register --match '^cnn-'       the best experiment whose name matches

The choice is `catdog best`'s: best_val_accuracy, then lower best_val_loss, then the name; the test set never
takes part. The experiment's MLflow run (tag dvc_exp_name) must hold an MLflow Model (every run logged since
catdog logs one does). Its model becomes a new version of the registered model `catdog`, tagged with the DVC
experiment, git commit and test metrics, and the alias `champion` points at it:
`catdog predict --model models:/catdog@champion`, `mlflow models serve -m models:/catdog@champion`.
"""

import argparse
import os
from pathlib import Path

from catdog import CatdogError
from catdog.experiments import Experiment, finished
from catdog.leaderboard import select
from catdog.sweep import best

REGISTERED_MODEL = "catdog"
ALIAS = "champion"
CHECKPOINT_IN_MODEL = "artifacts/model.pt"  # where mlflow_model.log puts the checkpoint inside the MLflow Model

# A server that does not answer should be said at once, not after MLflow's default minutes of retries.
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


def client():
    """A client of the store the pipeline logs to; one line if it is missing or unreachable."""
    import mlflow
    from mlflow.tracking import MlflowClient

    from catdog.tracking import store

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


def training_run(mlflow_client, experiment: Experiment):
    """The finished MLflow run that trained a DVC experiment: the newest one tagged with its name, preferring one
    of its commit (names repeat across commits)."""
    from catdog.tracking import EXPERIMENT

    found = mlflow_client.get_experiment_by_name(EXPERIMENT)
    runs = [] if found is None else mlflow_client.search_runs(
        [found.experiment_id], f"tags.dvc_exp_name = '{experiment.name}' and attributes.status = 'FINISHED'",
        order_by=["attributes.start_time DESC"])
    same_commit = [r for r in runs if r.data.tags.get("git_commit") == experiment.baseline_rev]
    return (same_commit or runs or [None])[0]


def register(experiment: Experiment, name: str = REGISTERED_MODEL, alias: str = ALIAS):
    """A new version of `name` from the experiment's MLflow Model, `alias` pointing at it; nothing is left
    registered if a step fails."""
    from mlflow.exceptions import MlflowException

    mlflow_client, uri = client()
    try:
        run = training_run(mlflow_client, experiment)
        if run is None:
            raise CatdogError(f"no finished MLflow run of DVC experiment {experiment.name} in {uri} (runs are "
                              "tagged dvc_exp_name); set MLFLOW_TRACKING_URI to the store it logged to")
        models = run.outputs.model_outputs if run.outputs else []
        if not models:
            raise CatdogError(f"MLflow run {run.info.run_id} ({experiment.name}) has no MLflow Model: it was "
                              "logged before catdog logged one; train it again (`dvc exp run` with its params)")
        tags = {"dvc_exp_name": experiment.name, "git_commit": run.data.tags.get("git_commit", ""),
                "model": experiment.model, "run_id": run.info.run_id,
                "best_val_accuracy": str(experiment.train["best_val_accuracy"]),
                **{f"test_{k}": str(v) for k, v in experiment.test.items()}}
        try:
            mlflow_client.get_registered_model(name)
        except MlflowException:
            mlflow_client.create_registered_model(name, description="catdog's cat/dog classifiers; "
                                                  f"@{alias} is the best by validation accuracy")
        model_id = models[-1].model_id
        version = mlflow_client.create_model_version(name, f"models:/{model_id}", run.info.run_id, tags=tags,
                                                     model_id=model_id)  # a tracking server asks for both
        try:
            mlflow_client.set_registered_model_alias(name, alias, version.version)
        except BaseException:
            mlflow_client.delete_model_version(name, version.version)
            raise
    except MlflowException as error:
        raise mlflow_error(error, uri, f"registering {experiment.name} in {uri} failed") from None
    except OSError as error:  # requests' ConnectionError is one
        raise mlflow_error(error, uri, "registering failed") from None
    return run, version


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="catdog register", description=__doc__.splitlines()[0])
    parser.add_argument("--sweep", metavar="NAME", help="only the experiments run with -S train.sweep=NAME")
    parser.add_argument("--match", metavar="REGEX", help="only experiments whose name matches")
    parser.add_argument("--name", default=REGISTERED_MODEL, help=f"the registered model (default {REGISTERED_MODEL})")
    parser.add_argument("--alias", default=ALIAS, help=f"the alias set on the new version (default {ALIAS})")
    args = parser.parse_args(argv)
    done, _ = finished(all_commits=True)
    candidates = [e for e in select(done, args.match, args.sweep) if "best_val_accuracy" in e.train]
    if not candidates:
        raise CatdogError("no finished DVC experiment" + (f" with train.sweep={args.sweep!r}" if args.sweep else "")
                          + (f" matching {args.match!r}" if args.match else "")
                          + "; run one with `dvc exp run -S model=...` (a plain `dvc repro` is not an experiment)")
    champion = best(candidates)
    run, version = register(champion, args.name, args.alias)
    print(f"registered {args.name} version {version.version}: DVC experiment {champion.name} ({champion.model}), "
          f"MLflow run {run.info.run_id}, best of {len(candidates)} by validation accuracy "
          f"{champion.train['best_val_accuracy']:.4f} (test accuracy {champion.test.get('accuracy', float('nan')):.4f})"
          f"\nalias {args.alias} -> version {version.version}: "
          f"catdog predict --model models:/{args.name}@{args.alias} FILES")
