"""The study's MLflow run: the parent of its trials' training runs, so that the runs table shows the study folded
over its trials. Params: the model, the search space, the sampler, the pruner, the number of trials. Metrics: the
best value so far after each trial (step: the trial's number). Artifacts: Optuna's optimisation history,
intermediate values and parameter importances, as PNGs.

Workers on several machines share it: its id is a user attribute of the Optuna study, and the first worker creates
it. It is RUNNING while trials run, FINISHED once the study has all its trials, KILLED when a worker is stopped.
"""

import json
import tempfile
import threading
import warnings
from pathlib import Path

from catdog.tracking.store import client, experiment_id, store_lock

PLOTS = {"optimization_history.png": "plot_optimization_history",
         "intermediate_values.png": "plot_intermediate_values",
         "param_importances.png": "plot_param_importances"}


class StudyRun:
    def __init__(self, study, asking, model: str, space, tune: dict, n_trials: int):
        """asking: the study's lock between workers (tuning.study.one_asker), so that they make one run."""
        self.study, self._lock = study, threading.Lock()
        with store_lock():  # a new SQLite store is made by one process at a time
            self.client, self.uri = client(create=True)
        with asking:
            self.run_id = self._existing() or self._create(model, space, tune, n_trials)
        self.client.update_run(self.run_id, status="RUNNING")

    def _existing(self) -> str | None:
        run_id = self.study.user_attrs.get("mlflow_run_id")
        if run_id is None:
            return None
        from mlflow.exceptions import MlflowException

        try:
            self.client.get_run(run_id)
            return run_id
        except MlflowException:  # the study's run is in another store: this store gets a run of its own
            return None

    def _create(self, model, space, tune, n_trials) -> str:
        run = self.client.create_run(experiment_id(self.client), run_name=self.study.study_name,
                                     tags={"optuna_study": self.study.study_name, "model": model,
                                           "sweep": self.study.study_name})
        sampler = f"TPESampler(seed={tune['seed']} and the trial number, n_startup_trials={tune['startup_trials']})"
        pruner = "NopPruner()" if tune["pruner"] == "none" else \
            f"MedianPruner(n_startup_trials={tune['startup_trials']}, n_warmup_steps={tune['warmup_epochs']})"
        params = {"model": model, "n_trials": n_trials, "sampler": sampler, "pruner": pruner,
                  "direction": "maximize best_val_accuracy", **{f"space.{k.key}": json.dumps(k.spec) for k in space}}
        for key, value in params.items():
            self.client.log_param(run.info.run_id, key, value)
        self.study.set_user_attr("mlflow_run_id", run.info.run_id)
        return run.info.run_id

    def trial_done(self, number: int) -> None:
        """The best value so far, at the trial's number."""
        try:
            best = self.study.best_value
        except ValueError:  # no trial completed yet
            return
        with self._lock:
            self.client.log_metric(self.run_id, "best_value", best, step=number)

    def log_plots(self) -> None:
        """Optuna's figures of the study as it stands, replacing the earlier ones; one it cannot draw yet (too few
        trials for importances, say) is left out."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import optuna
        import optuna.visualization.matplotlib as plots

        optuna.logging.set_verbosity(optuna.logging.ERROR)  # "no complete trials yet": that figure is left out
        with tempfile.TemporaryDirectory() as folder, warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "experimental" warnings of optuna.visualization.matplotlib
            for name, function in PLOTS.items():
                try:
                    axes = getattr(plots, function)(self.study)
                except (ValueError, RuntimeError, ZeroDivisionError):
                    continue
                figure = (axes.flat[0] if hasattr(axes, "flat") else axes).figure
                figure.set_size_inches(9, 5)
                figure.tight_layout()
                figure.savefig(Path(folder) / name, dpi=100)
                plt.close(figure)
                with self._lock:
                    self.client.log_artifact(self.run_id, str(Path(folder) / name))

    def end(self, status: str) -> None:
        with self._lock:
            self.client.set_terminated(self.run_id, status)
