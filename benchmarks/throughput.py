"""Benchmark: training throughput (training images per second) of each model in params.yaml, the pipeline's
`catdog.training.loop.fit` against a plain PyTorch loop over the same cached tensors, same model, seed and threads.

    python benchmarks/throughput.py --models logistic shallow deep deeper mlp cnn numpy_deep multitask
    python benchmarks/throughput.py --models mobilenet_v2_frozen mobilenet_v2_finetune --train-fraction 0.1 \
        --epochs 2 --repeats 2        # the pretrained ones on a tenth of the training images (224x224 is slow)
    python benchmarks/throughput.py --models logistic cnn --epochs 1 --repeats 1   # a quick look
    python benchmarks/throughput.py --threads 1 ...    # on a machine shared with other jobs (see seed_loop.py)

With no --models it runs every entry (resnet18_* are listed as not measured where their ImageNet file is missing).

Run at the repository root inside .venv after `dvc repro` (it reads data/prepared); `2>/dev/null` hides the
pipeline's progress bars. The plain loop does, each epoch, a shuffled pass of index -> uint8 batch -> float in
[-1, 1] -> forward -> loss -> backward -> step, then the validation pass the pipeline does (outputs of every
validation image in batches, loss and accuracy), so both sides do the same work; the pipeline also keeps its
per-epoch history and the best state (the train stage adds one MLflow call per epoch, not timed here). The plain
loop builds the model's optimizer with PyTorch's defaults (on the CPU Adam loops over the parameters), the
pipeline as `training.loop.fit` does (Adam fused into one kernel): the same update, in another order of operations.

Every round of each side is a fresh process (this script with --side), as a user's own training script would be:
it loads the cached tensors, builds the model with the seed and runs one untimed warm-up batch, then times one
training run. So the pipeline's process-wide settings (glibc keeping freed memory, `device.keep_freed_memory`)
count for the pipeline and not for the plain loop; `--plain-keeps-freed-memory` gives the plain loop those
settings too, which leaves only the two loops' own differences. The sides alternate for --repeats rounds, and the
table gives the best round (median in brackets): img/s = training images x epochs / seconds, validation included.
It prints a Markdown table: model, pipeline img/s, plain img/s, their ratio, and how far apart the two sides' last
validation losses are (0 or round-off: they trained the same model).
"""

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from machine import describe  # noqa: E402
from torch.nn import functional as F  # noqa: E402

from catdog import CatdogError  # noqa: E402
from catdog.config import device_name, load_params  # noqa: E402
from catdog.data.prepared import load_split, train_subset  # noqa: E402
from catdog.data.tensors import as_tensors  # noqa: E402
from catdog.device import keep_freed_memory, pick_device  # noqa: E402
from catdog.models.architectures import build_model  # noqa: E402
from catdog.training import features  # noqa: E402
from catdog.training.loop import fit, seed_everything  # noqa: E402

OPTIMIZERS = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam}


def as_float(x: torch.Tensor, device) -> torch.Tensor:
    return x.to(device).float().div_(127.5).sub_(1.0)


def plain_loss(outputs, y, brightness, cfg):
    """BCE on the class logit; a multi-task model (a second output column) adds its weighted brightness MSE."""
    loss = F.binary_cross_entropy_with_logits(outputs[:, 0], y)
    if outputs.shape[1] == 1:
        return loss
    weights = cfg["loss_weights"]
    return weights["classification"] * loss + weights["brightness"] * F.mse_loss(outputs[:, 1], brightness)


def plain_torch(model, cfg, train, val, device, seed) -> tuple[float, float]:
    """(seconds, the last epoch's validation loss)"""
    model.to(device)
    optimizer = OPTIMIZERS[cfg["optimizer"]]([p for p in model.parameters() if p.requires_grad], lr=cfg["lr"])
    order = torch.Generator().manual_seed(seed)
    step = len(train.x) if cfg["batch_size"] == "full" else cfg["batch_size"]
    val_y, val_brightness = val.y.to(device), val.brightness.to(device)
    history = []  # each epoch's validation loss and accuracy, as the pipeline's History keeps them
    start = time.perf_counter()
    for _ in range(cfg["epochs"]):
        model.train()  # a frozen backbone stays in eval mode (Pretrained.train) and runs on every batch
        for index in torch.randperm(len(train.x), generator=order).split(step):
            outputs = model(as_float(train.x[index], device))
            loss = plain_loss(outputs, train.y[index].to(device), train.brightness[index].to(device), cfg)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        model.eval()
        with torch.no_grad():
            outputs = torch.cat([model(as_float(x, device)) for x in val.x.split(step)])
            val_loss = plain_loss(outputs, val_y, val_brightness, cfg).item()
            val_accuracy = ((outputs[:, 0] > 0).float() == val_y).sum().item() / len(val_y)
        history.append((val_loss, val_accuracy))
    return time.perf_counter() - start, history[-1][0]


def plain_numpy(model, cfg, train, val, device, seed) -> tuple[float, float]:
    """The NumPy network has no torch loop: its own NumpyNet.fit, called directly, with the same validation."""
    net, history = model.net, []
    start = time.perf_counter()
    x = train.x.reshape(len(train.x), -1).numpy().T.astype(np.float32) / np.float32(127.5) - np.float32(1)
    val_x = val.x.reshape(len(val.x), -1).numpy().T.astype(np.float32) / np.float32(127.5) - np.float32(1)
    val_y = val.y.numpy()[None, :]

    def validate(i, cost, accuracy):
        probabilities, caches = net.forward(val_x)
        history.append((net.cost(probabilities, val_y, caches), ((probabilities > 0.5) == (val_y > 0.5)).mean()))

    net.fit(x, train.y.numpy()[None, :], lr=cfg["lr"], iterations=cfg["epochs"],
            batch_size=None if cfg["batch_size"] == "full" else cfg["batch_size"], seed=seed, on_iteration=validate)
    return time.perf_counter() - start, history[-1][0]


def pipeline(model, cfg, train, val, device, seed) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as cache:
        features.FEATURE_CACHE = Path(cache)  # empty every round: a frozen backbone's features are computed, cold
        start = time.perf_counter()
        history = fit(model, cfg, train, val, device, seed)
        return time.perf_counter() - start, history.rows[-1]["val_loss"]


def warm_up(cfg, train, device) -> None:
    """One untimed training batch: first-call costs (allocator, kernel selection, lazy init) hit neither side."""
    model = build_model(cfg)
    if isinstance(model, torch.nn.Module):
        model.to(device).train()
        outputs = model(as_float(train.x[:32], device))
        plain_loss(outputs, train.y[:32].to(device), train.brightness[:32].to(device), cfg).backward()


def one_round(args) -> None:
    """--side: one timed training run in this process; prints {"seconds": ..., "val_loss": ...} as JSON."""
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.side == "plain" and args.plain_keeps_freed_memory:
        keep_freed_memory()
    params = load_params()
    seed, device = params["seed"], pick_device(device_name(params))
    cfg = dict(params["models"][args.models[0]], epochs=args.epochs, augment=None)  # the plain loop does not augment
    train = as_tensors(*train_subset(*load_split("train", cfg["input_size"]), args.train_fraction, seed))
    val = as_tensors(*load_split("val", cfg["input_size"]))
    warm_up(cfg, train, device)
    run = pipeline if args.side == "pipeline" else plain_numpy if cfg["arch"] == "numpy" else plain_torch
    seed_everything(seed)
    seconds, val_loss = run(build_model(cfg, args.models[0]), cfg, train, val, device, seed)
    print(json.dumps({"seconds": seconds, "val_loss": val_loss, "images": len(train.x) * args.epochs}))


def in_fresh_process(side: str, name: str, args) -> dict:
    command = [sys.executable, __file__, "--side", side, "--models", name, "--epochs", str(args.epochs),
               "--train-fraction", str(args.train_fraction)]
    command += ["--threads", str(args.threads)] if args.threads else []
    command += ["--plain-keeps-freed-memory"] if args.plain_keeps_freed_memory else []
    done = subprocess.run(command, stdout=subprocess.PIPE, text=True)
    if done.returncode:
        raise SystemExit(f"{side} round of {name} failed (exit {done.returncode})")
    return json.loads(done.stdout.splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", help="entries of models in params.yaml (default: all)")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per round (numpy_deep: iterations)")
    parser.add_argument("--train-fraction", type=float, default=1.0, help="a stratified share of the training "
                        "split, as data.train_fraction (default: all); validation stays whole")
    parser.add_argument("--repeats", type=int, default=3, help="rounds per side (default 3)")
    parser.add_argument("--threads", type=int, help="torch threads for both sides (default: torch's choice)")
    parser.add_argument("--plain-keeps-freed-memory", action="store_true",
                        help="give the plain loop the pipeline's allocator settings too")
    parser.add_argument("--side", choices=["pipeline", "plain"], help=argparse.SUPPRESS)  # one round, internal
    args = parser.parse_args()
    if args.side:
        return one_round(args)
    params = load_params()
    names = args.models or list(params["models"])
    print(f"{describe()}; device {pick_device(device_name(params))}")
    allocator = "the pipeline's" if args.plain_keeps_freed_memory else "glibc's default"
    print(f"{args.epochs} epochs, training fraction {args.train_fraction}, best of {args.repeats} rounds, each a "
          f"fresh process; the plain loop with {allocator} allocator settings\n")
    print("| model | input | training images | pipeline img/s, best (median) | plain img/s, best (median) "
          "| pipeline / plain, best (target ≥ 1.0×) | last val loss, pipeline − plain |")
    print("|---|---|---|---|---|---|---|", flush=True)
    skipped = []
    for name in names:
        cfg = params["models"][name]
        if cfg["arch"] == "pretrained":
            try:
                build_model(cfg, name)
            except CatdogError as error:  # ResNet18 without its ImageNet file, offline
                skipped.append(f"{name}: {error}")
                continue
        results = {"pipeline": [], "plain": []}
        for round_ in range(args.repeats):
            sides = ["pipeline", "plain"]
            for side in sides if round_ % 2 == 0 else sides[::-1]:  # alternate, so drifting load hits both
                print(f"{name}: {side}, round {round_ + 1}/{args.repeats} ...", file=sys.stderr, flush=True)
                results[side].append(in_fresh_process(side, name, args))
        images = results["pipeline"][0]["images"]
        best = {side: images / min(r["seconds"] for r in rs) for side, rs in results.items()}
        median = {side: images / statistics.median(r["seconds"] for r in rs) for side, rs in results.items()}
        gap = results["pipeline"][-1]["val_loss"] - results["plain"][-1]["val_loss"]  # same work, same model
        print(f"| {name} | {cfg['input_size']} | {images // args.epochs} | {best['pipeline']:.0f} "
              f"({median['pipeline']:.0f}) | {best['plain']:.0f} ({median['plain']:.0f}) "
              f"| {best['pipeline'] / best['plain']:.2f}× | {gap:.1e} |", flush=True)
    print("\nFrozen pretrained models (freeze: true) are expected far above 1×: the pipeline runs the backbone once\n"
          "over the training and validation images (an empty feature cache every round) and trains the head on\n"
          "the cached features, the plain loop runs the backbone on every batch of every epoch, so their ratio\n"
          "grows with --epochs (about one backbone pass against one per epoch). numpy_deep's plain side is its own\n"
          "NumpyNet.fit called directly (no torch loop exists for it).")
    for line in skipped:
        print(f"not measured: {line}")


if __name__ == "__main__":
    main()
