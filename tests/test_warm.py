"""catdog.warm: a stage handed over to the warm process gets what a fresh interpreter would (folder, arguments,
environment, streams, umask, exit status, signals) and the code as it is now, and a process of another environment
is not handed over. Each test has a temporary folder of its own (TMPDIR), so its own warm process."""

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
WARM_UP = 180  # seconds: the warm process imports torch, MLflow and matplotlib, on a CPU busy with other tests

SCRIPT = """
import sys
sys.path.insert(0, {src!r})
from catdog import warm
warm.hand_over(__name__)
import json, os, signal, time
if __name__ == "__main__":  # a spawn pool's processes import this file too
    what = sys.argv[1] if len(sys.argv) > 1 else "state"
    if what == "state":
        mask = os.umask(0)
        print(json.dumps({{"fork": warm._fork, "cwd": os.getcwd(), "argv": sys.argv, "file": __file__,
                          "path0": sys.path[0], "stdin": sys.stdin.read(), "umask": mask,
                          "env": os.environ.get("CATDOG_SOMETHING"), "pid_differs": os.getpid() != int(sys.argv[2]),
                          "sigint": str(signal.getsignal(signal.SIGINT)),
                          "sigterm": str(signal.getsignal(signal.SIGTERM))}}))
        print("to stderr", file=sys.stderr)
    elif what == "exit":
        sys.exit(int(sys.argv[2]) if sys.argv[2].isdigit() else sys.argv[2])
    elif what == "raise":
        raise ValueError("a bug")
    elif what == "wait":
        def stopped(signum, frame):
            open("stopped", "w").write(signal.Signals(signum).name)
            sys.exit(130)
        signal.signal(signal.SIGTERM, stopped)
        print(warm._fork, flush=True)
        time.sleep(120)
    elif what == "code":
        from catdog import paths
        print(warm._fork, paths.SOMETHING_NEW)
    elif what == "executor":  # left open, as MLflow leaves its artifact uploads' pool
        import concurrent.futures
        concurrent.futures.kept = concurrent.futures.ThreadPoolExecutor(2)  # held by a module, as MLflow's
        print(warm._fork, concurrent.futures.kept.submit(abs, -7).result())
    elif what == "pool":
        from multiprocessing import get_context
        with get_context("spawn").Pool(2) as pool:
            print(warm._fork, pool.map(abs, [-1, -2, 3]))
"""


@pytest.fixture
def warm_env():
    """An environment with a temporary folder of its own (short: a socket's path has at most 107 bytes); its warm
    processes are stopped at the end."""
    folder = Path(tempfile.mkdtemp(prefix="catdog-test-warm-", dir="/tmp"))
    env = {**os.environ, "TMPDIR": str(folder)}
    env.pop("CATDOG_WARM", None)
    yield env
    for lock in (folder / f"catdog-warm-{os.getuid()}").glob("*.lock"):
        pid = lock.read_text().strip()
        if pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGTERM)
    shutil.rmtree(folder, ignore_errors=True)


def script(tmp_path, src=SRC) -> Path:
    path = tmp_path / "stage.py"
    path.write_text(SCRIPT.format(src=str(src)))
    return path


def run(path, *args, env, cwd=None, stdin="", **kwargs):
    return subprocess.run([sys.executable, str(path), *args], env=env, cwd=cwd or path.parent, input=stdin,
                          capture_output=True, text=True, timeout=120, **kwargs)


def warmed(path, env) -> None:
    """Run the script once (it starts the warm process), then wait, bounded, until the warm process serves."""
    run(path, "exit", "0", env=env)
    folder = Path(env["TMPDIR"]) / f"catdog-warm-{os.getuid()}"  # as catdog.warm names it
    deadline = time.monotonic() + WARM_UP
    while not list(folder.glob("*.sock")):
        assert time.monotonic() < deadline, "no warm process served within the deadline"
        time.sleep(0.2)


def test_a_forked_stage_gets_what_a_fresh_interpreter_gets(tmp_path, warm_env):
    path = script(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    results = {}
    for mode in ("cold", "warm"):
        env = {**warm_env, "CATDOG_SOMETHING": mode, "DVC_EXP_NAME": mode}  # vary from run to run
        if mode == "cold":
            env["CATDOG_WARM"] = "0"
        else:
            warmed(path, env)
        # as a shell's background job starts: SIGINT ignored
        done = run(path, "state", str(os.getpid()), env=env, cwd=elsewhere, stdin=f"input {mode}",
                   preexec_fn=lambda: (os.umask(0o027), signal.signal(signal.SIGINT, signal.SIG_IGN)))
        assert done.returncode == 0, done.stderr
        assert done.stderr == "to stderr\n"
        results[mode] = json.loads(done.stdout)
    cold, warm = results["cold"], results["warm"]
    assert (cold["fork"], warm["fork"]) == (False, True)
    assert warm["env"] == "warm" and warm["stdin"] == "input warm"
    assert warm["sigint"] == str(signal.SIG_IGN)
    for key in ("cwd", "argv", "file", "path0", "umask", "pid_differs", "sigint", "sigterm"):
        assert warm[key] == cold[key], key


@pytest.mark.parametrize("args, code, stderr", [
    (("exit", "3"), 3, ""),
    (("exit", "catdog: error: a problem"), 1, "catdog: error: a problem\n"),
])
def test_the_exit_status_and_message_are_the_stages(tmp_path, warm_env, args, code, stderr):
    path = script(tmp_path)
    warmed(path, warm_env)
    done = run(path, *args, env=warm_env)
    assert (done.returncode, done.stderr) == (code, stderr)


def test_an_uncaught_error_prints_its_traceback(tmp_path, warm_env):
    path = script(tmp_path)
    warmed(path, warm_env)
    done = run(path, "raise", env=warm_env)
    assert done.returncode == 1
    assert "Traceback" in done.stderr and done.stderr.strip().endswith("ValueError: a bug")


def waiting(path, env) -> subprocess.Popen:
    process = subprocess.Popen([sys.executable, str(path), "wait"], env=env, cwd=path.parent,
                               stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline() == "True\n"  # forked, and its handler is set
    return process


def test_sigterm_to_the_stage_reaches_its_fork(tmp_path, warm_env):
    path = script(tmp_path)
    warmed(path, warm_env)
    process = waiting(path, warm_env)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) == 130
    assert (tmp_path / "stopped").read_text() == "SIGTERM"


def test_a_killed_stage_process_stops_its_fork(tmp_path, warm_env):
    """DVC or a scheduler may SIGKILL the stage's process: the warm process stops the fork as SIGTERM would."""
    path = script(tmp_path)
    warmed(path, warm_env)
    process = waiting(path, warm_env)
    process.kill()
    process.wait(timeout=60)
    deadline = time.monotonic() + 60
    while not (tmp_path / "stopped").exists():
        assert time.monotonic() < deadline, "the fork outlived its stage's process"
        time.sleep(0.1)
    assert (tmp_path / "stopped").read_text() == "SIGTERM"


def test_an_edit_to_catdog_counts_in_the_next_fork(tmp_path, warm_env):
    """The warm process never imports catdog: each fork imports the stage's own checkout as it is."""
    src = tmp_path / "src"
    (src / "catdog").mkdir(parents=True)
    for name in ("__init__.py", "warm.py", "paths.py"):
        (src / "catdog" / name).write_text((SRC / "catdog" / name).read_text())
    path = script(tmp_path, src)
    warmed(path, warm_env)
    for value in ("first", "second"):
        with open(src / "catdog" / "paths.py", "a") as paths:
            paths.write(f"\nSOMETHING_NEW = {value!r}\n")
        done = run(path, "code", env=warm_env)
        assert done.stdout == f"True {value}\n", done.stderr


def test_a_process_of_another_environment_is_not_handed_over(tmp_path, warm_env):
    """OpenMP reads OMP_NUM_THREADS once, at import: a warm process started without it cannot serve a stage with
    it, whose sums would be in another order."""
    path = script(tmp_path)
    warmed(path, warm_env)
    process = subprocess.Popen([sys.executable, str(path), "wait"], env={**warm_env, "OMP_NUM_THREADS": "1"},
                               cwd=tmp_path, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout.readline() == "False\n"
    finally:
        process.kill()
        process.wait()


def test_a_spawn_pool_works_in_a_fork(tmp_path, warm_env):
    """prepare decodes with a spawn pool, whose processes import the stage script by its path: not handed over."""
    path = script(tmp_path)
    warmed(path, warm_env)
    done = run(path, "pool", env=warm_env)
    assert (done.returncode, done.stdout) == (0, "True [1, 2, 3]\n"), done.stderr


def test_catdog_warm_0_runs_every_stage_cold(tmp_path, warm_env):
    path = script(tmp_path)
    warmed(path, warm_env)
    done = run(path, "state", str(os.getpid()), env={**warm_env, "CATDOG_WARM": "0"})
    assert json.loads(done.stdout)["fork"] is False, done.stderr


def test_a_fork_exits_as_the_interpreter_does_with_a_thread_pool_left_open(tmp_path, warm_env):
    """The interpreter's exit tells a ThreadPoolExecutor's workers to stop before it joins them: so does a fork's."""
    path = script(tmp_path)
    warmed(path, warm_env)
    done = run(path, "executor", env=warm_env)
    assert (done.returncode, done.stdout) == (0, "True 7\n"), done.stderr


def served_by(path, env) -> bool:
    """Whether a run of the script in env is forked by a warm process (starting one if there is none)."""
    done = run(path, "state", str(os.getpid()), env=env)
    return json.loads(done.stdout)["fork"]


def test_a_third_environment_stops_the_least_recently_used_warm_process(tmp_path, warm_env):
    """At most MAX_WARM (2) warm processes: a third environment's stops the one that served longest ago, which
    serves no more and leaves once its forks have ended."""
    path = script(tmp_path)
    one, two = ({**warm_env, "OMP_NUM_THREADS": n} for n in ("1", "2"))
    folder = Path(warm_env["TMPDIR"]) / f"catdog-warm-{os.getuid()}"
    deadline = time.monotonic() + WARM_UP
    locks = []
    for env in (one, two):
        while not served_by(path, env):
            assert time.monotonic() < deadline, "no warm process served within the deadline"
            time.sleep(0.2)
        locks += [lock for lock in folder.glob("*.lock") if lock not in locks]
    first = locks[0]
    pid = int(first.read_text())
    waiting_stage = waiting(path, one)  # the first one forks a stage that waits
    assert served_by(path, two)  # the second served last
    assert not served_by(path, {**warm_env, "OMP_NUM_THREADS": "3"})  # a third: cold, and starts its own
    deadline = time.monotonic() + 60
    while first.with_suffix(".sock").exists():  # the first serves no more
        assert time.monotonic() < deadline, "the least recently used warm process still serves"
        time.sleep(0.1)
    os.kill(pid, 0)  # but waits for its fork
    waiting_stage.send_signal(signal.SIGTERM)
    assert waiting_stage.wait(timeout=60) == 130  # which ended as its stage's process said
    deadline = time.monotonic() + 60
    while Path(f"/proc/{pid}").exists() and b"catdog.warm" in Path(f"/proc/{pid}/cmdline").read_bytes():
        assert time.monotonic() < deadline, "the stopped warm process did not leave"
        time.sleep(0.1)
