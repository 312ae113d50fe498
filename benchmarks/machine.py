"""The machine a benchmark ran on, in one line: CPU model, cores, load average, Python, torch and its threads.

    python benchmarks/machine.py     # what the benchmarks print first; benchmarks/*.py import `describe`

The load average is there because timings on a shared machine are only comparable at similar load.
"""

import os
import platform
from pathlib import Path


def cpu_model() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def describe() -> str:
    import torch  # late: the shell benchmark calls this file without needing torch for anything else

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (f"machine: {cpu_model()}, {cores} cores usable of {os.cpu_count()}, load average {load}; {gpu}; "
            f"Python {platform.python_version()}, torch {torch.__version__}, {torch.get_num_threads()} threads")


if __name__ == "__main__":
    print(describe())
