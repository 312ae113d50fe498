"""The CPU's cores, one computation at a time: parallel experiments (`dvc exp run --run-all -j 2`, `catdog tune
--jobs 2`) take turns to train and test on the CPU, and overlap the rest (DVC, interpreters, imports, MLflow,
figures), instead of fighting over the cores.

PyTorch runs each computation on every core, with OpenMP threads that spin while they wait for each other. Two
trainings at once on the same cores make each thread wait for one that is not running: measured on 2 cores, two
60-epoch logistic trainings took 54-70 s each side by side against 5-8 s alone. Fewer threads per process would
change the order of floating-point sums, and so the metrics; OMP_WAIT_POLICY=passive keeps them but made a lone
training 1.3-2.4x as slow (benchmarks/RESULTS.md, "Parallel experiments"). A lock costs a lone run nothing and keeps
every number byte-identical to it.

The lock is the machine's, for this user: an flock on a file in the temporary folder, which the system releases
when its process ends, however it ends. A GPU computation takes none (not measured here: its CPU threads mostly
wait for the card). CATDOG_CORES=shared turns it off (trainings that limit their own threads, say)."""

import contextlib
import fcntl
import os
import sys
import tempfile
from pathlib import Path

LOCK_FILE = Path(tempfile.gettempdir()) / f"catdog-cores-{os.getuid()}.lock"


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
