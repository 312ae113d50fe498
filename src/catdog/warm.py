"""A warm process for the stage scripts: torch, MLflow and matplotlib imported once, each stage forked from it.

Every stage of a small experiment used to start an interpreter that imported torch (1.4 s), torch._dynamo (1.1 s,
which the first optimizer step needs) or matplotlib, beside an MLflow helper importing MLflow and its SQLite store
(1.8 s): most of a small experiment's own time (benchmarks/RESULTS.md, "A small experiment's fixed cost"). The
first stage script that finds no warm process starts one (`python -m catdog.warm`) and runs as before; the next
ones hand themselves over to it (hand_over): the warm process forks, and the fork becomes the stage, in the
stage's folder, with its arguments, environment, standard streams, umask and signal mask, while the stage's own
process forwards signals to it and exits as it exits. A stage's MLflow helper is forked the same way (spawn).

What makes a fork the same as a fresh interpreter:
- The warm process imports only libraries, never catdog: every fork imports catdog afresh, from the stage's own
  checkout (a DVC temporary experiment folder, say), so an edit to the code always counts.
- It serves only processes whose interpreter, installed packages (their folders' modification times), environment
  (less the variables that change from run to run and are read only when used: DVC_*, CATDOG_*, PYTEST_*, MLflow's
  tracking URI and run) and CPU affinity are the ones it started with: another combination gets a warm process of
  its own (at most MAX_WARM at once). OpenMP reads its settings at import, so thread counts and the order of
  floating-point sums are those of a fresh interpreter, and models and metrics are byte-identical.
- It forks having computed nothing: no OpenMP pool, no CUDA, no open store, and no Python thread.

It leaves after IDLE_SECONDS without work. CATDOG_WARM=0 turns it off (every stage starts cold, as before); so do
torchrun's several processes, and a `train` that torchrun is to replace. Linux only (fork, and descriptors passed
over a Unix socket)."""

import contextlib
import fcntl
import hashlib
import json
import os
import select
import signal
import socket
import subprocess
import sys
import tempfile
import time

IDLE_SECONDS = 600  # a warm process leaves after this long without a stage: ~600 MB held until then
MAX_WARM = 2  # warm processes of one user at once (one per environment); another one stops the least recently used
# read by catdog and these libraries when used, not at import, and different in each run: left out of the match
VOLATILE_PREFIXES = ("DVC_", "CATDOG_", "PYTEST_", "MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "MLFLOW_RUN_ID",
                     "MLFLOW_EXPERIMENT_")
VOLATILE_NAMES = {"PWD", "OLDPWD", "SHLVL", "_", "COLUMNS", "LINES"}
# What the stages and their MLflow helper import, costliest first; imported in this order by the warm process.
LIBRARIES = (
    "torch", "torch._dynamo", "torch.optim", "numpy", "PIL.Image",
    "mlflow", "mlflow.pyfunc", "mlflow.store.tracking.sqlalchemy_store", "mlflow.store.db.utils",
    "mlflow.system_metrics.system_metrics_monitor", "pandas", "alembic.command", "alembic.migration",
    "matplotlib", "matplotlib.pyplot", "matplotlib.backends.backend_agg",
)
SIGNALS_FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2)

_fork = False  # True in a process forked by the warm process: it is the stage already
with open(__file__, "rb") as _source:  # this protocol's version; read now: a fork's file may be gone (a DVC temp dir)
    _CODE = hashlib.sha256(_source.read()).hexdigest()


def forked() -> bool:
    """Whether this process is a stage (or helper) forked by the warm process."""
    return _fork


def available() -> bool:
    return (sys.platform.startswith("linux") and hasattr(socket, "send_fds")
            and os.environ.get("CATDOG_WARM", "1") != "0" and int(os.environ.get("WORLD_SIZE", "1")) == 1)


def _folder() -> str:
    folder = os.path.join(tempfile.gettempdir(), f"catdog-warm-{os.getuid()}")
    if len(folder) > 70:  # a socket's path has at most 107 bytes: the key and a suffix take 35
        folder = f"/tmp/catdog-warm-{os.getuid()}"
    os.makedirs(folder, mode=0o700, exist_ok=True)
    info = os.lstat(folder)
    if info.st_uid != os.getuid() or info.st_mode & 0o077:  # another user's folder: never talk to its socket
        raise OSError(f"{folder} is not this user's own")
    return folder


def _key() -> str:
    """What a warm process must share with a fresh interpreter for its forks to compute the same."""
    env = {k: v for k, v in os.environ.items() if k not in VOLATILE_NAMES and not k.startswith(VOLATILE_PREFIXES)}
    packages = []
    for entry in sys.path:
        if entry.endswith(("site-packages", "dist-packages")):
            with contextlib.suppress(OSError):
                packages.append((entry, os.stat(entry).st_mtime_ns))
    state = [os.path.realpath(sys.executable), sys.version, packages, sorted(env.items()),
             sorted(os.sched_getaffinity(0)), os.getpriority(os.PRIO_PROCESS, 0), _CODE]
    return hashlib.sha256(json.dumps(state).encode()).hexdigest()[:20]


def _connect() -> socket.socket | None:
    """The warm process for this interpreter and environment; None (and one started for next time) if there is
    none yet."""
    try:
        folder = _folder()
        key = _key()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(os.path.join(folder, f"{key}.sock"))
            return sock
        except OSError:
            sock.close()
        _start(folder, key)
    except OSError:  # no temporary folder, a full disk: cold, as before
        pass
    return None


def _start(folder: str, key: str) -> None:
    lock = os.path.join(folder, f"{key}.lock")
    if os.path.exists(lock) and _held(lock):
        return  # starting: it binds its socket once warm
    locks = [os.path.join(folder, name) for name in os.listdir(folder) if name.endswith(".lock")]
    serving = sorted((p for p in locks if _held(p)), key=lambda p: os.stat(p).st_mtime)
    for gone in set(locks) - set(serving):  # the files of warm processes long gone (an environment of the past)
        with contextlib.suppress(OSError):
            if time.time() - os.stat(gone).st_mtime > IDLE_SECONDS:
                for suffix in (".sock", ".log", ".lock"):
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(gone.removesuffix(".lock") + suffix)
    for oldest in serving[:max(len(serving) - MAX_WARM + 1, 0)]:  # the least recently used leaves, once idle
        with contextlib.suppress(OSError, ValueError):
            with open(oldest) as held:
                os.kill(int(held.read()), signal.SIGTERM)
    src = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with open(os.path.join(folder, f"{key}.log"), "w") as log:  # why it did not serve, if it did not
        subprocess.Popen([sys.executable, "-m", "catdog.warm", folder, key], cwd=src, start_new_session=True,
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log)


def _held(lock: str) -> bool:
    try:
        with open(lock) as file:
            fcntl.flock(file, fcntl.LOCK_SH | fcntl.LOCK_NB)
            return False
    except BlockingIOError:
        return True
    except OSError:
        return False


def _request(sock: socket.socket, argv: list, main: tuple, path0: str, env: dict, fds: dict) -> int:
    """Ask for a fork that runs main ("path", script) or ("module", name) with argv; fds: its descriptor number ->
    this process's descriptor. Returns the fork's pid."""
    message = {"argv": argv, "main": main, "path0": path0, "cwd": os.getcwd(), "env": env, "umask": _umask(),
               "sigmask": sorted(int(s) for s in signal.pthread_sigmask(signal.SIG_BLOCK, ())),
               "ignored": _ignored(), "fds": list(fds)}
    socket.send_fds(sock, [json.dumps(message).encode() + b"\n"], list(fds.values()))
    line = _line(sock)
    if not line.startswith(b"pid "):
        raise OSError("the warm process did not start the stage")
    return int(line.split()[1])


def _ignored() -> list[int]:
    """The signals this process ignores, as a background job of a shell ignores SIGINT: so does its fork."""
    return [int(s) for s in SIGNALS_FORWARDED if signal.getsignal(s) == signal.SIG_IGN]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _line(sock: socket.socket, timeout: float | None = None) -> bytes:
    """One line from the warm process; b"" if it closed the connection, or after timeout seconds."""
    data = b""
    while not data.endswith(b"\n"):
        if timeout is not None and not select.select([sock], [], [], timeout)[0]:
            return b""
        chunk = sock.recv(1)
        if not chunk:
            return b""
        data += chunk
    return data


def _exit_code(line: bytes) -> int | None:
    """The fork's exit status as subprocess gives it (-N: killed by signal N); None if the warm process went first."""
    words = line.split()
    return int(words[1]) if len(words) == 2 and words[0] == b"exit" else None


def hand_over(name: str, stay: bool = False) -> None:
    """At the top of a stage script (name: its __name__): run this stage in the warm process and exit as it exits;
    or, where there is none yet (one is started for the next stages), in the fork itself, or with stay, return and
    run here. A process of a spawn pool imports the script under another name, to find its functions: it returns
    too."""
    if _fork or stay or name != "__main__" or not available():
        return
    sock = _connect()
    if sock is None:
        return
    forwarded, passed = [], [s for s in SIGNALS_FORWARDED if s not in _ignored()]
    for signum in passed:  # until the fork's pid is known they wait, then follow it
        signal.signal(signum, lambda signum, frame: forwarded.append(signum))
    try:
        script = os.path.abspath(sys.argv[0])  # __main__.__file__ of a fresh interpreter
        pid = _request(sock, sys.argv, ("path", script), os.path.dirname(script), dict(os.environ),
                       {0: 0, 1: 1, 2: 2})
    except OSError:
        sock.close()
        for signum in passed:
            signal.signal(signum, signal.SIG_DFL if signum != signal.SIGINT else signal.default_int_handler)
        if forwarded:
            signal.raise_signal(forwarded[0])
        return  # run here after all
    for signum in forwarded:
        os.kill(pid, signum)
    for signum in passed:
        signal.signal(signum, lambda signum, frame: os.kill(pid, signum))
    code = _exit_code(_line(sock))
    if code is None:
        sys.exit("catdog: error: the warm process ended before the stage did; run it again, or set CATDOG_WARM=0")
    if code < 0:  # killed by a signal: so is this process, for whoever waits for it
        signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
    sys.exit(code)


class Spawned:
    """A module run by a fork of the warm process, with the parts of subprocess.Popen that a parent uses."""

    def __init__(self, sock: socket.socket, pid: int, stdin, args: list):
        self._sock, self.pid, self.stdin, self.args, self.returncode = sock, pid, stdin, args, None

    def poll(self) -> int | None:
        if self.returncode is None and select.select([self._sock], [], [], 0)[0]:
            self._ended(_line(self._sock))
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is None:
            line = _line(self._sock, timeout)
            if not line and timeout is not None and self._sock.fileno() >= 0 and self._alive():
                raise subprocess.TimeoutExpired(self.args, timeout)
            self._ended(line)
        return self.returncode

    def _alive(self) -> bool:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, 0)
            return True
        return False

    def _ended(self, line: bytes) -> None:
        code = _exit_code(line)
        self.returncode = 1 if code is None else code
        self._sock.close()

    def send_signal(self, signum: int) -> None:
        if self.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signum)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


def spawn(module: str, args: list, env: dict, path0: str, pass_fds: tuple = ()) -> Spawned | None:
    """`python -m module *args` with its standard input a pipe (.stdin), forked by the warm process; None where
    there is none (start it with subprocess.Popen then). Its signal mask is this thread's."""
    if not available():
        return None
    sock = _connect()
    if sock is None:
        return None
    read_end, write_end = os.pipe()
    try:
        fds = {0: read_end, 1: 1, 2: 2, **{fd: fd for fd in pass_fds}}
        pid = _request(sock, [module, *args], ("module", module), path0, env, fds)
    except OSError:
        sock.close()
        os.close(write_end)
        return None
    finally:
        os.close(read_end)
    return Spawned(sock, pid, os.fdopen(write_end, "wb"), [sys.executable, "-m", module, *args])


# The warm process --------------------------------------------------------------------------------------------------


def _warm_up() -> None:
    import gc
    import importlib

    # Arrow's jemalloc (pyarrow, which pandas and so MLflow import) would start a background thread: a forked pool
    # once hung beside one (catdog.data.decode). Without it, jemalloc purges as it frees; the forks see the
    # environment of the processes they replace, and compute nothing with Arrow.
    conf = os.environ.get("JE_ARROW_MALLOC_CONF")
    os.environ["JE_ARROW_MALLOC_CONF"] = f"{conf},background_thread:false" if conf else "background_thread:false"

    for name in LIBRARIES:
        with contextlib.suppress(ImportError):
            importlib.import_module(name)
    with contextlib.suppress(Exception):  # MLflow's tables as SQLAlchemy classes: what opening a store does first
        import sqlalchemy.orm

        sqlalchemy.orm.configure_mappers()
    gc.collect()
    gc.freeze()  # the forks' garbage collections skip the libraries' objects, and leave their pages shared


def _serve(folder: str, key: str) -> dict | None:
    """Serve requests until idle; returns, in a fork, the request that fork is to run."""
    lock = open(os.path.join(folder, f"{key}.lock"), "a")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return None  # another is starting or serving
    lock.truncate(0)
    lock.write(f"{os.getpid()}\n")  # for `kill $(cat /tmp/catdog-warm-$UID/*.lock)`
    lock.flush()
    os.chdir("/")
    _warm_up()
    import threading

    # A Python thread would be missing from the forks, holding whatever lock it held; so would jemalloc's. The
    # one native pool left, OpenBLAS's (numpy), shuts down before a fork and starts again in the fork.
    names = {open(f"/proc/self/task/{task}/comm").read().strip() for task in os.listdir("/proc/self/task")}
    if threading.active_count() != 1 or "jemalloc_bg_thd" in names:
        print(f"catdog.warm: not serving: threads {threading.enumerate()}, native {sorted(names)}", file=sys.stderr)
        return None
    path = os.path.join(folder, f"{key}.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(f"{path}.{os.getpid()}")
    listener.listen(64)
    os.replace(f"{path}.{os.getpid()}", path)  # clients find the socket once it is served
    served = (path, os.stat(path).st_ino)
    try:
        return _loop(listener, lock, served)
    finally:
        if not _fork:
            _unlink(served)


def _unlink(served: tuple) -> None:
    """Remove the socket's name, unless a newer warm process has taken it."""
    path, inode = served
    with contextlib.suppress(OSError):
        if os.stat(path).st_ino == inode:
            os.unlink(path)


def _loop(listener: socket.socket, lock, served: tuple) -> dict | None:
    global _fork
    wake_read, wake_write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.set_wakeup_fd(wake_write)
    signal.signal(signal.SIGCHLD, lambda signum, frame: None)
    stopping = []  # SIGTERM (`kill`, or a newer warm process): serve no more, leave once the forks have ended
    signal.signal(signal.SIGTERM, lambda signum, frame: stopping.append(signum))
    children = {}  # pid -> the connection of the process waiting for it
    idle_since = time.monotonic()
    while children or not stopping and time.monotonic() - idle_since < IDLE_SECONDS:
        watched = [wake_read, *(c for c in children.values() if c.fileno() >= 0)] + ([] if stopping else [listener])
        timeout = None if children or stopping else max(IDLE_SECONDS - (time.monotonic() - idle_since), 0)
        for item in select.select(watched, [], [], timeout)[0]:
            if item is listener:
                os.utime(lock.fileno())  # when it last served: the least recently used leaves first
                request = _accept(listener, children)
                if request is not None:  # this is the fork
                    _fork = True
                    listener.close()
                    lock.close()
                    for fd in (wake_read, wake_write):
                        os.close(fd)
                    return request
            elif item is wake_read:
                with contextlib.suppress(BlockingIOError):
                    os.read(wake_read, 4096)
            else:  # the waiting process is gone (killed): its stage is stopped as SIGTERM stops it
                pid = next(p for p, c in children.items() if c is item)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)
                children[pid] = _Gone()
                item.close()
        _reap(children)
        if children:
            idle_since = time.monotonic()
        if stopping and listener.fileno() >= 0:  # new stages start cold, or with a newer warm process
            _unlink(served)
            listener.close()
    return None


class _Gone:
    """In place of the connection of a waiting process that has gone."""

    def fileno(self) -> int:
        return -1

    def sendall(self, data: bytes) -> None:
        pass

    def close(self) -> None:
        pass


def _accept(listener: socket.socket, children: dict) -> dict | None:
    conn, _ = listener.accept()
    try:
        conn.settimeout(10)
        data, fds, _, _ = socket.recv_fds(conn, 1 << 20, 64)
        while not data.endswith(b"\n"):
            more = conn.recv(1 << 20)
            if not more:
                raise OSError("incomplete request")
            data += more
        request = json.loads(data)
        request["passed"] = dict(zip(request["fds"], fds))
    except (OSError, ValueError):
        conn.close()
        return None
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals())  # the fork sets its own mask
    pid = os.fork()
    if pid == 0:
        conn.close()
        for other in children.values():
            other.close()
        return request
    signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
    for fd in fds:
        os.close(fd)
    children[pid] = conn
    conn.sendall(f"pid {pid}\n".encode())
    return None


def _reap(children: dict) -> None:
    while children:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        conn = children.pop(pid, None)
        if conn is not None:
            with contextlib.suppress(OSError):
                conn.sendall(f"exit {os.waitstatus_to_exitcode(status)}\n".encode())
            conn.close()


def _become(request: dict) -> None:
    """In the fork: take the waiting process's place, then run its script or module as __main__."""
    import io
    import runpy

    signal.set_wakeup_fd(-1)
    for signum in SIGNALS_FORWARDED:  # as a fresh interpreter started by the waiting process sets them
        default = signal.default_int_handler if signum == signal.SIGINT else signal.SIG_DFL
        signal.signal(signum, signal.SIG_IGN if signum in request["ignored"] else default)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    # Received descriptors may sit on numbers they are to replace: all out of the way first, then into place.
    moved = {int(target): fcntl.fcntl(fd, fcntl.F_DUPFD, 1024) for target, fd in request["passed"].items()}
    for fd in request["passed"].values():
        os.close(fd)
    for target, fd in moved.items():
        os.dup2(fd, target)  # inheritable, as in a process started with them
        os.close(fd)
    os.chdir(request["cwd"])
    if "multiprocessing.process" in sys.modules:  # read at its import, for a spawn pool's processes to find __main__
        sys.modules["multiprocessing.process"].ORIGINAL_DIR = request["cwd"]
    os.umask(request["umask"])
    os.environ.clear()
    os.environ.update(request["env"])
    for name in [m for m in sys.modules if m == "catdog" or m.startswith("catdog.")]:
        if name != __name__:
            del sys.modules[name]
    sys.modules["catdog.warm"] = sys.modules[__name__]  # the same flag, whichever name imports it
    sys.argv = list(request["argv"])
    sys.orig_argv = [sys.executable, *(["-m"] if request["main"][0] == "module" else []), *request["argv"]]
    sys.path[0] = request["path0"]
    for fd, name, mode in ((0, "stdin", "r"), (1, "stdout", "w"), (2, "stderr", "w")):
        old = getattr(sys, name)
        raw = io.FileIO(fd, mode, closefd=False)
        buffered = io.BufferedReader(raw) if mode == "r" else io.BufferedWriter(raw)
        stream = io.TextIOWrapper(buffered, encoding=old.encoding, errors=old.errors,
                                  line_buffering=raw.isatty() or name == "stderr",
                                  write_through=mode == "w" and old.write_through)
        setattr(sys, name, stream)
        setattr(sys, f"__{name}__", stream)
    signal.pthread_sigmask(signal.SIG_SETMASK, {signal.Signals(s) for s in request["sigmask"]})
    kind, target = request["main"]
    code, interrupted = 0, False
    try:
        if kind == "module":
            runpy.run_module(target, run_name="__main__", alter_sys=True)
        else:
            runpy.run_path(target, run_name="__main__")
    except SystemExit as done:  # as the interpreter reads it
        code = done.code if isinstance(done.code, int) else 0 if done.code is None else 1
        if not isinstance(done.code, int | None):
            print(done.code, file=sys.stderr)
    except BaseException:
        sys.excepthook(*sys.exc_info())
        code, interrupted = 1, isinstance(sys.exc_info()[1], KeyboardInterrupt)
    _exit(code, interrupted)


def _exit(code: int, interrupted: bool) -> None:
    """Exit as the interpreter does (threads joined, atexit, streams flushed), less its tear-down of every module:
    in a fork, freeing the warm process's objects would copy their pages first (0.4 s a process, measured)."""
    import atexit
    import threading

    # What the interpreter's exit calls first: threading's exit hooks (a ThreadPoolExecutor's, which tells its
    # workers to stop), then it joins the threads that are not daemons.
    threading._shutdown()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    if interrupted:  # an uncaught Ctrl-C: the interpreter ends by SIGINT, for the shell to see
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
    os._exit(code)


if __name__ == "__main__":
    _request_to_run = _serve(sys.argv[1], sys.argv[2])
    if _request_to_run is not None:
        _become(_request_to_run)
