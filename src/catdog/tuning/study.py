"""The Optuna study of `catdog tune`: its storage (sqlite:///optuna.db in the repository, or a database that
workers on several machines share), the settings of `tune` in params.yaml, one worker at a time asking for a trial
(so that no trial number runs twice and the study stops at exactly its total), and the trials of dead workers
marked FAIL, so that they do not count."""

import contextlib
import os
import socket
import threading
import time
import warnings
from pathlib import Path

from catdog import CatdogError
from catdog.paths import repo_root

STORAGE_FILE = "optuna.db"    # the default storage, in the repository root, ignored by git
HEARTBEAT_S = 20              # a worker records that each of its running trials is alive this often
GRACE_S = 120                 # a running trial silent this long belongs to a dead worker on another machine: FAIL
SQLITE_BUSY_S = 60            # how long a write waits for another worker's (SQLite locks the whole file)
CONNECT_TIMEOUT_S = 10        # a database server that does not answer is said within this
PG_LOCK_KEY = 0x6361_7464_6f67  # the PostgreSQL advisory lock of the workers' asking ("catdog")
PRUNERS = ("median", "none")
COUNTED = ("COMPLETE", "PRUNED", "RUNNING")  # a FAIL does not count towards --trials, nor one enqueued (WAITING)


def settings(params: dict) -> dict:
    """params.yaml's tune settings (seed, startup_trials, pruner, warmup_epochs), checked."""
    tune = params.get("tune") or {}
    out = {"seed": tune.get("seed", 0), "startup_trials": tune.get("startup_trials", 5),
           "pruner": tune.get("pruner", "median"), "warmup_epochs": tune.get("warmup_epochs", 0)}
    for key in ("seed", "startup_trials", "warmup_epochs"):
        if not (isinstance(out[key], int) and not isinstance(out[key], bool) and out[key] >= 0):
            raise CatdogError(f"tune.{key}={out[key]!r} must be an integer >= 0")
    if out["pruner"] not in PRUNERS:
        raise CatdogError(f"tune.pruner={out['pruner']!r} is unknown; valid: {', '.join(PRUNERS)}")
    return out


def pruner(tune: dict):
    import optuna

    if tune["pruner"] == "none":
        return optuna.pruners.NopPruner()
    return optuna.pruners.MedianPruner(n_startup_trials=tune["startup_trials"], n_warmup_steps=tune["warmup_epochs"])


def sampler(tune: dict, number: int):
    """TPE seeded by tune.seed and the trial's number: the values of trial n depend on the seed and the trials before
    it, not on whether the study was stopped and resumed in between (a sampler made once would draw its random
    start-up values again after a resume)."""
    import optuna

    return optuna.samplers.TPESampler(seed=tune["seed"] * 100_003 + number, n_startup_trials=tune["startup_trials"])


def storage_url(url: str | None) -> str:
    """--storage, with a relative SQLite path made absolute: the trials run in DVC's temporary folders."""
    if url is None:
        return f"sqlite:///{repo_root() / STORAGE_FILE}"
    if url.startswith("sqlite:///"):
        return f"sqlite:///{Path(url.removeprefix('sqlite:///')).resolve()}"
    if url.startswith(("postgresql", "mysql")):
        return url
    raise CatdogError(f"--storage {url!r} is not an Optuna storage URL: use sqlite:///FILE (one machine) or "
                      "postgresql+psycopg://USER@HOST/DB (several)")


def shown(url: str) -> str:
    """The URL without its password, for messages."""
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def open_storage(url: str, heartbeat: bool = True):
    """Optuna's RDBStorage at url, which answered a first query; one line naming the storage and the fix if not."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # tune says what happens in its own lines
    # Heartbeats are recorded and read here, with ask and tell, not Study.optimize: its warnings do not apply.
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")
    if url.startswith("sqlite:///"):
        folder = Path(url.removeprefix("sqlite:///")).parent
        if not folder.is_dir() or not os.access(folder, os.W_OK):
            raise CatdogError(f"the Optuna storage {url} cannot be written: its folder {folder} is missing or "
                              "read-only; give --storage sqlite:///A/WRITABLE/FILE.db, or drop --storage")
        engine = {"connect_args": {"timeout": SQLITE_BUSY_S}}
    else:
        engine = {"connect_args": {"connect_timeout": CONNECT_TIMEOUT_S}, "pool_pre_ping": True}
    beat = {"heartbeat_interval": HEARTBEAT_S, "grace_period": GRACE_S} if heartbeat else {}
    for attempt in range(3):
        try:
            # Two workers making a new SQLite storage at once would both create its tables: one at a time.
            with _file_lock(url) if url.startswith("sqlite:///") else contextlib.nullcontext():
                return optuna.storages.RDBStorage(url, engine_kwargs=engine, **beat)
        except Exception as error:
            # Workers on several machines making a new database's tables at once: the one that lost finds them made.
            if attempt < 2 and _lost_creation_race(error):
                time.sleep(1 + attempt)
                continue
            failure = error
            break
    reason = " ".join(str(failure).split())[:200]
    raise CatdogError(f"the Optuna storage {shown(url)} cannot be used: {type(failure).__name__}: {reason}; start "
                      "its server or fix --storage (drop it for sqlite:///optuna.db in the repository)") from None


def _lost_creation_race(error: Exception) -> bool:
    from sqlalchemy.exc import IntegrityError, ProgrammingError

    text = str(error).lower()
    return isinstance(error, (IntegrityError, ProgrammingError)) and ("already exists" in text or "duplicate" in text)


@contextlib.contextmanager
def one_asker(storage, url: str):
    """One worker at a time between counting the trials and asking for the next: a file lock beside an SQLite
    storage, an advisory lock on a PostgreSQL server (after the lock between this worker's --jobs threads)."""
    with _threads:
        if url.startswith("sqlite:///"):
            with _file_lock(url):
                yield
        elif url.startswith("postgresql"):
            from sqlalchemy import text

            with storage.engine.connect() as connection:
                connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": PG_LOCK_KEY})
                try:
                    yield
                finally:
                    connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": PG_LOCK_KEY})
        else:
            yield


_threads = threading.Lock()  # --jobs: the threads of this worker, before the lock between workers


def _file_lock(url: str):
    from filelock import FileLock

    return FileLock(url.removeprefix("sqlite:///") + ".lock")


def open_study(storage, url: str, name: str, model: str, tune: dict):
    """The study `name`, created for model if new; one line if it tunes another model."""
    import optuna

    with one_asker(storage, url):
        study = optuna.create_study(storage=storage, study_name=name, direction="maximize", load_if_exists=True,
                                    sampler=sampler(tune, 0), pruner=pruner(tune))
        tuned = study.user_attrs.get("model")
        if tuned is None:
            study.set_user_attr("model", model)
        elif tuned != model:
            raise CatdogError(f"study {name!r} in {shown(url)} tunes {tuned}, not {model}: pick another --study "
                              f"for {model}, or --model {tuned} to go on with it")
    return study


def worker_id() -> str:
    """This process on this machine: host, boot and process id (a process id alone repeats after a reboot)."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        boot = "?"
    return f"{socket.gethostname()}/{boot}/{os.getpid()}"


def fail_dead_trials(study, storage) -> list[int]:
    """Mark FAIL the running trials whose worker is dead: on this machine at once (its process is gone), elsewhere
    once their heartbeat is older than GRACE_S. Their numbers."""
    import optuna
    from optuna.trial import TrialState

    host, boot, _ = worker_id().split("/")
    failed = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker = trial.user_attrs.get("worker", "")
        parts = worker.split("/")
        if len(parts) == 3 and parts[:2] == [host, boot] and not alive(int(parts[2])):
            storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
            failed.append(trial.number)
    before = {t.number for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,))}
    optuna.storages.fail_stale_trials(study)
    failed += [t.number for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,)) if t.number not in before]
    return sorted(set(failed))


def alive(pid: int) -> bool:
    """Whether process pid runs on this machine."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def counted(study) -> int:
    """The trials that count towards --trials: finished (COMPLETE, PRUNED) or running."""
    from optuna.trial import TrialState

    return len(study.get_trials(deepcopy=False, states=tuple(TrialState[s] for s in COUNTED)))


def next_trial(study, storage, url: str, n_trials: int, tune: dict, distributions: dict):
    """The next trial of the study, RUNNING, with its values sampled; None once the study has n_trials."""
    with one_asker(storage, url):
        fail_dead_trials(study, storage)
        if counted(study) >= n_trials:
            return None
        study.sampler = sampler(tune, len(study.get_trials(deepcopy=False)))  # the next number: asks are serial
        trial = study.ask(distributions)
        trial.set_user_attr("worker", worker_id())
        storage.record_heartbeat(trial._trial_id)
    return trial


class Heartbeat:
    """Records, every HEARTBEAT_S, that this worker's running trials are alive (fail_dead_trials reads it)."""

    def __init__(self, storage):
        self.storage, self.trial_ids, self._stop = storage, set(), threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._beat, daemon=True)

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            with self._lock:
                ids = list(self.trial_ids)
            for trial_id in ids:
                with contextlib.suppress(Exception):  # a missed beat is retried; GRACE_S spans several
                    self.storage.record_heartbeat(trial_id)

    def add(self, trial_id: int) -> None:
        with self._lock:
            self.trial_ids.add(trial_id)

    def remove(self, trial_id: int) -> None:
        with self._lock:
            self.trial_ids.discard(trial_id)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
