"""The champion in the MLflow Model Registry: a DVC experiment's MLflow Model as a new version of a registered
model, with an alias pointing at it (`catdog register` chooses the experiment).

The experiment's MLflow run (tag dvc_exp_name) must hold an MLflow Model (every run logged since catdog logs one
does). Its model becomes a new version of the registered model `catdog`, tagged with the DVC experiment, git commit
and test metrics, and the alias `champion` points at it: `catdog predict --model models:/catdog@champion`,
`mlflow models serve -m models:/catdog@champion`.
"""

from catdog import CatdogError
from catdog.analysis.experiments import Experiment
from catdog.tracking.store import EXPERIMENT, client, mlflow_error

REGISTERED_MODEL = "catdog"
ALIAS = "champion"


def training_run(mlflow_client, experiment: Experiment):
    """The finished MLflow run that trained a DVC experiment: the newest one tagged with its name, preferring one
    of its commit (names repeat across commits)."""
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
