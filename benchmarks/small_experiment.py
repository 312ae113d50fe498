"""The fixed cost of a small experiment, as a user types it, in a scratch clone of this checkout (HEAD) after one
`dvc repro`, sharing its DVC cache. Inside the activated .venv:

    python benchmarks/small_experiment.py floor --runs 3     # `dvc exp run --temp -S models.logistic.epochs=3`
                                                             # against its floor, and where its time goes
    python benchmarks/small_experiment.py floor --cold       # the same without the warm process (catdog.warm)
    python benchmarks/small_experiment.py parallel           # two queued experiments, --run-all -j 1 against -j 2

The floor is `import torch` in a fresh interpreter plus the experiment's own train_seconds. Where the time goes is
read from every Python process the experiment starts (DVC, each stage, MLflow's helpers): a sitecustomize.py on
PYTHONPATH, the benchmark's alone, records when each process started and ended and wraps a few functions of catdog
(the training, the attribution, the test pass, the waits for MLflow) to time them. DVC's own work is its process's
wall time less the stage processes'. A stage forked by the warm process is timed in its fork; the first run in the
scratch clone starts the warm process (the benchmark's PYTHONPATH makes its environment another one).
"""

import argparse
import json
import os
import re
import sys
import tempfile
import textwrap
import time
from collections import defaultdict
from pathlib import Path

from tune import sh  # noqa: E402  (benchmarks/ is the script's folder, first on sys.path)

ROOT = Path(__file__).resolve().parents[1]

# Loaded by every Python process of the run (PYTHONPATH): one JSON line per event into $CATDOG_BENCH_PHASES.
SITECUSTOMIZE = textwrap.dedent('''
    import atexit, importlib.abc, importlib.util, json, os, sys, time

    _log = os.environ["CATDOG_BENCH_PHASES"]
    _ticks = os.sysconf("SC_CLK_TCK")
    with open("/proc/self/stat") as f:  # the process's start, in ticks since boot
        _started = int(f.read().rsplit(")", 1)[1].split()[19]) / _ticks
    _t0 = time.time() - (time.clock_gettime(time.CLOCK_BOOTTIME) - _started)
    _forked = False  # a fork of catdog's warm process (catdog.warm), which sets its sys.orig_argv


    def _fork_started():
        global _t0, _forked
        _t0, _forked = time.time(), True


    os.register_at_fork(after_in_child=_fork_started)


    def _write(event, start, end):
        who = " ".join(os.path.basename(a) for a in sys.orig_argv[1:3])  # "train.py", "-m catdog.tracking.runs"
        with open(_log, "a") as f:
            f.write(json.dumps({"pid": os.getpid(), "who": who, "forked": _forked,
                                "event": event, "start": start, "end": end}) + "\\n")


    atexit.register(lambda: _write("process", _t0, time.time()))

    # (module, attribute path, event): timed wherever the stages call them
    _WRAP = [("catdog.entrypoint", "run", "main"), ("catdog.training.loop", "fit", "training"),
             ("catdog.training.loop", "seed_everything", "seeding (imports torch._dynamo)"),
             ("catdog.analysis.attribution", "attribute", "attribution"),
             ("catdog.inference.forward", "runner", "test pass"),
             ("catdog.tracking.runs", "Run.__init__", "open store"),
             ("catdog.tracking.runs", "Run.close", "mlflow wait"),
             ("catdog.analysis.figures", "training_curves", "figures"),
             ("catdog.analysis.figures", "confusion_matrix", "figures"),
             ("catdog.analysis.figures", "misclassified_gallery", "figures"),
             ("catdog.analysis.figures", "probability_histogram", "figures"),
             ("catdog.analysis.figures", "calibration_curve", "figures"),
             ("catdog.analysis.attribution_figures", "learned", "figures"),
             ("catdog.analysis.attribution_figures", "heatmap_gallery", "figures"),
             ("catdog.tracking.mlflow_model", "log", "log_model (helper)")]


    def _timed(fn, event):
        def wrapper(*args, **kwargs):
            start = time.time()
            try:
                result = fn(*args, **kwargs)
            finally:
                if event != "test pass":
                    _write(event, start, time.time())
            if event == "test pass":  # the runner is made here and called later: time its calls
                return _TimedRunner(result, start)
            return result
        return wrapper


    class _TimedRunner:
        def __init__(self, inner, made):
            self._inner, self._made = inner, made

        def __call__(self, *args, **kwargs):
            try:
                return self._inner(*args, **kwargs)
            finally:
                _write("test pass", self._made, time.time())

        def __getattr__(self, name):
            return getattr(self._inner, name)


    class _Finder(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            wanted = [(attr, event) for module, attr, event in _WRAP if module == name]
            if not wanted:
                return None
            sys.meta_path.remove(self)
            try:
                spec = importlib.util.find_spec(name)
            finally:
                sys.meta_path.insert(0, self)
            if spec is None or spec.loader is None:
                return spec
            execute = spec.loader.exec_module

            def exec_module(module):
                execute(module)
                for attr, event in wanted:
                    owner, _, leaf = attr.rpartition(".")
                    target = getattr(module, owner) if owner else module
                    setattr(target, leaf, _timed(getattr(target, leaf), event))
            spec.loader.exec_module = exec_module
            return spec


    sys.meta_path.insert(0, _Finder())
''')


def scratch(folder: Path) -> Path:
    """A clone of HEAD sharing this checkout's DVC cache, reproduced and committed, as a user's repository is."""
    repo = folder / "repo"
    sh(["git", "clone", "-q", str(ROOT), str(repo)], folder)
    sh(["dvc", "config", "--local", "cache.dir", str(ROOT / ".dvc" / "cache")], repo)
    sh(["dvc", "repro"], repo)
    sh(["git", "-c", "user.name=bench", "-c", "user.email=b@b", "commit", "-qam", "bench", "--allow-empty"], repo)
    return repo


def import_torch() -> float:
    out = sh([sys.executable, "-c", "import time; t = time.perf_counter(); import torch; "
                                    "print(time.perf_counter() - t)"], ROOT)
    return float(out)


def traced(repo: Path, args: list[str], log: Path, cold: bool = False) -> tuple[float, list[dict]]:
    """Wall time of `args` in repo, and the events of every Python process it started."""
    hooks = log.parent / "hooks"
    hooks.mkdir(exist_ok=True)
    (hooks / "sitecustomize.py").write_text(SITECUSTOMIZE)
    log.unlink(missing_ok=True)
    env = {**os.environ, "CATDOG_BENCH_PHASES": str(log),
           "PYTHONPATH": os.pathsep.join(filter(None, (str(hooks), os.environ.get("PYTHONPATH")))),
           **({"CATDOG_WARM": "0"} if cold else {})}
    start = time.perf_counter()
    sh(args, repo, env=env)
    wall = time.perf_counter() - start
    return wall, [json.loads(line) for line in log.read_text().splitlines()]


def stage_of(who: str) -> str | None:
    match = re.fullmatch(r"(\w+)\.py", who)
    return match.group(1) if match else None


def breakdown(events: list[dict], wall: float) -> list[tuple[str, float]]:
    """(what, seconds) rows: each stage process and its phases, the helpers, DVC's own work."""
    processes = {e["pid"]: e for e in events if e["event"] == "process"}
    by_pid = defaultdict(list)
    for e in events:
        if e["event"] != "process":
            by_pid[e["pid"]].append(e)
    rows, stage_total = [], 0.0
    forks = [p for p in processes.values() if p.get("forked") and stage_of(p["who"])]
    for pid, p in sorted(processes.items(), key=lambda kv: kv[1]["start"]):
        stage = stage_of(p["who"])
        if stage is None or p.get("forked"):
            continue
        seconds = p["end"] - p["start"]
        stage_total += seconds
        # a stage handed over to the warm process: its phases are its fork's
        fork = next((f for f in forks if f["who"] == p["who"] and p["start"] <= f["start"] <= p["end"]), None)
        pid = fork["pid"] if fork else pid
        rows.append((f"{stage}{' (forked by the warm process)' if fork else ''}", seconds))
        phases = defaultdict(float)
        main = next((e for e in by_pid[pid] if e["event"] == "main"), None)
        if main:
            phases["interpreter and imports" + (" (hand-over, catdog)" if fork else "")] = main["start"] - p["start"]
            phases["exit"] = p["end"] - main["end"]
        for e in by_pid[pid]:
            if e["event"] != "main":
                phases[e["event"]] += e["end"] - e["start"]
        if main:
            phases["the rest"] = (main["end"] - main["start"]) - sum(
                v for k, v in phases.items() if not k.startswith(("interpreter and imports", "exit")))
        rows += [(f"  {k}", v) for k, v in phases.items()]
    helpers = [p for p in processes.values() if "catdog.tracking.runs" in p["who"]]
    for p in helpers:
        log_model = sum(e["end"] - e["start"] for e in by_pid[p["pid"]] if e["event"] == "log_model (helper)")
        rows.append((f"(MLflow helper{', forked' if p.get('forked') else ''}, beside its stage"
                     f"{', log_model %.2f s' % log_model if log_model else ''})",
                     p["end"] - p["start"]))
    rows.append(("DVC's own work (wall less the stage processes)", wall - stage_total))
    return rows


def floor(repo: Path, args) -> None:
    log = Path(repo).parent / "phases.jsonl"
    for k in range(args.runs):
        torch_seconds = import_torch()
        wall, events = traced(repo, ["dvc", "exp", "run", "--temp", "-n", f"floor-{k}", "-S",
                                     f"models.logistic.epochs={args.epochs}"], log, cold=args.cold)
        train = json.loads(sh(["git", "show", f"refs/exps/{exp_ref(repo, f'floor-{k}')}:metrics/train.json"], repo))
        bound = torch_seconds + train["train_seconds"]
        print(f"run {k}: wall {wall:.2f} s; floor {bound:.2f} s (import torch {torch_seconds:.2f} s + train_seconds "
              f"{train['train_seconds']:.2f} s): {wall / bound:.1f}x; load {os.getloadavg()[0]:.1f}")
        for what, seconds in breakdown(events, wall):
            print(f"    {what:<58} {seconds:6.2f} s")


def exp_ref(repo: Path, name: str) -> str:
    refs = sh(["git", "for-each-ref", "--format=%(refname)", "refs/exps"], repo).split()
    return next(r for r in refs if r.endswith(f"/{name}")).removeprefix("refs/exps/")


def parallel(repo: Path, args) -> None:
    """Two queued experiments of `--epochs` epochs run with -j 1, then the same two with -j 2 (other names)."""
    outputs = {}
    for jobs in (1, 2):
        names = [f"par-j{jobs}-{k}" for k in range(2)]
        for name, seed in zip(names, (1, 2)):
            sh(["dvc", "exp", "run", "--queue", "-n", name, "-S", f"models.logistic.epochs={args.epochs}",
                "-S", f"train.seed={seed}"], repo)
        seconds, events = traced(repo, ["dvc", "exp", "run", "--run-all", "-j", str(jobs)], repo.parent / "par.jsonl")
        trains = []
        for name in names:
            ref = f"refs/exps/{exp_ref(repo, name)}"
            trains.append(json.loads(sh(["git", "show", f"{ref}:metrics/train.json"], repo))["train_seconds"])
            outputs[name] = {path: sh(["git", "show", f"{ref}:{path}"], repo)
                             for path in ("metrics/test.json", "dvc.lock")}
        print(f"-j {jobs}: two experiments in {seconds:.1f} s; train_seconds {', '.join(map(str, trains))}; "
              f"load {os.getloadavg()[0]:.1f}", flush=True)
        if args.timeline:  # when each stage process ran, from the first process's start
            t0 = min(e["start"] for e in events)
            for e in sorted(events, key=lambda e: e["start"]):
                if e["event"] in ("process", "training") and (stage_of(e["who"]) or e["event"] == "training"):
                    print(f"    {e['start'] - t0:6.1f} {e['end'] - t0:6.1f}  pid {e['pid']} {e['who']} {e['event']}")
    for k in range(2):
        one, two = outputs[f"par-j1-{k}"], outputs[f"par-j2-{k}"]
        same_test = one["metrics/test.json"] == two["metrics/test.json"]
        model = [re.search(r"path: models/model.pt\n\s+hash: md5\n\s+md5: (\w+)", o["dvc.lock"]).group(1)
                 for o in (one, two)]
        print(f"seed {k + 1}: test.json {'identical' if same_test else 'DIFFERS'}, model.pt "
              f"{'identical' if model[0] == model[1] else 'DIFFERS'} between -j 1 and -j 2")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("what", choices=("floor", "parallel"))
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=None, help="3 for floor, 60 for parallel")
    parser.add_argument("--timeline", action="store_true", help="parallel: when each stage process ran")
    parser.add_argument("--cold", action="store_true", help="floor: CATDOG_WARM=0, every stage its own interpreter")
    parser.add_argument("--keep", help="a folder for the scratch clone, kept (default: a temporary one)")
    args = parser.parse_args()
    args.epochs = args.epochs or {"floor": 3, "parallel": 60}[args.what]
    cpu = sh([sys.executable, str(ROOT / "benchmarks" / "machine.py")], ROOT).strip().splitlines()[0]
    print(f"{sh(['git', 'rev-parse', '--short', 'HEAD'], ROOT).strip()}: {args.what}, {cpu}", flush=True)
    if args.keep:
        Path(args.keep).mkdir(parents=True, exist_ok=True)
        {"floor": floor, "parallel": parallel}[args.what](scratch(Path(args.keep)), args)
        return
    with tempfile.TemporaryDirectory(prefix="catdog-small-exp-") as folder:
        {"floor": floor, "parallel": parallel}[args.what](scratch(Path(folder)), args)


if __name__ == "__main__":
    main()
