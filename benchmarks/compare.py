"""`catdog compare` as a user runs it: two logistic experiments on the embedded dataset (240 test images, default
params but the learning rate) compared, the report and every figure included, timed as whole processes in a
scratch clone of this checkout's HEAD (its own DVC cache: nothing is written here). Inside the activated .venv:

    python benchmarks/compare.py             # 5 timed runs of `catdog compare bench-a bench-b --out report`
    python benchmarks/compare.py --runs 3

Prints the machine, the setup's minutes (generate, prepare, two trainings: not timed as part of the figure), each
run's seconds, min and median, and what was compared (flipped images, p-value). The target is under 30 s on 2 cores.
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from machine import describe

ROOT = Path(__file__).resolve().parents[1]
CATDOG = Path(sys.executable).parent / "catdog"  # the venv's entry point: what `catdog` runs once it is activated


def sh(args, cwd) -> str:
    result = subprocess.run(args, cwd=cwd, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"{args} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    print(describe(), flush=True)
    folder = Path(tempfile.mkdtemp(prefix="catdog-compare-bench."))
    try:
        repo = folder / "repo"
        start = time.perf_counter()
        sh(["git", "clone", "-q", str(ROOT), str(repo)], folder)
        sh(["dvc", "exp", "run", "-n", "bench-a"], repo)
        sh(["dvc", "exp", "run", "-n", "bench-b", "-S", "models.logistic.lr=0.001"], repo)
        print(f"setup (clone, generate, prepare, two logistic trainings): {(time.perf_counter() - start) / 60:.1f} "
              f"min, commit {sh(['git', 'rev-parse', '--short', 'HEAD'], repo).strip()}", flush=True)
        seconds = []
        for _ in range(args.runs):
            shutil.rmtree(repo / "report", ignore_errors=True)
            start = time.perf_counter()
            sh([str(CATDOG), "compare", "bench-a", "bench-b", "--out", "report"], repo)
            seconds.append(time.perf_counter() - start)
            print(f"  catdog compare bench-a bench-b --out report: {seconds[-1]:.2f} s "
                  f"(load average {os.getloadavg()[0]:.1f})", flush=True)
        start = time.perf_counter()
        result = json.loads(sh([str(CATDOG), "compare", "bench-a", "bench-b", "--json"], repo))
        without = time.perf_counter() - start
        pngs = sorted(p.name for p in (repo / "report").glob("*.png"))
        print(f"catdog compare bench-a bench-b --out report: min {min(seconds):.2f} s, median "
              f"{statistics.median(seconds):.2f} s over {len(seconds)} runs (target < 30 s); --json alone, no "
              f"figures: {without:.2f} s")
        print(f"compared: accuracy {result['a']['accuracy']:.3f} -> {result['b']['accuracy']:.3f} on "
              f"{result['a']['n_test']} images, {len(result['newly_right'])} newly right, "
              f"{len(result['newly_wrong'])} newly wrong, McNemar p = {result['p_value']:.3g}; figures: "
              f"{', '.join(pngs)}")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
