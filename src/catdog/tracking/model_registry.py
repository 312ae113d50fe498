"""The champion in the MLflow Model Registry: a DVC experiment's MLflow Model as a new version of a registered
model, with an alias pointing at it (`catdog register` chooses the experiment).

The MLflow run that trained the experiment's model (its models/run.json, else the tag dvc_exp_name) must hold an
MLflow Model (every run logged since catdog logs one does). Its model becomes a new version of the registered model
`catdog`, tagged with its lineage (lineage_tags: the DVC experiment, git commit, data digest, test accuracy with its
interval, pointing game) and described by the commands that reproduce it (reproduce_description), and the alias
`champion` points at it: `catdog predict --model models:/catdog@champion`, `mlflow models serve -m
models:/catdog@champion`.
"""

import shlex
import tempfile
from pathlib import Path

from catdog import CatdogError
from catdog.analysis.comparison import Comparison, Side, compare, resolve
from catdog.analysis.evidence import Predictions
from catdog.analysis.experiments import Experiment, trained_by
from catdog.paths import PREDICTIONS_FILE, RUN_FILE
from catdog.tracking.store import EXPERIMENT, client, mlflow_error

REGISTERED_MODEL = "catdog"
ALIAS = "champion"


def training_run(mlflow_client, uri: str, experiment: Experiment):
    """The MLflow run that trained a DVC experiment's model: the one its models/run.json names (an experiment
    whose `train` DVC skipped names a run of another experiment or commit); where that file is missing, the newest
    finished run tagged with its name, preferring one of its commit (names repeat across commits)."""
    from mlflow.exceptions import MlflowException

    run_id = trained_by(experiment)
    if run_id is not None:
        try:
            return mlflow_client.get_run(run_id)
        except MlflowException as error:
            if error.error_code != "RESOURCE_DOES_NOT_EXIST":
                raise
            raise CatdogError(f"MLflow run {run_id}, which trained DVC experiment {experiment.name} (its "
                              f"{RUN_FILE}), is not in {uri}: set MLFLOW_TRACKING_URI to the store it logged "
                              "to") from None
    found = mlflow_client.get_experiment_by_name(EXPERIMENT)
    runs = [] if found is None else mlflow_client.search_runs(
        [found.experiment_id], f"tags.dvc_exp_name = '{experiment.name}' and attributes.status = 'FINISHED'",
        order_by=["attributes.start_time DESC"])
    same_commit = [r for r in runs if r.data.tags.get("git_commit") == experiment.baseline_rev]
    if not runs:
        raise CatdogError(f"the MLflow run of DVC experiment {experiment.name} is unknown: no {RUN_FILE} at its "
                          f"revision {experiment.rev[:7]} and no finished run tagged dvc_exp_name="
                          f"{experiment.name} in {uri}; fetch its outputs with `dvc exp pull <remote> "
                          f"{experiment.name}`, or train it again (`dvc exp run` with its params)")
    return (same_commit or runs)[0]


def against_champion(experiment: Experiment, name: str = REGISTERED_MODEL,
                     alias: str = ALIAS) -> tuple[Comparison | None, str]:
    """The candidate's test predictions (its commit's plots/predictions.csv) paired with those of the version
    `alias` points at now (the predictions.csv its training run logged): (the comparison, "") or (None, why there
    is none to make: no champion yet, or its run holds no predictions)."""
    from mlflow.exceptions import MlflowException

    mlflow_client, uri = client()
    try:
        version = mlflow_client.get_model_version_by_alias(name, alias)
    except MlflowException:
        return None, f"{name}@{alias} does not exist yet: nothing to compare with"
    try:
        with tempfile.TemporaryDirectory() as tmp:
            text = Path(mlflow_client.download_artifacts(version.run_id, PREDICTIONS_FILE.name, tmp)).read_text()
    except (MlflowException, OSError) as error:
        return None, (f"the champion, version {version.version}, has no test predictions in its MLflow run "
                      f"{version.run_id} ({type(error).__name__}): not compared")
    champion = Side(f"champion {name} version {version.version} ({version.tags.get('dvc_exp_name', '?')})", {},
                    {}, {}, Predictions.from_csv(text))
    candidate = resolve(experiment.rev)
    candidate.label = f"candidate {experiment.name} ({experiment.rev[:7]})"
    return compare(champion, candidate), ""


def _data_inputs(run) -> list:
    return [i.dataset for i in (run.inputs.dataset_inputs if run.inputs else [])]


def lineage_tags(experiment: Experiment, run) -> dict:
    """Where the version came from and how good it was: the DVC experiment and its commits, the git commit it
    trained at, the data (its name and DVC's md5 of data/prepared, as the run's dataset inputs hold them), the
    run, validation accuracy, and every test metric (accuracy_ci_low/high, pointing_game among them) with the
    accuracy's 95 % interval also as one readable tag."""
    datasets = _data_inputs(run)
    test = experiment.test
    tags = {"dvc_exp_name": experiment.name, "dvc_exp_rev": experiment.rev, "dvc_exp_baseline_rev":
            experiment.baseline_rev, "git_commit": run.data.tags.get("git_commit", ""), "model": experiment.model,
            "run_id": run.info.run_id, "best_val_accuracy": str(experiment.train["best_val_accuracy"]),
            # dvc.lock's md5 of data/prepared; "not logged" for a run logged before catdog logged its data
            "data_digest": datasets[0].digest if datasets else "not logged",
            "data": datasets[0].name.rsplit(":", 1)[0] if datasets else str(experiment.params.get("data.images")),
            **{f"test_{k}": str(v) for k, v in test.items()}}
    if {"accuracy", "accuracy_ci_low", "accuracy_ci_high"} <= test.keys():
        tags["test_accuracy_95ci"] = f"{test['accuracy']} [{test['accuracy_ci_low']}, {test['accuracy_ci_high']}]"
    return tags


def reproduce_description(experiment: Experiment, tags: dict) -> str:
    """The version's description: what it is, and the commands that fetch or retrain it in a clone."""
    changed = [f"-S {shlex.quote(f'{key}={value}')}" for key, value in sorted(experiment.params.items())
               if value != experiment.baseline.get(key)]
    interval = tags.get("test_accuracy_95ci", tags.get("test_accuracy", "?"))
    return "\n".join([
        f"DVC experiment {experiment.name} ({experiment.model}) of commit {experiment.baseline_rev[:7]}, data "
        f"{tags['data']} (DVC md5 of data/prepared {tags['data_digest']}); test accuracy {interval}, pointing game "
        f"{tags.get('test_pointing_game', 'not measured')}.",
        "Fetch it, outputs included (from the clone that ran it: `dvc exp push origin "
        f"{experiment.name}`):",
        f"    dvc exp pull origin {experiment.name} && dvc exp apply {experiment.name}",
        "Train it again (the same bytes on the same kind of CPU):",
        f"    git checkout {experiment.baseline_rev} && dvc pull && dvc exp run {' '.join(changed)}".rstrip(),
    ])


def register(experiment: Experiment, name: str = REGISTERED_MODEL, alias: str = ALIAS):
    """A new version of `name` from the experiment's MLflow Model, `alias` pointing at it; nothing is left
    registered if a step fails."""
    from mlflow.exceptions import MlflowException

    mlflow_client, uri = client()
    try:
        run = training_run(mlflow_client, uri, experiment)
        models = run.outputs.model_outputs if run.outputs else []
        if not models:
            raise CatdogError(f"MLflow run {run.info.run_id} ({experiment.name}) has no MLflow Model: it was "
                              "logged before catdog logged one; train it again (`dvc exp run` with its params)")
        tags = lineage_tags(experiment, run)
        try:
            mlflow_client.get_registered_model(name)
        except MlflowException:
            mlflow_client.create_registered_model(name, description="catdog's cat/dog classifiers; "
                                                  f"@{alias} is the best by validation accuracy")
        model_id = models[-1].model_id
        version = mlflow_client.create_model_version(name, f"models:/{model_id}", run.info.run_id, tags=tags,
                                                     description=reproduce_description(experiment, tags),
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
