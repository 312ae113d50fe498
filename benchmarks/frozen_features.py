"""Benchmark: a frozen-backbone model trained on cached backbone features vs the naive loop (the frozen backbone
run forward on every batch of every epoch), same model, data, seed and hyperparameters.

    python benchmarks/frozen_features.py                               # mobilenet_v2_frozen, its params.yaml entry
    python benchmarks/frozen_features.py --train-fraction 0.25 --epochs 5  # a quicker look

Run at the repository root inside .venv after `dvc repro` (it reads data/prepared). It prints the wall time of
each path (the cached path cold, i.e. computing the features, and warm, i.e. reading them from the cache), the
best validation accuracy of each, and how far apart the two paths' validation probabilities end up.
"""

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import torch  # noqa: E402

from catdog.config import load_params  # noqa: E402
from catdog.data.prepared import load_split, train_subset  # noqa: E402
from catdog.data.tensors import as_tensors  # noqa: E402
from catdog.device import pick_device  # noqa: E402
from catdog.inference.forward import predict  # noqa: E402
from catdog.models.architectures import build_model  # noqa: E402
from catdog.training import features  # noqa: E402
from catdog.training.loop import fit, seed_everything  # noqa: E402


def timed_fit(cfg, train, val, device, seed, cache_features):
    seed_everything(seed)
    model = build_model(cfg)
    cacheable = features.cacheable
    if not cache_features:  # the naive loop: the frozen backbone runs on every batch of every epoch
        features.cacheable = lambda model, cfg: False
    try:
        start = time.perf_counter()
        history = fit(model, cfg, train, val, device, seed)
        seconds = time.perf_counter() - start
    finally:
        features.cacheable = cacheable
    model.load_state_dict(history.best_state)
    probabilities = torch.sigmoid(predict(model.to(device), val.x, 64, device)[:, 0])
    return seconds, history, probabilities


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="mobilenet_v2_frozen", help="a frozen entry of models in params.yaml")
    parser.add_argument("--epochs", type=int, help="default: the entry's epochs")
    parser.add_argument("--train-fraction", type=float, default=1.0, help="a stratified share of the training "
                        "images, as data.train_fraction (default: all)")
    args = parser.parse_args()
    params = load_params()
    cfg = dict(params["models"][args.model], augment=None)
    cfg["epochs"] = args.epochs or cfg["epochs"]
    device, seed = pick_device("auto"), params["seed"]
    train = as_tensors(*train_subset(*load_split("train", cfg["input_size"]), args.train_fraction, seed))
    val = as_tensors(*load_split("val", cfg["input_size"]))
    print(f"{args.model}: {len(train.x)} training and {len(val.x)} validation images of "
          f"{cfg['input_size']}x{cfg['input_size']}, {cfg['epochs']} epochs, batch {cfg['batch_size']}, "
          f"{device}, {torch.get_num_threads()} threads")
    results = {}
    with tempfile.TemporaryDirectory() as cache:
        features.FEATURE_CACHE = Path(cache)  # an empty cache, so that the first cached run computes the features
        results["cached, cold (features computed)"] = timed_fit(cfg, train, val, device, seed, True)
        results["cached, warm (features read)"] = timed_fit(cfg, train, val, device, seed, True)
    results["naive (backbone every batch)"] = timed_fit(cfg, train, val, device, seed, False)
    print("\n| path | wall time | per epoch | best val accuracy (epoch) |\n|---|---|---|---|")
    for name, (seconds, history, _) in results.items():
        best = history.rows[history.best_epoch - 1]["val_accuracy"]
        print(f"| {name} | {seconds:.1f} s | {seconds / cfg['epochs']:.2f} s | {best:.3f} ({history.best_epoch}) |")
    naive, cold = results["naive (backbone every batch)"], results["cached, cold (features computed)"]
    print(f"\nnaive / cached-cold: {naive[0] / cold[0]:.1f}x; largest difference between the two paths' "
          f"validation probabilities: {(naive[2] - cold[2]).abs().max().item():.2e}")


if __name__ == "__main__":
    main()
