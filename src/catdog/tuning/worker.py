"""A `catdog tune` worker: asks the study for trials and runs each as a DVC experiment, `jobs` at a time.

A trial is `dvc exp run --temp -n <study>-<number> -S model=<model> -S train.sweep=<study> -S <sampled values>`,
with the trial in the environment (tuning.trial), so that its train stage reports each epoch and stops when pruned.
Its value is the experiment's best_val_accuracy (metrics/train.json). A pruned trial's train stage fails on purpose:
DVC runs neither evaluate nor plot and keeps no experiment. Ctrl-C or SIGTERM stops the running trials, marks them
FAIL (they do not count) and leaves the study to the next `catdog tune`; a worker killed outright has its trials
marked FAIL by the next one (tuning.study.fail_dead_trials).
"""

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from catdog import CatdogError
from catdog.paths import repo_root
from catdog.tuning import space as search_space
from catdog.tuning.remote import check_remotes
from catdog.tuning.study import (
    Heartbeat,
    next_trial,
    one_asker,
    open_storage,
    open_study,
    settings,
    shown,
    storage_url,
)
from catdog.tuning.trial import TRIAL_ENV

LOGS = Path(".cache/tune")    # one log per trial: the output of its `dvc exp run`
STOP_GRACE_S = 60             # a stopped trial's DVC gets this long to clean up after Ctrl-C, then SIGKILL
EXP_NAME = r"^[A-Za-z0-9][A-Za-z0-9_-]*$"  # a study name DVC and git accept in <study>-<number>


@dataclass
class Worker:
    params: dict
    model: str
    n_trials: int
    jobs: int
    study_name: str
    storage: str | None
    timeout: float | None
    push: str | None
    env: dict = field(default_factory=lambda: dict(os.environ))  # the trials' environment, before MLflow's changes

    def run(self) -> None:
        self.space = search_space.knobs(self.params, self.model)
        self.tune = settings(self.params)
        check_space(self.params, self.model, self.space)
        self.root = repo_root()
        check_repository(self.root)
        if self.push:  # before the study opens: a remote that cannot take the trials stops the worker now
            check_remotes(self.root, self.push)
        self.url = storage_url(self.storage)
        self.optuna_storage = open_storage(self.url)
        self.study = open_study(self.optuna_storage, self.url, self.study_name, self.model, self.tune)
        from catdog.tuning.study_run import StudyRun

        self.parent = StudyRun(self.study, one_asker(self.optuna_storage, self.url), self.model, self.space, self.tune,
                               self.n_trials)
        self.distributions = search_space.distributions(self.space)
        self.deadline = time.monotonic() + self.timeout if self.timeout else None
        self.stopping, self.failure = threading.Event(), None
        self.running: dict[int, subprocess.Popen] = {}
        print(f"study {self.study_name} ({self.model}) in {shown(self.url)}: {self.n_trials} trials, "
              f"{self.jobs} at a time; MLflow run {self.parent.run_id}")
        status = "KILLED"
        try:
            with Heartbeat(self.optuna_storage) as self.heartbeat:
                threads = [threading.Thread(target=self._work, daemon=True) for _ in range(self.jobs)]
                for thread in threads:
                    thread.start()
                try:
                    while any(t.is_alive() for t in threads):
                        for thread in threads:
                            thread.join(timeout=0.5)  # short waits: Ctrl-C and SIGTERM are handled in between
                except KeyboardInterrupt:
                    self._stop_trials()
                    for thread in threads:
                        thread.join(timeout=STOP_GRACE_S + 30)
                    raise
            # Trials of other workers still running: the run stays open for them.
            status = "FAILED" if self.failure else "RUNNING" if self._others() else "FINISHED"
        finally:
            with contextlib.suppress(Exception):
                self.parent.log_plots()
            if status != "RUNNING":
                self.parent.end(status)
        if self.failure:
            raise self.failure
        self._summary()

    # ----------------------------------------------------------------------------------------- the trials

    def _work(self) -> None:
        from optuna.trial import TrialState

        while not self.stopping.is_set() and (self.deadline is None or time.monotonic() < self.deadline):
            try:
                trial = next_trial(self.study, self.optuna_storage, self.url, self.n_trials, self.tune,
                                   self.distributions)
                if trial is None:
                    return
                try:
                    self._run_trial(trial)
                except BaseException:
                    with contextlib.suppress(Exception):
                        self.study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
                    raise
            except CatdogError as error:
                self.failure = self.failure or error
                self.stopping.set()
            except Exception as error:  # the storage failing mid-study, say: one line, the other trials stopped
                self.failure = self.failure or CatdogError(f"tune failed: {type(error).__name__}: "
                                                           f"{' '.join(str(error).split())[:300]}")
                self.stopping.set()

    def _run_trial(self, trial) -> None:
        from optuna.trial import TrialState

        number, name = trial.number, f"{self.study_name}-{trial.number}"
        values = search_space.values(self.space, trial.params)
        overrides = search_space.overrides(self.model, self.params["models"][self.model], values)
        shown = " ".join(f"{k}={_short(v)}" for k, v in values.items())
        print(f"trial {number} ({name}): {shown}", flush=True)
        log = self.root / LOGS / self.study_name / f"{number}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, "-m", "dvc", "exp", "run", "--temp", "-n", name, "-S", f"model={self.model}",
                   "-S", f"train.sweep={self.study_name}", *[a for o in overrides for a in ("-S", o)]]
        info = {"storage": self.url, "study": self.study_name, "trial_id": trial._trial_id, "number": number,
                "parent_run_id": self.parent.run_id, "tune": self.tune, "worker_pid": os.getpid()}
        start = time.monotonic()
        self.heartbeat.add(trial._trial_id)
        try:
            with open(log, "w") as output:
                process = subprocess.Popen(command, cwd=self.root, env={**self.env, TRIAL_ENV: json.dumps(info)},
                                           stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT,
                                           start_new_session=True)  # its own group: _stop_trials stops it whole
                self.running[number] = process
                code = process.wait()
        finally:
            self.running.pop(number, None)
            self.heartbeat.remove(trial._trial_id)
        seconds = time.monotonic() - start
        attrs = self.optuna_storage.get_trial(trial._trial_id).user_attrs
        if code == 0:
            value = self._value(name)
            self.study.tell(trial, value)
            print(f"trial {number}: val accuracy {value:.4f} in {seconds:.0f} s", flush=True)
            if self.push:
                self._push(name)
        elif "pruned_epoch" in attrs and not self.stopping.is_set():
            self.study.tell(trial, state=TrialState.PRUNED)
            _forget_failed_run(self.root, name)
            print(f"trial {number}: pruned at epoch {attrs['pruned_epoch']} in {seconds:.0f} s", flush=True)
        else:
            self.study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
            _forget_failed_run(self.root, name)
            if self.stopping.is_set():
                print(f"trial {number}: stopped, marked FAIL (it does not count)", flush=True)
                return
            reason = _last_error(log.read_text(errors="replace"))
            raise CatdogError(f"trial {number} ({name}) failed: {reason}; its log: {log}")
        self.parent.trial_done(number)

    def _value(self, name: str) -> float:
        """best_val_accuracy of the experiment just made, read from its git commit."""
        refs = subprocess.run(["git", "for-each-ref", "--format=%(refname)", "refs/exps"], cwd=self.root,
                              capture_output=True, text=True, check=True).stdout.split()
        ref = next((r for r in refs if r.endswith(f"/{name}")), None)
        if ref is None:
            raise CatdogError(f"DVC made no experiment {name}: see `dvc exp show`")
        text = subprocess.run(["git", "show", f"{ref}:metrics/train.json"], cwd=self.root, capture_output=True,
                              text=True, check=True).stdout
        return float(json.loads(text)["best_val_accuracy"])

    def _push(self, name: str) -> None:
        result = subprocess.run([sys.executable, "-m", "dvc", "exp", "push", self.push, name], cwd=self.root,
                                env=self.env, capture_output=True, text=True)
        if result.returncode != 0:
            print(f"catdog: warning: `dvc exp push {self.push} {name}` failed: "
                  f"{_last_error(result.stdout + result.stderr)}", file=sys.stderr, flush=True)

    def _stop_trials(self) -> None:
        """Ctrl-C or SIGTERM: the running trials get SIGINT (DVC removes its temporary folder, the stage ends its
        MLflow run KILLED), then SIGKILL after STOP_GRACE_S."""
        self.stopping.set()
        print("catdog: stopping the running trials (they will be marked FAIL)...", file=sys.stderr, flush=True)
        processes = list(self.running.values())
        for process in processes:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGINT)
        deadline = time.monotonic() + STOP_GRACE_S
        for process in processes:
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)

    # ------------------------------------------------------------------------------------------ the study

    def _others(self) -> bool:
        """Whether trials of other workers are running."""
        from optuna.trial import TrialState

        return bool(self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)))

    def _summary(self) -> None:
        from optuna.trial import TrialState

        trials = self.study.get_trials(deepcopy=False)
        count = {s: sum(t.state == TrialState[s] for t in trials) for s in ("COMPLETE", "PRUNED", "FAIL", "RUNNING")}
        print(f"study {self.study_name}: {count['COMPLETE']} complete, {count['PRUNED']} pruned, {count['FAIL']} "
              f"failed (not counted), {count['RUNNING']} running, of {self.n_trials}")
        if count["COMPLETE"]:
            best = self.study.best_value
            tied = [f"{self.study_name}-{t.number}" for t in trials
                    if t.state == TrialState.COMPLETE and t.value == best]
            print(f"best val accuracy so far: {best:.4f} ({', '.join(tied)})\n"
                  f"  catdog best --sweep {self.study_name}   # the winner (ties: lower val loss), its test accuracy")


def check_space(params: dict, model: str, space) -> None:
    """Each knob's bounds (or choices) put into the model's entry pass the `check` stage's test: a space that would
    fail its trials fails before any."""
    from catdog.models.registry import check_model

    cfg = params["models"][model]
    for knob in space:
        extremes = knob.spec["choices"] if "choices" in knob.spec else [knob.spec["low"], knob.spec["high"]]
        for value in extremes:
            entry = search_space.apply(cfg, {knob.key: value})
            try:
                check_model({**params, "model": model, "models": {**params["models"], model: entry}})
            except CatdogError as error:
                raise CatdogError(f"tune.space.{model}.{knob.key}: {value!r} gives an invalid entry ({error}); "
                                  "narrow the range") from None


def check_repository(root: Path) -> None:
    result = subprocess.run(["git", "rev-parse", "--verify", "HEAD"], cwd=root, capture_output=True, text=True)
    if result.returncode != 0 or not (root / "dvc.yaml").is_file():
        raise CatdogError(f"{root} is not a DVC repository with a git commit: run `catdog tune` in the repository "
                          "(each trial is a DVC experiment of its last commit)")


def _forget_failed_run(root: Path, name: str) -> None:
    """DVC keeps a record of a failed `dvc exp run --temp` in .dvc/tmp/exps/run/<id>/: a pruned or stopped trial
    leaves none."""
    import shutil

    for record in (root / ".dvc" / "tmp" / "exps" / "run").glob("*/*.run"):
        with contextlib.suppress(OSError, ValueError):
            if json.loads(record.read_text()).get("name") == name:
                shutil.rmtree(record.parent)


def _last_error(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith(("catdog: error:", "ERROR:"))]
    return (errors[0] if errors else lines[-1] if lines else "no output").removeprefix("catdog: error: ")[:300]


def _short(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else json.dumps(value) if isinstance(value, dict) else str(value)
