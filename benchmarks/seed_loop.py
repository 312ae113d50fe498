"""Benchmark: the seeds' training loop (benchmarks/seed002_loop.py: ImageFolder decoding every JPEG in every
epoch, a DataLoader with no workers) against the pipeline as a user runs it, logistic regression on the same
images with the same hyperparameters (128x128, SGD lr 0.01, batch 32), each side timed as whole processes.

    python benchmarks/seed_loop.py --epochs 10 100     # the full comparison: about 12 minutes on 2 cores
    python benchmarks/seed_loop.py --epochs 1 3        # a quick look
    python benchmarks/seed_loop.py --threads 1         # OMP_NUM_THREADS=1 for every process, both sides

Run at the repository root inside .venv, after `dvc repro` has made data/synthetic. The pipeline runs in
throw-away copies of the repository (the files git would commit, as tests/conftest.py copies them, plus
data/synthetic and its boxes), committed to a fresh git repository so that DVC works there; MLflow logs to each
copy's own store, deleted with it.

The measure is what a user types, `dvc repro train`, with the committed default params (data.sizes, the model
logistic) and only models.logistic.epochs set, in a copy whose data/prepared, trained model and DVC cache
(run-cache included) have been deleted but for the images (as anyone who has run `dvc repro` once or `dvc pull`ed
has them): DVC runs `check` (the params changed), `prepare` (decode every image at data.sizes, split, write; DVC
hashes the outputs and copies them into its cache) and `train`,
DVC's own start-up, hashing and caching included. Then `dvc repro` (evaluate and plot) is timed too. Beside it,
the earlier measure is kept: `python src/stages/{prepare,train,evaluate}.py` run directly, outside DVC, with
data.sizes [128] only.

One untimed run of each (1 epoch) comes first, so that one-time costs of a fresh clone (the MLflow store, DVC's
hashes of the 2400 images, .pyc files) are not counted and both sides find the images in the page cache. For each
epoch count it prints a Markdown table: end-to-end wall seconds and ratios against the targets, per-epoch
seconds, test accuracy, then each process's seconds.

On a machine shared with other jobs use --threads 1: torch's default of one thread per core stalls when other
processes hold the cores (measured at load 8 on 2 cores: the logistic fit took 40 s with 2 threads, 6 s with 1;
an epoch of the seeds' loop 38-115 s with 2 threads, 7-9 s with 1).
"""

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from machine import describe

ROOT = Path(__file__).resolve().parents[1]
TARGETS = {"per epoch": 20, "end to end": {10: 3, 100: 10}}  # seeds' time / pipeline's time, from the issue


def copy_repo(dest: Path) -> None:
    """The files git would commit (tracked and untracked, not ignored): no data, no MLflow store, no DVC cache."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, text=True, check=True).stdout.split("\0")
    for name in filter(None, listed):
        if (ROOT / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, dest / name)


def dvc_clone(dest: Path, images: Path, env: dict) -> None:
    """A copy a user could have cloned and run `dvc repro generate` in: the committed files in a git repository
    of their own, the images (data.images, and data.boxes beside them) where params.yaml expects them."""
    copy_repo(dest)
    params = yaml.safe_load((dest / "params.yaml").read_text())
    shutil.copytree(images, dest / params["data"]["images"], dirs_exist_ok=True)
    shutil.copy2(ROOT / params["data"]["boxes"], dest / params["data"]["boxes"])  # rows of other images: unused
    for args in (["git", "init", "-q"], ["git", "add", "-A"], ["git", "-c", "user.name=bench", "-c",
                 "user.email=bench@localhost", "commit", "-qm", "clone"],
                 # The images in DVC's cache, as for anyone who has run `dvc repro` once or `dvc pull`ed them:
                 # DVC re-runs a stage whose outputs are not in its cache, and `generate` is 50 s, not the loop.
                 ["dvc", "repro", "check"], ["dvc", "commit", "--force", "generate"]):
        subprocess.run(args, cwd=dest, env=env, check=True, capture_output=True)


def empty_cache_but_images(repo: Path, keep: set[Path]) -> None:
    """DVC's cache as a user who has only the images has it: every object but theirs deleted, run-cache too."""
    for path in sorted((repo / ".dvc/cache").rglob("*"), reverse=True):
        if path.is_file() and path not in keep:
            path.unlink()


def run_dvc(repo: Path, epochs: int, env: dict, keep: set[Path]) -> dict:
    """`dvc repro train` from the images (check, prepare, train) with the default params but the epochs, then
    `dvc repro` (evaluate, plot), as a user with nothing prepared and an empty DVC cache would run them."""
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["models"]["logistic"]["epochs"] = epochs
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    for path in ("data/prepared", "models"):
        shutil.rmtree(repo / path, ignore_errors=True)
    empty_cache_but_images(repo, keep)
    train_wall, train_cpu, _ = timed(["dvc", "repro", "train"], repo, env)
    rest_wall, rest_cpu, _ = timed(["dvc", "repro"], repo, env)
    train = json.loads((repo / "metrics/train.json").read_text())
    test = json.loads((repo / "metrics/test.json").read_text())
    return {"end to end": train_wall, "cpu": train_cpu, "evaluate + plot": rest_wall, "rest cpu": rest_cpu,
            "per epoch": train["train_seconds"] / epochs, "test accuracy": test["accuracy"], "n_test": test["n_test"]}


def cpu_seconds() -> float:
    """User + system CPU seconds of the finished child processes (and theirs: prepare's decoding workers)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(args: list[str], cwd: Path, env: dict) -> tuple[float, float, str]:
    """Wall and CPU seconds of a whole process (interpreter start-up and imports included), and its stdout. On a
    loaded machine the CPU seconds move less than the wall time: they say what the work itself cost."""
    cpu, start = cpu_seconds(), time.perf_counter()
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    seconds, cpu = time.perf_counter() - start, cpu_seconds() - cpu
    if result.returncode != 0:
        sys.exit(f"{' '.join(args)} failed ({result.returncode}) in {cwd}:\n{result.stdout}\n{result.stderr}")
    return seconds, cpu, result.stdout


def run_seeds(images: Path, epochs: int, env: dict) -> dict:
    seconds, cpu, stdout = timed([sys.executable, str(ROOT / "benchmarks/seed002_loop.py"), "--images",
                                  str(images), "--epochs", str(epochs)], ROOT, env)
    report = json.loads(stdout.splitlines()[-1])
    return {"end to end": seconds, "cpu": cpu, "epochs": sum(report["epoch_seconds"]),
            "per epoch": sum(report["epoch_seconds"]) / epochs, "test accuracy": report["test_accuracy"],
            "n_test": report["n_test"]}


def run_pipeline(repo: Path, images: Path, epochs: int, env: dict) -> dict:
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["model"] = "logistic"
    params["data"].update(images=str(images), sizes=[128])
    params["models"]["logistic"]["epochs"] = epochs
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    subprocess.run([sys.executable, "src/stages/check.py"], cwd=repo, env=env, check=True, capture_output=True)
    stages = {}
    for stage in ("prepare", "train", "evaluate"):
        stages[stage] = timed([sys.executable, f"src/stages/{stage}.py"], repo, env)[:2]
        if stage == "prepare":  # untimed: dvc.lock records the data/prepared that train logs as its run's data
            out = subprocess.run(["dvc", "commit", "--force", "prepare"], cwd=repo, env=env, capture_output=True,
                                 text=True)
            if out.returncode:
                sys.exit(out.stderr)
    train = json.loads((repo / "metrics/train.json").read_text())
    test = json.loads((repo / "metrics/test.json").read_text())
    walls = {stage: wall for stage, (wall, _) in stages.items()}
    # train_seconds is fit() alone (every epoch's training and validation pass and its MLflow metrics), as the
    # seeds' per-epoch time is their training and validation pass: both are means over all epochs, the first too.
    return {"stages": stages, "end to end": sum(walls.values()), "prepare + train": walls["prepare"] + walls["train"],
            "train": walls["train"], "cpu": sum(cpu for _, cpu in stages.values()),
            "per epoch": train["train_seconds"] / epochs, "test accuracy": test["accuracy"], "n_test": test["n_test"]}


def ratio_row(name: str, seeds: float, pipeline: float, target) -> str:
    ratio = seeds / pipeline
    verdict = f"≥ {target}×: {'met' if ratio >= target else 'NOT met'}" if target else ""
    return f"| {name} | {seeds:.2f} s | {pipeline:.2f} s | {ratio:.1f}× | {verdict} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, nargs="+", default=[10, 100], help="epoch counts (default 10 100)")
    parser.add_argument("--images", type=Path, default=ROOT / "data/synthetic", help="an ImageFolder")
    parser.add_argument("--threads", type=int, help="OMP_NUM_THREADS for every process (default: torch's choice)")
    args = parser.parse_args()
    images = args.images.resolve()
    if not images.is_dir() or not any(d.is_dir() for d in images.iterdir()):
        sys.exit(f"{images} is not an ImageFolder (one subfolder per class); `dvc repro` makes data/synthetic")
    if args.threads:
        os.environ["OMP_NUM_THREADS"] = str(args.threads)  # read by torch at import: here and in every process
    # The user's environment with .venv active, minus MLflow and DVC settings: the copy logs to its own store.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "DVC_"))}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    print(describe())
    files = [p for p in images.rglob("*") if p.is_file()]
    # The seeds pay for decoding in every epoch: bigger photos than the embedded 271x224 JPEGs raise their cost.
    print(f"images: {images} ({len(files)} files, {sum(p.stat().st_size for p in files) / len(files) / 1024:.0f} KB "
          "on average)\n")
    results = {}
    with tempfile.TemporaryDirectory(prefix="catdog-seed-loop-") as tmp:
        repo, user = Path(tmp) / "scripts", Path(tmp) / "dvc"
        repo.mkdir()
        copy_repo(repo)
        shutil.copy2(ROOT / "data/synthetic_boxes.csv", repo / "data/synthetic_boxes.csv")  # prepare's dep, as in git
        for command in (["git", "init", "-q"], ["git", "add", "-A"],
                        ["git", "-c", "user.name=bench", "-c", "user.email=bench@localhost", "commit", "-qm", "copy"]):
            subprocess.run(command, cwd=repo, env=env, check=True, capture_output=True)
        dvc_clone(user, images, env)
        images_in_cache = {p for p in (user / ".dvc/cache").rglob("*") if p.is_file()}
        # Untimed: creates the copies' MLflow stores, DVC's hashes of the images and .pyc files (one-time costs
        # of a fresh clone, not of a run) and reads every image once, so that neither side reads them from disk
        # and the other from memory.
        print("warm-up: the pipeline, 1 epoch, through dvc and as scripts ...", file=sys.stderr, flush=True)
        run_dvc(user, 1, env, images_in_cache)
        run_pipeline(repo, images, 1, env)
        for epochs in args.epochs:
            print(f"{epochs} epochs: the seeds' loop ...", file=sys.stderr, flush=True)
            seeds = run_seeds(images, epochs, env)
            print(f"{epochs} epochs: the pipeline through dvc, then as scripts ...", file=sys.stderr, flush=True)
            through_dvc = run_dvc(user, epochs, env, images_in_cache)
            pipeline = run_pipeline(repo, images, epochs, env)
            results[epochs] = seeds, pipeline
            print(f"### {epochs} epochs\n\n| | seeds' loop | pipeline | seeds / pipeline | target |\n"
                  "|---|---|---|---|---|")
            sizes = "/".join(map(str, yaml.safe_load((user / "params.yaml").read_text())["data"]["sizes"]))
            print(ratio_row(f"**end to end, as a user runs it: `dvc repro train`** (check, prepare at {sizes}, "
                            "train; default params)", seeds["end to end"], through_dvc["end to end"],
                            TARGETS["end to end"].get(epochs)))
            print(ratio_row("the same, then `dvc repro` (evaluate, plot) too", seeds["end to end"],
                            through_dvc["end to end"] + through_dvc["evaluate + plot"], None))
            print(ratio_row("earlier measure: stage scripts outside DVC, prepare + train, data.sizes [128]",
                            seeds["end to end"], pipeline["prepare + train"], None))
            print(ratio_row("earlier measure with `evaluate` too", seeds["end to end"], pipeline["end to end"], None))
            print(ratio_row("per epoch (training + validation)", seeds["per epoch"], through_dvc["per epoch"],
                            TARGETS["per epoch"]))
            print(f"| test accuracy | {seeds['test accuracy']:.3f} ({seeds['n_test']} images) | "
                  f"{through_dvc['test accuracy']:.3f} ({through_dvc['n_test']} images) | | |")
            rest = seeds["end to end"] - seeds["epochs"]
            print(f"\nseeds' process: {seeds['epochs']:.1f} s in its epochs, {rest:.1f} s in start-up, imports and "
                  f"the test pass, {seeds['cpu']:.1f} CPU s; `dvc repro train` {through_dvc['cpu']:.1f} CPU s, "
                  f"`dvc repro` after it {through_dvc['evaluate + plot']:.1f} s ({through_dvc['rest cpu']:.1f} CPU "
                  "s); scripts, wall (CPU) seconds: " + ", ".join(
                      f"{stage} {wall:.1f} ({cpu:.1f})" for stage, (wall, cpu) in pipeline["stages"].items()) + "\n",
                  flush=True)
    if len(results) > 1:
        # The marginal cost of an epoch, start-up excluded: a cross-check of the per-epoch rows above.
        (low, (seeds_low, pipe_low)), (high, (seeds_high, pipe_high)) = min(results.items()), max(results.items())
        seeds_marginal = (seeds_high["end to end"] - seeds_low["end to end"]) / (high - low)
        pipe_marginal = (pipe_high["train"] - pipe_low["train"]) / (high - low)
        ratio = f" ({seeds_marginal / pipe_marginal:.0f}×)" if pipe_marginal > 0 else " (within noise)"
        print(f"marginal seconds per epoch, (wall at {high} − wall at {low}) / {high - low}: seeds' process "
              f"{seeds_marginal:.2f} s, pipeline's train process {pipe_marginal:.3f} s{ratio}\n")
    print("Notes: end to end is the wall time of whole processes (start-up, imports, decoding, training, the test\n"
          "accuracy in the seeds' one); the pipeline's first row is one `dvc repro train` process with the default\n"
          "params, from nothing prepared and an empty DVC cache. Per epoch is the\n"
          "mean over all epochs of the training and validation pass: the seeds' loop times it inside the loop, the\n"
          "pipeline's is metrics/train.json train_seconds (fit alone) / epochs, through dvc. The two test sets are\n"
          "240 different images (random_split vs prepare's stratified split), and the seeds test their last\n"
          "epoch's model while\n"
          "the pipeline tests its best-validation checkpoint: compare the accuracies loosely. CPU seconds include\n"
          "threads spinning while they wait for a core: compare them with --threads 1.")


if __name__ == "__main__":
    main()
