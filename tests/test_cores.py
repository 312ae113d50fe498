"""Parallel experiments take turns on the CPU's cores (catdog.cores): a second computation waits, says so, and goes
on once the first is done, however the first ends; a GPU computation and CATDOG_CORES=shared wait for nothing."""

import os
import subprocess
import sys

import pytest

from conftest import ROOT

# Holds the cores until the file named by argv[1] exists; argv[2]: "cpu" or "cuda". Prints when it took and left them.
HOLDER = """
import os, sys, time
from catdog import cores
with cores.turn(sys.argv[2] == "cpu"):
    print("holding", time.time(), flush=True)
    while not os.path.exists(sys.argv[1]):
        time.sleep(0.01)
    print("done", time.time(), flush=True)
"""
DEADLINE_S = 60


def start(tmp_path, release, device="cpu", **env):
    return subprocess.Popen([sys.executable, "-c", HOLDER, str(release), device], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT / "src"), "TMPDIR": str(tmp_path), **env})


def said(out: str) -> list[str]:
    return [line.split()[0] for line in out.splitlines()]


def when(out: str, word: str) -> float:
    return next(float(line.split()[1]) for line in out.splitlines() if line.startswith(word))


def test_a_second_computation_waits_for_the_first_and_says_so(tmp_path):
    first = start(tmp_path, tmp_path / "release-first")
    first_out = first.stdout.readline()
    assert said(first_out) == ["holding"]
    (tmp_path / "release-second").touch()  # the second would be done at once if it took the cores
    second = start(tmp_path, tmp_path / "release-second")
    waiting = second.stderr.readline()  # said before it waits: no sleep needed to see it
    assert "waiting for the CPU cores" in waiting and f"pid {first.pid}" in waiting
    assert second.poll() is None
    (tmp_path / "release-first").touch()
    first_out += first.communicate(timeout=DEADLINE_S)[0]
    second_out = second.communicate(timeout=DEADLINE_S)[0]
    assert said(second_out) == ["holding", "done"] and second.returncode == 0
    assert when(second_out, "holding") >= when(first_out, "done")  # it took them once the first had left them


def test_the_cores_are_free_again_when_their_holder_is_killed(tmp_path):
    first = start(tmp_path, tmp_path / "never")
    assert said(first.stdout.readline()) == ["holding"]
    first.kill()
    first.wait()
    (tmp_path / "go").touch()
    second = start(tmp_path, tmp_path / "go")
    out, err = second.communicate(timeout=DEADLINE_S)
    assert said(out) == ["holding", "done"] and "waiting" not in err


@pytest.mark.parametrize("device, env", [("cuda", {}), ("cpu", {"CATDOG_CORES": "shared"}),
                                         ("cpu", {"WORLD_SIZE": "2"})])
def test_a_gpu_computation_shared_cores_and_torchrun_ranks_wait_for_nothing(tmp_path, device, env):
    first = start(tmp_path, tmp_path / "release")
    assert said(first.stdout.readline()) == ["holding"]
    (tmp_path / "go").touch()
    second = start(tmp_path, tmp_path / "go", device, **env)
    out, err = second.communicate(timeout=DEADLINE_S)
    assert said(out) == ["holding", "done"] and "waiting" not in err
    (tmp_path / "release").touch()
    first.communicate(timeout=DEADLINE_S)
