"""Wall time of stages as a user runs them: `dvc repro --force -s STAGE`, --repeat times each, in this checkout
(inside the activated .venv, after one `dvc repro`). Run it in two checkouts to compare two commits; the cost of
the attribution figures, for example, before and after them:

    python benchmarks/stage_times.py evaluate plot --repeat 3
"""

import argparse
import subprocess
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("stages", nargs="*", default=["evaluate", "plot"])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout
    model = yaml.safe_load((ROOT / "params.yaml").read_text())["model"]
    print(f"{commit.strip()} model={model}")
    for stage in args.stages:
        seconds = []
        for _ in range(args.repeat):
            start = time.perf_counter()
            subprocess.run(["dvc", "repro", "--force", "-s", stage], cwd=ROOT, check=True, capture_output=True)
            seconds.append(time.perf_counter() - start)
        print(f"{stage}: " + ", ".join(f"{s:.1f} s" for s in seconds) + f" (best {min(seconds):.1f} s)")


if __name__ == "__main__":
    main()
