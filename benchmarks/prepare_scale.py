"""Benchmark: the `prepare` stage at Kaggle scale (2,500 and 25,000 photo-sized JPEGs), run as a whole process.

    python benchmarks/prepare_scale.py                   # 2,500 and 25,000 images (generating 25,000: minutes, once)
    python benchmarks/prepare_scale.py --n 2500          # a quick run
    python benchmarks/prepare_scale.py --n 2500 --repo /tmp/old-checkout   # another checkout's code, same images

Run inside .venv (it needs psutil, which the venv has). For each N it

1. generates N JPEGs the size of the Kaggle Dogs vs Cats photos (half cats, half dogs, ImageFolder layout): most
   have a long side of 500 px, the others 200-499 px, an aspect ratio of 0.6-1, JPEG quality 75-95, ~25 KB each
   (Kaggle's average is ~22 KB); a smooth colour field, a few hard-edged shapes and sensor-like noise, 2% greyscale.
   Generation is not measured; the folder is cached under --cache (default /tmp/catdog_prepare_scale), so a later
   run reuses it. Each image is seeded by (seed, class, index), so the 2,500 set is the first 1,250 of each class
   of the 25,000 set;
2. copies this checkout's src/ and params.yaml into a throw-away folder under --cache, with data.images pointing at
   the generated folder and every other param (data.sizes [64, 128, 224], the split, the seed) as committed, and
   runs `python src/stages/prepare.py` there, exactly as the DVC stage does;
3. samples the whole process tree (the stage and its decode pool) every --interval seconds and reports:
   - wall seconds and images per second (end to end: start-up, decoding, splitting, writing);
   - peak RSS of the tree (the sum over its processes), split into anonymous and file-backed pages. RSS counts
     every page of a memory-mapped file that the process has touched (earlier versions of prepare wrote the .npy
     arrays through np.memmap) for as long as it stays mapped, although the kernel can write such pages back and drop
     them under memory pressure: a file-backed RSS that grows with the dataset means a bigger machine, or a
     container's memory limit, is needed for the stage to run without reclaim, and it is what `top` and
     schedulers show. Anonymous memory (heap, the arrays a process holds) cannot be dropped at all (no swap here);
   - peak PSS (each shared page divided among the processes sharing it, so shared libraries count once across
     the pool) and USS (pages private to one process: what ending the tree would free);
   - the largest single process's own peak RSS as the kernel recorded it (VmHWM; it catches a spike between two
     samples);
   - CPU utilisation, user + system CPU seconds / wall / cores, for the whole run and per phase (start-up until
     the pool's workers appear, decoding while they live, splitting and writing after), with the parent's share:
     a parent near 100% of one core while the workers idle would mean its copying is the bottleneck. On a machine
     that other jobs load, CPU seconds alone cannot show that; so the workers' time spent waiting for a CPU (from
     /proc/PID/schedstat) is added to their CPU time: running or waiting near 100% of the cores means the pool
     always had work, and would keep every core busy on an idle machine. The machine's total CPU busy time over
     the same interval is printed beside it;
   - the size of data/prepared on disk, and the peak disk use of data/ during the run (prepare keeps a temporary
     all{size}.npy of every decoded image until the split files are written).

The numbers depend on the machine and on what else runs on it; say so when quoting them.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import psutil
import yaml
from PIL import Image, ImageDraw, ImageFilter

REPO = Path(__file__).resolve().parents[1]
CLASSES = ("cat", "dog")
MiB = 2 ** 20


# ---------------------------------------------------------------------------------------------------- generation

def _kaggle_like(job) -> None:
    """One JPEG of a Kaggle photo's size and weight; the content is irrelevant to prepare's cost, the size is not."""
    folder, seed, cls, i = job
    rng = np.random.default_rng([seed, cls, i])
    long = 500 if rng.random() < 0.6 else int(rng.integers(200, 500))
    short = round(long * rng.uniform(0.6, 1.0))
    w, h = (long, short) if rng.random() < 0.7 else (short, long)  # mostly landscape
    k = int(rng.integers(3, 12))
    img = Image.fromarray(rng.integers(0, 256, (k, k, 3), dtype=np.uint8)).resize((w, h), Image.Resampling.BICUBIC)
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(4, 14))):  # hard edges, as objects against a background
        x, y, r = rng.uniform(-0.1, 1.0) * w, rng.uniform(-0.1, 1.0) * h, rng.uniform(0.05, 0.4) * min(w, h)
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        if rng.random() < 0.5:
            draw.ellipse([x, y, x + r, y + r * rng.uniform(0.4, 1.6)], fill=colour)
        else:
            draw.polygon([(x + r * np.cos(a), y + r * np.sin(a)) for a in rng.uniform(0, 2 * np.pi, 3)], fill=colour)
    if rng.random() < 0.5:
        img = img.filter(ImageFilter.GaussianBlur(rng.uniform(0.5, 2)))
    pixels = np.asarray(img, np.float32) + rng.standard_normal((h, w, 3), np.float32) * rng.uniform(0.5, 6)
    img = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    if rng.random() < 0.02:
        img = img.convert("L")
    img.save(Path(folder) / CLASSES[cls] / f"{CLASSES[cls]}.{i:05d}.jpg", "JPEG", quality=int(rng.integers(75, 96)))


def image_folder(cache: Path, n: int, seed: int, workers: int) -> Path:
    """The cached folder of n generated images, generating it first if it is missing or incomplete."""
    folder = cache / f"images_{n}_seed{seed}"
    if (folder / ".complete").exists():
        return folder
    tmp = folder.with_name(folder.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    for name in CLASSES:
        (tmp / name).mkdir(parents=True)
    n_cat = (n + 1) // 2
    jobs = [(str(tmp), seed, 0, i) for i in range(n_cat)] + [(str(tmp), seed, 1, i) for i in range(n - n_cat)]
    start = time.perf_counter()
    print(f"generating {n} images in {folder} ({workers} process(es); not measured) ...", flush=True)
    with get_context("spawn").Pool(workers) as pool:
        for done, _ in enumerate(pool.imap_unordered(_kaggle_like, jobs, chunksize=32), 1):
            if done % 2500 == 0:
                print(f"  {done}/{n}", flush=True)
    (tmp / ".complete").write_text(f"{n}\n")  # hidden: discover() ignores it
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(tmp, folder)
    print(f"  generated in {time.perf_counter() - start:.0f} s", flush=True)
    return folder


# ------------------------------------------------------------------------------------------------------ sampling

def _kib_fields(path: str, names: tuple[str, ...]) -> dict[str, int]:
    """Fields of a /proc file written as `Name:   123 kB`, in bytes (missing ones absent)."""
    out = {}
    with open(path) as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in names:
                out[key] = int(rest.split()[0]) * 1024
    return out


ROLLUP = ("Pss", "Private_Clean", "Private_Dirty")
STATUS = ("RssAnon", "RssFile", "RssShmem", "VmHWM")


class TreeSampler(threading.Thread):
    """Samples memory and CPU of a process and all its descendants every `interval` seconds until stopped.

    RSS (from /proc/PID/status: counters, cheap) and CPU times are read every sample; the list of descendants every
    ~0.25 s (psutil scans all of /proc for it); PSS and USS (/proc/PID/smaps_rollup, which walks the page tables:
    tens of ms for a process mapping gigabytes) every `pss_interval` seconds."""

    def __init__(self, pid: int, interval: float, pss_interval: float, disk: Path):
        super().__init__(daemon=True)
        self.root, self.interval, self.pss_interval, self.disk = psutil.Process(pid), interval, pss_interval, disk
        self.stop, self.samples, self.cpu_seconds = threading.Event(), [], 0.0
        self.procs = [self.root]
        self.cpu = {}      # pid -> last seen user + system seconds (kept after the process ends)
        self.wait = {}     # pid -> last seen seconds spent runnable but waiting for a CPU (/proc/PID/schedstat)
        self.role = {}     # pid -> "parent" | "worker" | "other"
        self.hwm = {}      # pid -> largest VmHWM seen
        self.t0 = time.perf_counter()
        self.last_pss = self.last_disk = self.last_list = -1e9
        self.peak_disk = self.peak_pss = self.peak_uss = 0

    def _role(self, proc) -> str:
        if proc.pid == self.root.pid:
            return "parent"
        try:
            return "worker" if "--multiprocessing-fork" in proc.cmdline() else "other"
        except psutil.Error:
            return "other"

    def sample(self) -> None:
        t = time.perf_counter() - self.t0
        if t - self.last_list >= 0.25:
            self.last_list = t
            try:
                self.procs = [self.root] + self.root.children(recursive=True)
            except psutil.Error:
                return
        with_pss = t - self.last_pss >= self.pss_interval
        row = {"t": t, "rss": 0, "anon": 0, "file": 0, "parent_rss": 0, "parent_anon": 0, "parent_file": 0,
               "workers": 0}
        pss = uss = 0
        for proc in self.procs:
            try:
                status = _kib_fields(f"/proc/{proc.pid}/status", STATUS)
                cpu = proc.cpu_times()
                with open(f"/proc/{proc.pid}/schedstat") as f:
                    self.wait[proc.pid] = int(f.read().split()[1]) / 1e9
                if with_pss:
                    rollup = _kib_fields(f"/proc/{proc.pid}/smaps_rollup", ROLLUP)
                    pss += rollup.get("Pss", 0)
                    uss += rollup.get("Private_Clean", 0) + rollup.get("Private_Dirty", 0)
            except (OSError, psutil.Error):  # it has ended
                continue
            if proc.pid not in self.role:
                self.role[proc.pid] = self._role(proc)
            role = self.role[proc.pid]
            self.cpu[proc.pid] = cpu.user + cpu.system  # its own time, not that of the children it reaped
            self.hwm[proc.pid] = max(self.hwm.get(proc.pid, 0), status.get("VmHWM", 0))
            anon, file = status.get("RssAnon", 0), status.get("RssFile", 0) + status.get("RssShmem", 0)
            row["rss"] += anon + file  # VmRSS is exactly RssAnon + RssFile + RssShmem
            row["anon"] += anon
            row["file"] += file
            row["workers"] += role == "worker"
            if role == "parent":
                row["parent_rss"], row["parent_anon"], row["parent_file"] = anon + file, anon, file
        if with_pss:
            self.last_pss = t
            self.peak_pss, self.peak_uss = max(self.peak_pss, pss), max(self.peak_uss, uss)
        row["tree_cpu"] = sum(self.cpu.values())
        row["parent_cpu"] = self.cpu.get(self.root.pid, 0.0)
        row["worker_cpu"] = sum(c for p, c in self.cpu.items() if self.role.get(p) == "worker")
        row["worker_wait"] = sum(w for p, w in self.wait.items() if self.role.get(p) == "worker")
        system = psutil.cpu_times()
        row["system_busy"] = sum(system) - system.idle - getattr(system, "iowait", 0.0)
        if t - self.last_disk >= 0.5:  # a folder walk is not free either
            self.last_disk = t
            self.peak_disk = max(self.peak_disk, disk_usage(self.disk)[1])
        self.samples.append(row)

    def run(self) -> None:
        start = time.thread_time()
        while True:
            self.sample()
            if self.stop.wait(self.interval):
                break
        self.cpu_seconds = time.thread_time() - start


def disk_usage(folder: Path) -> tuple[int, int]:
    """(apparent bytes, allocated bytes) of the files under folder."""
    apparent = allocated = 0
    for dirpath, _, names in os.walk(folder):
        for name in names:
            try:
                st = os.stat(os.path.join(dirpath, name), follow_symlinks=False)
            except OSError:
                continue
            apparent += st.st_size
            allocated += st.st_blocks * 512
    return apparent, allocated


# ------------------------------------------------------------------------------------------------------- running

def throwaway_repo(cache: Path, repo: Path, n: int, images: Path) -> Path:
    """A copy of repo's src/ and params.yaml with data.images pointing at the generated folder."""
    run_dir = cache / f"run_{n}"
    shutil.rmtree(run_dir, ignore_errors=True)
    shutil.copytree(repo / "src", run_dir / "src", ignore=shutil.ignore_patterns("__pycache__"))
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["data"]["images"] = str(images)
    (run_dir / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return run_dir


def phase(samples: list[dict], start: float, end: float, cores: int) -> dict:
    """CPU utilisation between two sample times: the tree, its parent, its workers and the whole machine."""
    inside = [s for s in samples if start <= s["t"] <= end]
    if len(inside) < 2 or inside[-1]["t"] <= inside[0]["t"]:
        return {}
    a, b = inside[0], inside[-1]
    wall = b["t"] - a["t"]
    return {"wall_s": wall,
            "tree_util": (b["tree_cpu"] - a["tree_cpu"]) / wall / cores,
            "parent_core_share": (b["parent_cpu"] - a["parent_cpu"]) / wall,
            "workers_util": (b["worker_cpu"] - a["worker_cpu"]) / wall / cores,
            "workers_runnable": (b["worker_cpu"] - a["worker_cpu"] + b["worker_wait"] - a["worker_wait"])
            / wall / cores,
            "machine_busy": (b["system_busy"] - a["system_busy"]) / wall / cores}


def measure(run_dir: Path, n: int, interval: float, pss_interval: float) -> dict:
    cores = os.cpu_count() or 1
    (run_dir / "data").mkdir(exist_ok=True)
    with open(run_dir / "prepare.log", "w") as log:
        start = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "src/stages/prepare.py"], cwd=run_dir, stdout=log,
                                stderr=subprocess.STDOUT)
        sampler = TreeSampler(proc.pid, interval, pss_interval, run_dir / "data")
        sampler.start()
        _, status, usage = os.wait4(proc.pid, 0)  # rusage of the stage and every descendant it waited for
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        sampler.stop.set()
        sampler.join()
    if proc.returncode != 0:
        sys.exit(f"prepare failed (exit {proc.returncode}); see {run_dir / 'prepare.log'}:\n"
                 + (run_dir / "prepare.log").read_text()[-3000:])
    samples = sampler.samples
    manifest = json.loads((run_dir / "data/prepared/manifest.json").read_text())
    apparent, allocated = disk_usage(run_dir / "data/prepared")
    peak = max(samples, key=lambda s: s["rss"])
    with_workers = [s["t"] for s in samples if s["workers"]]
    t_pool, t_pool_end = (with_workers[0], with_workers[-1]) if with_workers else (0.0, 0.0)
    cpu = usage.ru_utime + usage.ru_stime
    return {
        "images": n, "used": manifest["counts"]["used"], "cores": cores, "wall_s": wall, "images_per_s": n / wall,
        "cpu_s": cpu, "cpu_util": cpu / wall / cores,
        "peak_rss": peak["rss"], "peak_rss_anon": peak["anon"], "peak_rss_file": peak["file"],
        "peak_parent_rss": max(s["parent_rss"] for s in samples),
        "peak_parent_file": max(s["parent_file"] for s in samples),
        "peak_parent_anon": max(s["parent_anon"] for s in samples),
        "peak_anon": max(s["anon"] for s in samples), "peak_pss": sampler.peak_pss, "peak_uss": sampler.peak_uss,
        "peak_single_process_hwm": max(sampler.hwm.values(), default=0),
        "kernel_maxrss": usage.ru_maxrss * 1024,
        "processes_seen": {role: list(sampler.role.values()).count(role) for role in ("parent", "worker", "other")},
        "phases": {"start-up": phase(samples, 0, t_pool, cores),
                   "decode (pool alive)": phase(samples, t_pool, t_pool_end, cores),
                   "split + write": phase(samples, t_pool_end, wall, cores)},
        "machine_busy": phase(samples, 0, wall, cores).get("machine_busy"),
        "prepared_bytes": apparent, "prepared_allocated": allocated, "peak_data_disk": sampler.peak_disk,
        "samples": len(samples), "sampler_cpu_s": sampler.cpu_seconds,
    }


def mib(n: int) -> str:
    return f"{n / MiB:,.0f} MiB"


def print_result(r: dict) -> None:
    print(f"\n## {r['images']:,} images ({r['used']:,} used), {r['cores']} cores\n")
    print(f"wall {r['wall_s']:.1f} s, {r['images_per_s']:.0f} images/s; CPU {r['cpu_s']:.1f} s = "
          f"{r['cpu_util']:.0%} of {r['cores']} cores (the machine as a whole was {r['machine_busy']:.0%} busy, "
          "other jobs included)")
    print(f"peak RSS of the tree {mib(r['peak_rss'])} ({mib(r['peak_rss_anon'])} anonymous + "
          f"{mib(r['peak_rss_file'])} file-backed at that moment); peak PSS {mib(r['peak_pss'])}, "
          f"peak USS {mib(r['peak_uss'])}, peak anonymous {mib(r['peak_anon'])}")
    print(f"parent alone: peak RSS {mib(r['peak_parent_rss'])}, of it at most {mib(r['peak_parent_file'])} "
          f"file-backed and {mib(r['peak_parent_anon'])} anonymous; largest single-process peak (kernel VmHWM) "
          f"{mib(r['peak_single_process_hwm'])}")
    print(f"data/prepared {mib(r['prepared_bytes'])} ({mib(r['prepared_allocated'])} allocated); peak disk use of "
          f"data/ during the run {mib(r['peak_data_disk'])}")
    print("\n| phase | wall | tree CPU / cores | parent (share of one core) | workers CPU / cores "
          "| workers running or waiting for a CPU / cores | machine busy |")
    print("|---|---|---|---|---|---|---|")
    for name, p in r["phases"].items():
        if p:
            print(f"| {name} | {p['wall_s']:.1f} s | {p['tree_util']:.0%} | {p['parent_core_share']:.0%} | "
                  f"{p['workers_util']:.0%} | {p['workers_runnable']:.0%} | {p['machine_busy']:.0%} |")
    print(f"\n({r['samples']} samples; the sampler itself used {r['sampler_cpu_s']:.1f} CPU s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[2500, 25000], help="dataset sizes to run")
    parser.add_argument("--n", type=int, help="one dataset size (overrides --sizes)")
    parser.add_argument("--cache", type=Path, default=Path("/tmp/catdog_prepare_scale"),
                        help="where the generated images and the throw-away copies live")
    parser.add_argument("--repo", type=Path, default=REPO, help="the checkout whose src/ and params.yaml run")
    parser.add_argument("--seed", type=int, default=0, help="seed of the generated images")
    parser.add_argument("--gen-workers", type=int, default=os.cpu_count() or 1, help="processes generating images")
    parser.add_argument("--interval", type=float, default=0.05, help="seconds between samples of RSS and CPU")
    parser.add_argument("--pss-interval", type=float, default=0.5, help="seconds between samples of PSS and USS")
    parser.add_argument("--keep", action="store_true", help="keep the throw-away copy and its data/prepared")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    results = []
    for n in [args.n] if args.n else args.sizes:
        images = image_folder(args.cache, n, args.seed, args.gen_workers)
        run_dir = throwaway_repo(args.cache, args.repo.resolve(), n, images)
        print(f"running `python src/stages/prepare.py` in {run_dir} on {n} images ...", flush=True)
        result = measure(run_dir, n, args.interval, args.pss_interval)
        print_result(result)
        results.append(result)
        if not args.keep:
            shutil.rmtree(run_dir)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
