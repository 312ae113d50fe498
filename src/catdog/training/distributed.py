"""Several processes training one model with DistributedDataParallel, started by torchrun or by train.processes.

Every process loads the whole cached dataset and draws the same seeded permutation each epoch. Each batch of
`batch_size` images (the global batch: the same batches as on one process) is cut into one consecutive part per
process; each process weights its mean loss by its part's share and DDP averages the gradients, so every step is
the step one process takes on the whole batch, up to the order of floating-point sums. Every process validates
(the weights are the same on all of them, so none waits for another); rank 0 alone writes outputs and logs to
MLflow. NCCL on GPUs, one GPU per process (cuda:LOCAL_RANK); gloo on CPU.
"""

import contextlib
import os
import sys

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from catdog import CatdogError


def size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def progress(iterable=None, **kwargs) -> tqdm:
    """A progress bar in one process only, rank 0's: several processes would draw over each other's bars. A bar that
    vanishes when done (leave=False: an epoch's batches) is drawn only on a terminal: in a log, `dvc exp run`'s
    say, tqdm could only place it under the outer bar with cursor-up escape codes."""
    transient_in_a_log = kwargs.get("leave") is False and not sys.stderr.isatty()
    return tqdm(iterable, disable=rank() > 0 or transient_in_a_log, **kwargs)


def under_torchrun() -> bool:
    return "WORLD_SIZE" in os.environ  # torchrun sets it, with RANK and LOCAL_RANK, in every process it starts


def _backend(device: torch.device) -> str:
    if device.type not in ("cuda", "cpu"):
        raise CatdogError(f"several processes train on CUDA (NCCL) or on the CPU (gloo), not on {device.type}")
    return "nccl" if device.type == "cuda" else "gloo"


def relaunch(processes: int, device: torch.device) -> None:
    """Replace this process by torchrun running the same command in `processes` processes on this machine; DVC's
    signals then reach torchrun, which passes them on to every process and stops all of them if one fails."""
    _backend(device)
    if device.type == "cuda" and processes > torch.cuda.device_count():
        raise CatdogError(f"train.processes={processes} but this machine has {torch.cuda.device_count()} GPU(s); "
                          "each process needs its own")
    sys.stdout.flush()
    os.execv(sys.executable, [sys.executable, "-m", "torch.distributed.run", "--standalone",
                              f"--nproc-per-node={processes}", *sys.argv])


@contextlib.contextmanager
def process_group(device: torch.device):
    """This process's device, inside torchrun's process group when torchrun started it (else `device` itself)."""
    if not under_torchrun():
        yield device
        return
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
        torch.cuda.set_device(device)
    dist.init_process_group(_backend(device))
    try:
        yield device
    finally:
        dist.destroy_process_group()


def wrap(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """The module in DDP when several processes train it (it averages their gradients); else the module itself."""
    if size() == 1:
        return model
    return DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)


def shard(index: torch.Tensor) -> tuple[torch.Tensor, int]:
    """This process's consecutive part of a batch's indices, and how many images of the batch it holds. A last
    batch shorter than the number of processes leaves some without an image: they take the batch's first image
    with a count of 0 (so a loss weight of 0), because DDP's gradient averaging waits for every process's
    backward pass."""
    part = index.tensor_split(size())[rank()]
    return (part, len(part)) if len(part) else (index[:1], 0)


def all_sum(values: list[float], device: torch.device) -> list[float]:
    """Per-process totals (sums of losses, counts of correct predictions) summed over the processes."""
    if size() == 1:
        return values
    totals = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(totals)
    return totals.tolist()
