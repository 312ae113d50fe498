"""Benchmark: train.precision float32 vs bfloat16 on the CPU: seconds per epoch, best validation accuracy and
test accuracy of cnn and mobilenet_v2_finetune (issue 16: accuracy may drop by at most 0.5 points).

    python benchmarks/precision.py                                    # both models, params.yaml's epochs
    python benchmarks/precision.py --models cnn --epochs 3            # a short version
    python benchmarks/precision.py --results benchmarks/RESULTS.md    # also append the table there
    python benchmarks/precision.py --models cnn --epochs 1 --limit 64 --emulated-bf16   # a smoke run anywhere

Run at the repository root inside .venv, on an idle machine, after `dvc repro prepare`. Each row is one training
as the train stage runs it: params.yaml's entry, seed and data.train_fraction, catdog.training.loop.fit on the
prepared splits (deterministic kernels, channels-last, fused Adam), then the best-validation checkpoint scored on
the test split in the same precision, as the evaluate stage does. Seconds per epoch include the epoch's
validation pass and leave the first epoch out (oneDNN's kernel set-up, the allocator's warm-up); with one epoch
it is that one. bfloat16 needs a CPU with native bf16 (avx512_bf16/amx_bf16); elsewhere its rows say so, unless
--emulated-bf16 runs it anyway (the time then shows emulation's cost, not bf16's).
"""

import argparse
import datetime
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
os.environ.setdefault("TQDM_DISABLE", "1")  # the table is the output, not a progress bar per run

import torch  # noqa: E402
from machine import describe  # noqa: E402

from catdog import CatdogError, device  # noqa: E402
from catdog.analysis.metrics import binary_metrics  # noqa: E402
from catdog.config import load_params  # noqa: E402
from catdog.data.prepared import load_split, train_subset  # noqa: E402
from catdog.data.tensors import Split, as_tensors  # noqa: E402
from catdog.device import DevicePolicy  # noqa: E402
from catdog.inference.forward import predict  # noqa: E402
from catdog.models.architectures import build_model  # noqa: E402
from catdog.training.loop import fit, seed_everything  # noqa: E402

MODELS = ("cnn", "mobilenet_v2_finetune")
PRECISIONS = ("float32", "bfloat16")
CPU = torch.device("cpu")


def subset(split: Split, limit: int | None, seed: int) -> Split:
    """A seeded random `limit` images of the split (both classes, whatever the split's order), or all of it."""
    if limit is None or limit >= len(split.x):
        return split
    index = torch.randperm(len(split.x), generator=torch.Generator().manual_seed(seed))[:limit]
    return Split(*(t[index] for t in split))


def one_run(name: str, cfg: dict, params: dict, precision: str, limit: int | None) -> dict:
    seed = params["seed"]
    fraction = params["data"].get("train_fraction", 1.0)
    train = subset(as_tensors(*train_subset(*load_split("train", cfg["input_size"]), fraction, seed)), limit, seed)
    val = subset(as_tensors(*load_split("val", cfg["input_size"])), limit, seed)
    test = subset(as_tensors(*load_split("test", cfg["input_size"])), limit, seed)
    seed_everything(seed)
    model = build_model(cfg, name)
    ends = []
    start = time.perf_counter()
    history = fit(model, cfg, train, val, CPU, seed, on_epoch=lambda row: ends.append(time.perf_counter()),
                  precision=precision)
    epochs = [b - a for a, b in zip([start, *ends], ends)]
    model.load_state_dict(history.best_state)
    outputs = predict(model, test.x, cfg["batch_size"], CPU, precision)
    best = history.rows[history.best_epoch - 1]
    return {"seconds_per_epoch": statistics.mean(epochs[1:] or epochs), "first_epoch": epochs[0],
            "best_val_accuracy": best["val_accuracy"], "best_epoch": history.best_epoch,
            "test_accuracy": float(binary_metrics(outputs[:, 0], test.y)["accuracy"]),
            "sizes": (len(train.x), len(val.x), len(test.x))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=MODELS, help=f"entries of models (default: {MODELS})")
    parser.add_argument("--precisions", nargs="+", default=PRECISIONS, choices=PRECISIONS)
    parser.add_argument("--epochs", type=int, help="instead of each entry's epochs (a short run)")
    parser.add_argument("--limit", type=int, help="at most this many images of each split (a smoke run)")
    parser.add_argument("--emulated-bf16", action="store_true",
                        help="run bfloat16 on a CPU without native bf16 too (slower than float32 there)")
    parser.add_argument("--results", type=Path, help="append the table to this Markdown file (RESULTS.md)")
    args = parser.parse_args()
    native = device.cpu_has_native_bf16()
    if args.emulated_bf16 and not native:
        device.cpu_has_native_bf16 = lambda: True  # DevicePolicy asks this; autocast runs bf16 either way
    bf16_label = "bfloat16 (emulated)" if args.emulated_bf16 and not native else "bfloat16"
    params = load_params(ROOT / "params.yaml")
    machine = describe()
    print(machine, flush=True)
    rows, accuracies = [], {}
    for name in args.models:
        cfg = {**params["models"][name], **({"epochs": args.epochs} if args.epochs else {})}
        for precision in args.precisions:
            label = bf16_label if precision == "bfloat16" else precision
            try:
                DevicePolicy(CPU, precision=precision)  # a CPU without native bf16: its one line, in the table
            except CatdogError as error:
                rows.append(f"| `{name}` | {label} | {cfg['epochs']} | not run: {error} | | | | |")
                print(rows[-1], flush=True)
                continue
            result = one_run(name, cfg, params, precision, args.limit)
            accuracies[name, precision] = result["test_accuracy"]
            sizes = "/".join(map(str, result["sizes"]))
            rows.append(f"| `{name}` | {label} | {cfg['epochs']} | {sizes} | {result['seconds_per_epoch']:.2f} | "
                        f"{result['first_epoch']:.2f} | {result['best_val_accuracy']:.4f} ({result['best_epoch']}) | "
                        f"{result['test_accuracy']:.4f} |")
            print(rows[-1], flush=True)
    notes = [f"`{name}`: test accuracy bfloat16 − float32 = {100 * (accuracies[name, 'bfloat16'] - f32):+.1f} points"
             for (name, precision), f32 in accuracies.items()
             if precision == "float32" and (name, "bfloat16") in accuracies]
    caption = (f"{machine}. train.precision on the CPU, seed {params['seed']}; s/epoch leaves out the first "
               "epoch (with one epoch: that one); best val accuracy with its epoch; test accuracy of that checkpoint:")
    table = "\n".join([caption, "", "| model | precision | epochs | train/val/test images | s/epoch | first epoch s "
                       "| best val accuracy (epoch) | test accuracy |", "|---|---|---|---|---|---|---|---|", *rows,
                       *(["", *notes] if notes else [])])
    print(f"\n{table}")
    if args.results:
        command = " ".join(["python benchmarks/precision.py", *sys.argv[1:]])
        with open(args.results, "a") as f:
            f.write(f"\n## train.precision on the CPU, {datetime.date.today()}\n\n`{command}`\n\n{table}\n")


if __name__ == "__main__":
    main()
