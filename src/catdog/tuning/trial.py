"""The train stage's side of a `catdog tune` trial: each epoch's validation accuracy reported to the study, and the
trial stopped when the study's pruner says so.

`catdog tune` runs each trial as `dvc exp run` with the trial in the environment (TRIAL_ENV, JSON). Outside tune
the variable is unset and the stage trains as always; a trial that is not pruned trains exactly as `dvc repro`
with its params does, so `dvc exp apply` and `dvc repro` reproduce its metrics.
"""

import json
import os

from catdog import CatdogError
from catdog.tuning.study import alive, open_storage, pruner

TRIAL_ENV = "CATDOG_TUNE_TRIAL"  # {"storage", "study", "trial_id", "number", "parent_run_id", "tune", "worker_pid"}


class Pruned(CatdogError):
    """The pruner stopped the trial: the stage ends, its MLflow run KILLED and tagged, no output written."""

    run_status = "KILLED"

    def __init__(self, message: str, epoch: int):
        super().__init__(message)
        self.run_tags = {"optuna_state": "PRUNED", "pruned_epoch": str(epoch)}


def current() -> dict | None:
    """The trial this stage runs for, or None outside `catdog tune`."""
    text = os.environ.get(TRIAL_ENV)
    return json.loads(text) if text else None


class Reporter:
    """Reports each epoch's validation accuracy to the trial and raises Pruned when the pruner stops it."""

    def __init__(self, info: dict):
        import optuna

        self.info = info
        storage = open_storage(info["storage"], heartbeat=False)
        study = optuna.load_study(study_name=info["study"], storage=storage, pruner=pruner(info["tune"]))
        self.trial = optuna.trial.Trial(study, info["trial_id"])

    def __call__(self, epoch: int, val_accuracy: float) -> None:
        if not alive(self.info["worker_pid"]):  # killed outright: the next `catdog tune` marks this trial FAIL
            raise CatdogError(f"the `catdog tune` worker of trial {self.info['number']} is gone; run it again to go "
                              "on with the study")
        try:
            self.trial.report(val_accuracy, epoch)
            prune = self.trial.should_prune()
        except RuntimeError as error:  # the trial was marked FAIL meanwhile: its worker was stopped
            raise CatdogError(f"trial {self.info['number']} of study {self.info['study']} is over ({error}); "
                              "run `catdog tune` again to go on with the study") from None
        if prune:
            self.trial.set_user_attr("pruned_epoch", epoch)
            raise Pruned(f"trial {self.info['number']} of study {self.info['study']} pruned at epoch {epoch}: val "
                         f"accuracy {val_accuracy:.4f} is below the median of the earlier trials there (tune.pruner)",
                         epoch)
