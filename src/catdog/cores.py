"""The CPU's cores, one computation at a time: parallel experiments (`dvc exp run --run-all -j 2`, `catdog tune
--jobs 2`) take turns to train and test on the CPU, and overlap the rest (DVC, interpreters, imports, MLflow,
figures), instead of fighting over the cores.

PyTorch runs each computation on every core, with OpenMP threads that spin while they wait for each other. Two
trainings at once on the same cores make each thread wait for one that is not running: measured on 2 cores, two
60-epoch logistic trainings took 54-70 s each side by side against 5-8 s alone. Fewer threads per process would
change the order of floating-point sums, and so the metrics; OMP_WAIT_POLICY=passive keeps them but made a lone
training twice as slow (benchmarks/RESULTS.md, "Parallel experiments"). A lock costs a lone run nothing and keeps
every number byte-identical to it.

The lock is the machine's, for this user: an flock on a file in the temporary folder, which the system releases
when its process ends, however it ends. A GPU computation takes none: the card shares itself, and the CPU waits.
CATDOG_CORES=shared turns it off (trainings that limit their own threads, say).

The one holding the cores still shares them with the others' one-core work (DVC, imports, figures). In DVC's
temporary experiment copies, where experiments run side by side (`--run-all -j 2`, `--temp`, `catdog tune`), its
OpenMP threads spin briefly before they sleep (spin_briefly_beside_others): two queued 60-epoch experiments took
42 s at -j 2 against 55 s at -j 1 with it, 55 s without. In the workspace (`dvc repro`), where DVC runs one at a
time, OpenMP keeps its default, which a lone logistic training measured about 9 % faster."""

import contextlib
import fcntl
import os
import sys
import tempfile
from pathlib import Path

LOCK_FILE = Path(tempfile.gettempdir()) / f"catdog-cores-{os.getuid()}.lock"
# GNU OpenMP's busy-wait before a thread sleeps, in spins (its default: 300,000): not the thread count, so every sum
# and metric stays the same (benchmarks/RESULTS.md, "Parallel experiments").
BRIEF_SPIN = "3000"


def spin_briefly_beside_others() -> None:
    """Call before importing torch (libgomp reads it when loaded): in a DVC temporary experiment copy
    (.dvc/tmp/exps/), where other experiments may run beside this one, set GOMP_SPINCOUNT to BRIEF_SPIN unless the
    user has set it."""
    if f"{os.sep}.dvc{os.sep}tmp{os.sep}exps{os.sep}" in f"{os.getcwd()}{os.sep}":
        os.environ.setdefault("GOMP_SPINCOUNT", BRIEF_SPIN)


@contextlib.contextmanager
def turn(on_cpu: bool = True):
    """Hold the cores for the block: at once if no other catdog process computes on them, else once it is done
    (said on stderr). A no-op off the CPU, under torchrun's several processes (each would wait for the others),
    and with CATDOG_CORES=shared."""
    if not on_cpu or int(os.environ.get("WORLD_SIZE", "1")) > 1 or os.environ.get("CATDOG_CORES") == "shared":
        yield
        return
    with open(os.open(LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600), "r+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = lock.read().strip() or "another catdog process"
            print(f"catdog: waiting for the CPU cores, which {holder} is computing on", file=sys.stderr, flush=True)
            fcntl.flock(lock, fcntl.LOCK_EX)
        lock.seek(0)
        lock.truncate()
        lock.write(f"pid {os.getpid()} ({Path(sys.argv[0]).name})")
        lock.flush()
        try:
            yield
        finally:
            lock.truncate(0)
            fcntl.flock(lock, fcntl.LOCK_UN)
