"""Benchmark for a GPU machine: training throughput (images per second) of cnn, mobilenet_v2_finetune and mlp, with
mixed precision on and off, and the cached images resident on the GPU or copied batch by batch from pinned memory.

    python benchmarks/gpu.py --results RESULTS.md     # on CUDA: prints the table and appends it to RESULTS.md
    python benchmarks/gpu.py --device cpu --quick     # a smoke run anywhere: 16 images, 2 epochs

Run at the repository root inside .venv. It trains on data/prepared when `dvc repro prepare` has made it, else on
random uint8 images of the same shapes generated here (the speed is the same), so a bare machine with the
repository and its venv is enough; pretrained models start from random weights for the same reason. Each row is
one training through catdog.training.loop.fit as the train stage runs it (deterministic kernels included) for --epochs
epochs; the first epoch (cuDNN's set-up, the copy of the images to the GPU, the allocator's warm-up) is left out
of the figure, which counts training images and includes each epoch's validation pass over 64 images.
"""

import argparse
import datetime
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
os.environ.setdefault("TQDM_DISABLE", "1")  # the table is the output, not a progress bar per run

import torch  # noqa: E402

import catdog.device  # noqa: E402
from catdog.config import load_params  # noqa: E402
from catdog.data.prepared import load_split  # noqa: E402
from catdog.data.tensors import Split, as_tensors  # noqa: E402
from catdog.device import DevicePolicy, pick_device  # noqa: E402
from catdog.models.architectures import build_model  # noqa: E402
from catdog.paths import PREPARED_DIR  # noqa: E402
from catdog.training.loop import fit, seed_everything  # noqa: E402

MODELS = ("cnn", "mobilenet_v2_finetune", "mlp")
N_TRAIN, N_VAL = 1920, 64  # the embedded dataset's training split; a small validation pass


def split(name: str, size: int, n: int) -> tuple[Split, str]:
    """The first n images of a prepared split, or n random images of the same shape if there is none."""
    prepared = ROOT / PREPARED_DIR
    if (prepared / "manifest.json").exists():  # a size not in data.sizes is decoded on first use
        x, y, brightness = load_split(name, size, prepared)
        return as_tensors(x[:n], y[:n], brightness[:n]), "prepared images"
    generator = torch.Generator().manual_seed(0)
    return Split(torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=generator),
                 torch.arange(n, dtype=torch.float32) % 2, torch.rand(n, generator=generator)), "random images"


def images_per_second(cfg: dict, train: Split, val: Split, device, precision: str, resident: bool | None) -> float:
    seed_everything(0)
    model = build_model(cfg, load_weights=False)
    ends = []
    # resident: the images on the GPU whatever their size, or left in host memory; None: the pipeline's choice
    share = catdog.device.RESIDENT_SHARE
    catdog.device.RESIDENT_SHARE = {True: float("inf"), False: 0.0, None: share}[resident]
    try:
        # on_epoch runs after the epoch's validation score, read on the CPU: a sync point
        fit(model, cfg, train, val, device, seed=0, on_epoch=lambda row: ends.append(time.perf_counter()),
            precision=precision)
    finally:
        catdog.device.RESIDENT_SHARE = share
    return len(train.x) * (len(ends) - 1) / (ends[-1] - ends[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", help="auto (CUDA, else MPS, else CPU) | cuda | cpu | mps")
    parser.add_argument("--models", nargs="+", default=MODELS, help=f"entries of models (default: {MODELS})")
    parser.add_argument("--epochs", type=int, default=3, help="per row, the first one not timed (default 3)")
    parser.add_argument("--batch-size", type=int, help="default: each entry's batch_size")
    parser.add_argument("--quick", action="store_true", help="16 training images, 2 epochs: a smoke run")
    parser.add_argument("--results", type=Path, help="append the table to this Markdown file (RESULTS.md)")
    args = parser.parse_args()
    if args.epochs < 2:
        parser.error("--epochs must be at least 2: the first epoch is not timed")
    device = pick_device(args.device)
    n_train, n_val, epochs = (16, 8, 2) if args.quick else (N_TRAIN, N_VAL, args.epochs)
    entries = load_params(ROOT / "params.yaml")["models"]
    # On CUDA: mixed precision on and off, images resident on the GPU and in pinned host memory; elsewhere neither
    # applies and each model has one row.
    modes = [(precision, resident) for precision in ("auto", "float32") for resident in (True, False)] \
        if device.type == "cuda" else [("float32", None)]
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else \
        f"{device.type}, {torch.get_num_threads()} threads"
    rows = []
    for model in args.models:
        cfg = {**entries[model], "epochs": epochs, "batch_size": args.batch_size or entries[model]["batch_size"]}
        train, source = split("train", cfg["input_size"], n_train)
        val, _ = split("val", cfg["input_size"], n_val)
        for precision, resident in modes:
            rate = images_per_second(cfg, train, val, device, precision, resident)
            images = {True: "resident on the GPU", False: "pinned host memory", None: "host memory"}[resident]
            used = DevicePolicy(device, precision=precision).precision
            rows.append(f"| `{model}` | {cfg['input_size']} | {cfg['batch_size']} | {used} | {images} | "
                        f"{rate:,.0f} |")
            print(rows[-1], flush=True)
    caption = (f"Training throughput on {name} (torch {torch.__version__}), {len(train.x)} {source} per epoch, "
               f"{epochs} epochs, the first not timed:")
    table = "\n".join([caption, "", "| model | input | batch | precision | images | images/s |",
                       "|---|---|---|---|---|---|", *rows])
    print(f"\n{table}")
    if args.results:
        command = " ".join(["python benchmarks/gpu.py", *sys.argv[1:]])
        with open(args.results, "a") as f:
            f.write(f"\n## Training throughput, {datetime.date.today()}\n\n`{command}`\n\n{table}\n")


if __name__ == "__main__":
    main()
