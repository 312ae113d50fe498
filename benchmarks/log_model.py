"""What each of tracking/mlflow_model.py's two patches of MLflow saves: `mlflow_model.log` of this checkout's
models/model.pt (after `dvc repro`) in a fresh process and a scratch SQLite store, with both MLflow checks skipped
(as train's helper logs it), with one of them, and with none. Inside the activated .venv:

    python benchmarks/log_model.py --repeat 3
"""

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHECKS = {"serving input": "mlflow.models.utils._validate_serving_input",
          "requirements": "mlflow.utils.environment.warn_dependency_requirement_mismatches"}

LOG = """
import contextlib, sys, time
from unittest import mock
import numpy as np
import mlflow
from catdog.tracking import mlflow_model

skipped = [name for name in sys.argv[2:] if name]
@contextlib.contextmanager
def only_these():
    with contextlib.ExitStack() as stack:
        for target in skipped:
            stack.enter_context(mock.patch(target))
        yield
mlflow_model._without_redundant_checks = only_these
mlflow.set_tracking_uri(f"sqlite:///{sys.argv[1]}/mlflow.db")
example = np.load("data/prepared/x128_val.npy", mmap_mode="r")[0]
with mlflow.start_run():
    start = time.perf_counter()
    mlflow_model.log("models/model.pt", mlflow_model.example_image(np.asarray(example)), positive="dog")
    print(time.perf_counter() - start)
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    variants = {"both skipped (as the pipeline logs)": list(CHECKS.values()),
                "serving-input check run": [CHECKS["requirements"]],
                "requirements check run": [CHECKS["serving input"]],
                "neither skipped (MLflow's default)": []}
    for name, skipped in variants.items():
        seconds = []
        for _ in range(args.repeat):
            with tempfile.TemporaryDirectory() as store:
                out = subprocess.run([sys.executable, "-c", LOG, store, *(skipped or [""])], cwd=ROOT,
                                     capture_output=True, text=True,
                                     env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
                if out.returncode:
                    sys.exit(out.stderr[-2000:])
                seconds.append(float(out.stdout.strip().splitlines()[-1]))
        print(f"{name}: " + ", ".join(f"{s:.2f} s" for s in seconds) + f" (best {min(seconds):.2f} s)", flush=True)


if __name__ == "__main__":
    main()
