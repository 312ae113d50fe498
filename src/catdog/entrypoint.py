"""What every entry point (a DVC stage script, a `catdog` command) shares: one clear line and a non-zero exit for
problems the user can fix, and the same clean-up for SIGTERM (how dvc, schedulers and `kill` stop a process) as
for Ctrl-C."""

import gc
import os
import signal
import sys

from catdog import CatdogError


def _interrupt(signum, frame):
    raise KeyboardInterrupt(signal.Signals(signum).name)


def run(main) -> None:
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        main()
        # The interpreter's last garbage collections walk every object torch, MLflow and matplotlib created (about
        # 0.7 s of every stage): frozen objects are left to the operating system, nothing else changes.
        gc.freeze()
    except CatdogError as error:
        sys.exit(f"catdog: error: {error}")
    except BrokenPipeError:  # `catdog predict FOLDER | head`: the reader has all it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # Python's recipe: no flush error at exit
        sys.exit(0)
    except KeyboardInterrupt:
        # The atomic writes have removed their temporary files: no output is left half-written.
        print("catdog: interrupted; outputs of this stage were not written", file=sys.stderr)
        sys.exit(130)
