"""Benchmark: milliseconds and page faults per training step, with and without the pipeline's process-wide
settings, to show where a plain loop's time goes that the pipeline's does not.

    python benchmarks/step_time.py                                # deeper, mlp, cnn, multitask
    python benchmarks/step_time.py --models logistic deeper --steps 50

For each model of params.yaml it times --steps training steps (after 3 untimed ones) on one random uint8 batch of
the model's batch size and input size: uint8 -> float in [-1, 1] -> forward -> BCE -> zero_grad -> backward ->
optimizer step, with the model's optimizer and lr, in three settings, each in a fresh process (glibc's settings
cannot be undone once made):

- plain:      glibc's default allocator settings and PyTorch's default optimizer implementation, as a plain script;
- allocator:  plus `device.keep_freed_memory()` (every block from the heap, freed memory kept for the next step);
- pipeline:   plus the optimizer and memory layout as `training.loop.fit` sets them up (Adam fused, convolutional models
              channels-last).

Minor page faults per step come from getrusage: each is a page the kernel maps and zeroes on first touch. Run at
the repository root inside .venv; it needs no data. Rounds alternate the settings; the table gives the best round.
"""

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import torch  # noqa: E402
from machine import describe  # noqa: E402

from catdog import device  # noqa: E402
from catdog.config import (
    OPTIMIZERS,  # noqa: E402
    load_params,  # noqa: E402
)
from catdog.models.architectures import build_model  # noqa: E402
from catdog.training.loop import make_optimizer, seed_everything  # noqa: E402

SETTINGS = ("plain", "allocator", "pipeline")


def one_round(name: str, setting: str, steps: int) -> dict:
    if setting != "plain":
        device.keep_freed_memory()
    cfg = load_params()["models"][name]
    seed_everything(0)
    model = build_model(cfg, name)
    side, rows = cfg["input_size"], cfg["batch_size"]
    x = torch.randint(0, 256, (rows, 3, side, side), dtype=torch.uint8)
    if setting == "pipeline":  # as fit: the layout first, then the optimizer
        policy = device.DevicePolicy("cpu", model)
        model, x = policy.place(model), x.contiguous(memory_format=policy.memory_format)
        optimizer = make_optimizer(model, cfg, "cpu")
    else:
        optimizer = getattr(torch.optim, OPTIMIZERS[cfg["optimizer"]])(model.parameters(), lr=cfg["lr"])
    y = torch.randint(0, 2, (rows,)).float()

    def step():
        outputs = model(x.float().div_(127.5).sub_(1.0))
        loss = torch.nn.functional.binary_cross_entropy_with_logits(outputs[:, 0], y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(3):
        step()
    faults, start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt, time.perf_counter()
    for _ in range(steps):
        step()
    seconds = time.perf_counter() - start
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
    return {"ms": seconds / steps * 1000, "faults": faults / steps}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["deeper", "mlp", "cnn", "multitask"])
    parser.add_argument("--steps", type=int, default=30, help="timed steps per round")
    parser.add_argument("--repeats", type=int, default=2, help="rounds per setting")
    parser.add_argument("--round", nargs=2, metavar=("MODEL", "SETTING"), help=argparse.SUPPRESS)  # internal
    args = parser.parse_args()
    if args.round:
        return print(json.dumps(one_round(*args.round, args.steps)))
    print(describe())
    print(f"\nbest of {args.repeats} rounds of {args.steps} steps, each round a fresh process\n")
    print("| model | batch | plain: ms/step (faults/step) | + allocator | + optimizer and layout = pipeline "
          "| pipeline speed-up |")
    print("|---|---|---|---|---|---|", flush=True)
    for name in args.models:
        cfg = load_params()["models"][name]
        best = {}
        for round_ in range(args.repeats):
            for setting in SETTINGS if round_ % 2 == 0 else SETTINGS[::-1]:
                done = subprocess.run([sys.executable, __file__, "--round", name, setting, "--steps", str(args.steps)],
                                      stdout=subprocess.PIPE, text=True, check=True)
                result = json.loads(done.stdout.splitlines()[-1])
                if setting not in best or result["ms"] < best[setting]["ms"]:
                    best[setting] = result
        cells = [f"{best[s]['ms']:.1f} ({best[s]['faults']:.0f})" for s in SETTINGS]
        print(f"| {name} | {cfg['batch_size']}×{cfg['input_size']}² | {' | '.join(cells)} "
              f"| {best['plain']['ms'] / best['pipeline']['ms']:.2f}× |", flush=True)


if __name__ == "__main__":
    main()
