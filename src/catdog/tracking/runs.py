"""MLflow runs: one per `train`, reopened by `evaluate` and `plot` to add test metrics and figures, in the store
of tracking.store.

Importing MLflow and opening a SQLite store take about 3 s, as long as a short training. So a stage hands its
run to a helper process (`python -m catdog.tracking.runs`), started (start_helper) before the stage imports torch:
the two import at once, on two cores; or forked, MLflow imported already, by the warm process (catdog.warm).
The stage's calls go to the helper in order over a pipe and return at once, and the stage waits for it before it
ends. A helper that fails stops the stage at its next call, with its error.

The helper tries the store first, as soon as it has imported MLflow (one short request to a server: a wrong URL is
said in seconds, not after MLflow's minutes of retries), and says "open" on a pipe of its own once the stage's run
is open; the stage waits for that before it trains. So a store that cannot be used stops the stage before its
first epoch, with one line naming the store, what failed and the fix, and nothing is trained for nothing.

A run's data are its MLflow dataset inputs: one per split, named after the data.images folder, its digest DVC's md5
of data/prepared (data.lineage), its context training, validation or test. A training run also logs MLflow's
system metrics (CPU, memory, disk, network, and each NVIDIA GPU's where pynvml finds one) from this helper, every
SYSTEM_METRICS_INTERVAL seconds: they are the machine's, not a process's, so the helper measures the stage too.
"""

import contextlib
import gc
import os
import pickle
import select
import signal
import subprocess
import sys
from pathlib import Path

from catdog import CatdogError, warm
from catdog.data.lineage import prepared_digest
from catdog.paths import RUN_FILE, repo_root
from catdog.tracking.store import (
    experiment_id,
    first_line,
    new_sqlite_problem,
    one_short_try,
    probe,
    store,
    store_lock,
    store_problem,
    unusable,
)

ABANDON = signal.SIGUSR1  # stage -> helper: skip the calls still queued, end the run
HELPER_TIMEOUT = 600  # seconds a finished stage waits for its helper to log what it was sent (artifacts included)
OPEN_TIMEOUT = 300  # seconds a stage waits for its run to open: MLflow's import, the store's first request, the run
# MLflow's default is 10 s, which leaves a training of a few seconds without any; one sample a second costs the niced
# helper a few milliseconds. MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL overrides it.
SYSTEM_METRICS_INTERVAL = "1"
TRAINING_SPLITS = {"train": "training", "val": "validation"}  # split -> the dataset input's context
TEST_SPLITS = {"test": "test"}


_started = None  # the helper start_helper started, until a run takes it


def _helper_process() -> subprocess.Popen:
    src = str(Path(__file__).resolve().parents[2])  # this checkout's catdog, as the stage scripts use
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, (src, os.environ.get("PYTHONPATH"))))}
    # Started with ABANDON blocked (a child inherits the mask): one sent before the helper has set its handler waits
    # for it instead of killing it.
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {ABANDON})
    news, news_end = os.pipe()  # helper -> stage: "open" once the run is, or "error <one line>"
    try:
        # forked by the warm process where one is up, its MLflow imported already (catdog.warm)
        helper = warm.spawn("catdog.tracking.runs", [str(news_end)], env, src, pass_fds=(news_end,)) or \
            subprocess.Popen([sys.executable, "-m", "catdog.tracking.runs", str(news_end)], stdin=subprocess.PIPE,
                             env=env, pass_fds=(news_end,))
    finally:
        os.close(news_end)
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
    helper.news = os.fdopen(news, "r")
    return helper


def start_helper() -> None:
    """Start the next run's helper now, at the top of a stage script. Not in torchrun's processes other than rank
    0, which log nothing. A helper never given a run (the stage failed first) reads the end of its pipe and
    exits."""
    global _started
    if _started is None and os.environ.get("RANK", "0") == "0":
        _started = _helper_process()


def stop_helper() -> None:
    """Stop the helper start_helper started, for a process that will not log (one about to become torchrun)."""
    global _started
    if _started is not None:
        _started.kill()
        _started.wait()
        _started = None


class Run:
    """The stage's side of a run: log_metrics, log_artifact and log_dict as in mlflow, sent to the helper."""

    def __init__(self, opening: dict):
        global _started
        self._helper, _started = _started or _helper_process(), None
        self._send(opening)
        if "start" not in opening:  # evaluate and plot work while their run reopens; errors come at a later call
            return
        try:
            self._wait_open()
        except KeyboardInterrupt:  # stopped while the run opens: it ends KILLED, as once it is open
            with contextlib.suppress(CatdogError, KeyboardInterrupt):
                self.close("KILLED")
            raise

    def _wait_open(self) -> None:
        """Return once the helper has opened the run; its one-line error if the store cannot be used."""
        ready, _, _ = select.select([self._helper.news], [], [], OPEN_TIMEOUT)
        if not ready:
            self._helper.kill()
            raise CatdogError(f"MLflow did not open the run within {OPEN_TIMEOUT} s in {store()[0]}: is the store "
                              "reachable? Unset MLFLOW_TRACKING_URI to log to the repository's mlflow.db")
        line = self._helper.news.readline()
        if line != "open\n":
            raise self._failure(line)

    def _failure(self, read: str = "") -> CatdogError:
        """The error the helper sent as one line before it exited (read: what of it the stage has read already), as
        the stage's own."""
        try:
            self._helper.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self._helper.kill()
            self._helper.wait()
        errors = [line for line in (read + self._helper.news.read()).splitlines() if line.startswith("error ")]
        if errors:
            return CatdogError(errors[-1].removeprefix("error "))
        return CatdogError(f"MLflow logging failed: its helper process exited with {self._helper.returncode}")

    def _send(self, message) -> None:
        if self._helper.poll() is None:
            # Ctrl-C or SIGTERM waits until the message is whole: half a message would make the helper fail the
            # run instead of ending it as the stage says.
            blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
            try:
                pickle.dump(message, self._helper.stdin)
                self._helper.stdin.flush()
                return
            except BrokenPipeError:  # it exited meanwhile
                self._helper.wait()
            finally:
                signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        raise self._failure()

    def log_metrics(self, metrics: dict, step: int | None = None) -> None:
        self._send(("log_metrics", (metrics,), {"step": step}))

    def log_artifact(self, path, artifact_path: str | None = None) -> None:
        self._send(("log_artifact", (str(path),), {"artifact_path": artifact_path}))

    def log_dict(self, dictionary: dict, artifact_file: str) -> None:
        self._send(("log_dict", (dictionary, artifact_file), {}))

    def log_model(self, checkpoint, example) -> None:
        """The checkpoint as the run's MLflow Model (tracking.mlflow_model); example: one (3, s, s) uint8 image."""
        from catdog.models.architectures import checkpoint_classes

        # The signature's column names the positive class: read here, where torch is loaded already, not in the
        # helper, which never imports it.
        self._send(("log_model", (str(checkpoint), example), {"positive": checkpoint_classes(checkpoint)[1]}))

    def close(self, status: str, tags: dict | None = None) -> None:
        """End the run as status (FINISHED, FAILED, KILLED) once the helper has logged everything before; a run
        that failed or was stopped skips what the helper has not logged yet. A slow store can leave hundreds of
        calls queued, and a stage that is being stopped has seconds (torchrun kills it 30 s after SIGTERM): its
        status must land first."""
        if status != "FINISHED" and self._helper.poll() is None:
            self._helper.send_signal(ABANDON)
        self._send(("end", (status,), {"tags": tags or {}}))
        self._helper.stdin.close()
        # Ctrl-C or SIGTERM waits until the helper has written the status: a stage ending on an error and then told
        # to stop (torchrun stops the other processes when one fails) would otherwise exit with its run RUNNING,
        # the status landing later, after the caller has moved on. The wait is bounded, the signal acts after it.
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
        try:
            code = self._helper.wait(timeout=HELPER_TIMEOUT)
        except subprocess.TimeoutExpired:
            self._helper.kill()
            raise CatdogError(f"MLflow logging did not finish within {HELPER_TIMEOUT} s; is the store reachable?")
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        if code:
            raise self._failure()


@contextlib.contextmanager
def _helped(opening: dict):
    """A Run ended FINISHED, or FAILED on an error and KILLED on Ctrl-C or SIGTERM (MLflow itself would leave it
    RUNNING), always after the helper has logged what it was sent."""
    run = Run(opening)
    try:
        yield run
    except BaseException as error:
        # An error may say how its run ends (a pruned trial: KILLED, tagged); Ctrl-C and SIGTERM: KILLED.
        status = getattr(error, "run_status", "KILLED" if isinstance(error, KeyboardInterrupt) else "FAILED")
        # The stage's own error is the one to report, also when a signal held back during close arrives.
        with contextlib.suppress(CatdogError, KeyboardInterrupt):
            run.close(status, getattr(error, "run_tags", None))
        raise
    run.close("FINISHED")


def training_run(model_name: str, params: dict, sweep: str = "", trial: dict | None = None,
                 images: str | None = None):
    """A new run tagged with the model, the git commit, the DVC experiment and the sweep (train.sweep, so that
    the MLflow UI filters a grid search with `tags.sweep = '...'`), with params logged and system metrics logged
    while it is open; its id goes to RUN_FILE. trial: a `catdog tune` trial (tuning.trial.current()), whose run
    is a child of its study's run. images: data.images, logged with the train and val splits as dataset inputs
    (a dvc.lock without data/prepared's md5 stops the stage before it trains)."""
    return _helped({"start": {"model": model_name, "params": params, "sweep": sweep, "trial": trial,
                              "run_name": os.environ.get("DVC_EXP_NAME", "") or model_name},
                    "datasets": images and {"images": images, "splits": TRAINING_SPLITS}})


def resumed_run(images: str | None = None):
    """The run that trained the current model (RUN_FILE), reopened. If the store does not hold it, the helper
    warns and logs nothing. It keeps the status it had: evaluate or plot failing does not undo the training. The
    stage does not wait for it: a store that cannot be used stops it at its next call. images: data.images, logged
    with the test split as a dataset input."""
    if not RUN_FILE.is_file():
        raise CatdogError(f"{RUN_FILE} is missing: train a model first (`dvc repro train`)")
    return _helped({"resume": RUN_FILE.read_text(),
                    "datasets": images and {"images": images, "splits": TEST_SPLITS}})


# ------------------------------------------------------------------------------------------- the helper process

def _try_store(mlflow) -> None:
    """The store's first request, one short try (store.one_short_try). An SQLite store not made yet is only checked:
    it is made when the run opens, not for a stage that fails first."""
    uri, _ = store()
    mlflow.set_tracking_uri(uri)
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).exists():
        problem = new_sqlite_problem(uri)
        if problem:
            raise CatdogError(problem)
        return
    with store_lock():
        try:
            mlflow_client = mlflow.MlflowClient()
        except Exception as error:
            raise unusable(uri, error) from None
        probe(mlflow_client, uri)


def _datasets(datasets: dict | None) -> list:
    """The run's dataset inputs as (MetaDataset, context): one per split, so that each context is its own input
    (MLflow keeps one input per name and digest in a run). Read before the run opens: a dvc.lock without the md5
    stops the stage before it trains, and leaves no run."""
    if not datasets:
        return []
    import json

    from mlflow.data.dataset_source_registry import get_dataset_source_from_json
    from mlflow.data.meta_dataset import MetaDataset

    digest, images = prepared_digest(), datasets["images"]
    # The folder in the user's repository, not in a queued experiment's temporary copy, which is gone once the run
    # ends. MLflow's "local" source by its type: resolving a path would warn that two sources could take it.
    folder = (repo_root() / images).as_posix()
    source = get_dataset_source_from_json(json.dumps({"uri": folder}), source_type="local")
    return [(MetaDataset(source, name=f"{images}:{split}", digest=digest), context)
            for split, context in datasets["splits"].items()]


def _git_commit() -> str:
    result = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True)
    return result.stdout.strip() if result.returncode == 0 else "unknown"


def _open(mlflow, opening: dict, datasets: list):
    """The run to log into and the status to end it with when the stage sends none; None: log nothing."""
    import json

    from catdog.files import write_json

    if "resume" in opening:
        run_id, uri = json.loads(opening["resume"])["run_id"], store()[0]  # _try_store set it as MLflow's
        try:
            status = mlflow.MlflowClient().get_run(run_id).info.status
        except mlflow.exceptions.MlflowException:
            print(f"catdog: warning: MLflow run {run_id} is not in {uri}; not logging to MLflow", file=sys.stderr)
            return None, None
        run = mlflow.start_run(run_id=run_id)
        _log_inputs(mlflow, datasets)
        return run, status
    start, commit = opening["start"], _git_commit()
    tags = {"model": start["model"], "git_commit": commit, "mlflow.source.git.commit": commit,
            "dvc_exp_name": os.environ.get("DVC_EXP_NAME", ""),
            "dvc_exp_baseline_rev": os.environ.get("DVC_EXP_BASELINE_REV", "")}
    if start["sweep"]:
        tags["sweep"] = start["sweep"]
    trial = start.get("trial")
    if trial:  # nested under the study's run in the runs table
        tags.update({"optuna_study": trial["study"], "optuna_trial": str(trial["number"])})
        if trial.get("parent_run_id"):
            tags["mlflow.parentRunId"] = trial["parent_run_id"]
    # System metrics while it trains; MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING=false turns them off.
    os.environ.setdefault("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", SYSTEM_METRICS_INTERVAL)
    system_metrics = None if "MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING" in os.environ else True
    run = mlflow.start_run(experiment_id=experiment_id(), run_name=start["run_name"], tags=tags,
                           log_system_metrics=system_metrics)
    try:
        mlflow.log_params(start["params"])
        _log_inputs(mlflow, datasets)
        write_json(RUN_FILE, {"run_id": run.info.run_id, "experiment_id": run.info.experiment_id})
    except BaseException:
        mlflow.end_run("FAILED")
        raise
    return run, None


def _log_inputs(mlflow, datasets: list) -> None:
    if datasets:
        mlflow.log_inputs([d for d, _ in datasets], [c for _, c in datasets], [None] * len(datasets))


_abandoned = []  # set by ABANDON: the stage failed or was stopped; skip the queued calls and end the run


def _serve(stream, news) -> None:
    """Try the store, open the run the first message asks for and say so on `news`, make each call that follows,
    and end the run with the status of the last message; a stage that dies without one (killed outright) leaves it
    FAILED."""
    import mlflow  # first: the seconds this takes are the ones the stage saves

    _try_store(mlflow)  # while the stage imports torch and loads its data
    try:
        opening = pickle.load(stream)
    except (EOFError, pickle.UnpicklingError):  # the stage stopped before it opened a run
        return
    run, keep_status = _open(mlflow, opening, _datasets(opening.get("datasets")))
    _say(news, "open")
    if run is not None and "start" in opening:
        # A training run ends with log_model, which imports mlflow.pyfunc and pandas (0.6 s): now, while the model
        # trains, not at the end, when the stage waits for this process. In this thread, after the run exists: an
        # import racing the main thread's in a second thread once left the run unopened.
        from catdog.tracking import mlflow_model  # noqa: F401
    status = "FAILED"
    try:
        while True:
            try:
                name, args, kwargs = pickle.load(stream)
            except (EOFError, pickle.UnpicklingError):  # the stage died, maybe mid-message
                break
            if name == "end":
                status = args[0]
                if run is not None and kwargs.get("tags"):
                    mlflow.set_tags(kwargs["tags"])
                break
            if run is None or _abandoned:
                continue
            if name == "log_model":
                from catdog.tracking import mlflow_model

                checkpoint, example = args
                mlflow_model.log(checkpoint, mlflow_model.example_image(example), **kwargs)
            else:
                getattr(mlflow, name)(*args, **kwargs)
    except BaseException:
        if run is not None:  # the store failed (a server gone, say): one short try to say so, not minutes
            with one_short_try(), contextlib.suppress(Exception):
                mlflow.end_run("FAILED")
        raise
    if run is not None:
        mlflow.end_run(keep_status or status)


def _say(news, line: str) -> bool:
    """One line to the stage; False if it is gone."""
    try:
        news.write(f"{line}\n")
        news.flush()
        return True
    except (OSError, ValueError, AttributeError):
        return False


if __name__ == "__main__":
    # Logging can wait, training cannot: on a busy CPU the stage's threads go first (measured: a 10-epoch logistic
    # fit took 1.8 s beside a helper of equal priority, 0.9 s beside this one), and the stage waits at the end.
    os.nice(10)
    # MLflow's system metrics say "Started monitoring" and the like at INFO on the stage's stderr: not the user's news.
    import logging

    logging.getLogger("mlflow.system_metrics").setLevel(logging.WARNING)
    # Ctrl-C in a terminal reaches the whole process group: the stage decides how its run ends, and says so.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(ABANDON, lambda signum, frame: _abandoned.append(signum))
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {ABANDON})
    news = os.fdopen(int(sys.argv[1]), "w") if len(sys.argv) > 1 else None  # the stage's pipe for "open" or errors
    try:
        _serve(sys.stdin.buffer, news)
        gc.freeze()  # the interpreter's last garbage collections would walk all of MLflow's objects: ~0.7 s, waited on
    except Exception as error:  # MlflowException, OSError, sqlite errors: one line, which the stage reports
        line = str(error) if isinstance(error, CatdogError) else \
            store_problem(store()[0], error) or f"MLflow: {first_line(error)}"
        if not _say(news, f"error {line}"):
            print(f"catdog: error: {line}", file=sys.stderr)
        sys.exit(1)
